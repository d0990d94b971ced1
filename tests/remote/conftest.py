"""Fixtures for the remote-engine tests: the real vLLM server of ``vllm_support``."""

from vllm_support import own_vllm, remote_checkpoints, vllm, vllm_python  # noqa: F401
