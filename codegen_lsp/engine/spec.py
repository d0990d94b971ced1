"""What model to load and how to run it: :class:`EngineSpec`.

Its fields that users set are the declaration of the server's model settings
(``codegen.model``, ``codegen.device``, ...): each carries its JSON key, default, range and
documentation (:func:`~codegen_lsp.engine.setting_spec.declare`), so the default an engine
gets when built in code is the one users get. The other fields are for commands and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen_lsp.engine.setting_spec import ON_OFF, declare


@dataclass
class EngineSpec:
    """What model to load and how to run it; changing any field reloads the model."""

    model: str | None = declare(  # None or "": the shipped default model
        "model",
        "string",
        "",
        "Checkpoint directory or Hugging Face hub id (e.g. `Salesforce/codegen-350M-mono`); "
        "empty: the model shipped with codegen-lsp. Changing it reloads the model.",
    )
    device: str = declare(
        "device",
        "string",
        "auto",
        "Where the model runs: `auto` (CUDA when available, else the CPU), `cpu`, `cuda` or "
        "`cuda:N`.",
        pattern=r"auto|cpu|cuda(:\d+)?",
        pattern_doc="auto, cpu, cuda or cuda:N",
    )
    dtype: str = declare(
        "dtype",
        "enum",
        "auto",
        "Dtype of the weights and activations.",
        enum=("auto", "float32", "bfloat16", "float16"),
    )
    # The engine also takes int4 (weight-only, opt-in: the bench); the setting does not.
    quantize: str = declare(
        "quantize",
        "enum",
        "auto",
        "Weight-only quantization: `auto` (int8 on CPUs with bf16), `none` or `int8`.",
        enum=("auto", "none", "int8"),
        enum_docs=(
            "int8 on CPUs with bf16 support, else none.",
            "Weights as loaded.",
            "Weight-only int8.",
        ),
    )
    threads: int = declare(
        "threads",
        "int",
        0,
        "CPU threads for the model (the native decode kernels share a call among at most 4 of "
        "them, only while that is faster); 0 keeps PyTorch's default.",
        minimum=0,
        maximum=256,
    )
    allow_download: bool = declare(
        "allowDownload",
        "bool",
        False,
        "Allow fetching a hub id (`codegen.model`) that is not in the local Hugging Face cache.",
    )
    cache_memory_mb: int = declare(
        "cacheMemoryMB",
        "int",
        512,
        "Memory budget of the KV prefix cache, MiB.",
        minimum=0,
        maximum=1 << 20,
    )
    prefix_reuse: bool = declare(
        "prefixReuse",
        "bool",
        True,
        "Reuse the KV cache across keystrokes (also `on`/`off`).",
        aliases=ON_OFF,
    )
    memory_limit_mb: int = declare(
        "memoryLimitMB",
        "int",
        0,
        "Most memory for the weights plus the KV cache budget, MiB; 0: no limit. Checked "
        "before loading.",
        minimum=0,
        maximum=1 << 24,
    )
    draft_model: str = declare(
        "draftModel",
        "string",
        "",
        "A smaller CodeGen with the same tokenizer (a directory or hub id) whose greedy tokens "
        "are the drafts of speculative decoding, e.g. `Salesforce/codegen-350M-mono` for the "
        "2B/6B/16B-mono checkpoints; empty: none (lookup drafts). Local models only.",
    )
    qkv_shards: int = declare(
        "qkvShards",
        "int",
        0,
        "Model-parallel shards the checkpoint's fused `qkv_proj` was trained over; 0 reads it "
        "from the checkpoint (`qkv_shards` in its config.json, else `mp_num` in a shipped "
        "modeling_codegen.py, read as text, else 4). CodeGen1: 4; codegen2-1B and -3_7B: 8.",
        minimum=0,
        maximum=64,
    )
    cold_start_ms: int = declare(
        "coldStartMs",
        "int",
        800,
        "When prefilling a prompt's uncached part would take longer than this (at the "
        "model's measured prefill rate), the suggestion reads only the prompt's last tokens "
        "that fit, and the whole prompt is prefilled in the background; 0: always the whole "
        "prompt.",
        minimum=0,
        maximum=600_000,
    )
    compile: bool = False
    kv_dtype: str = declare(
        "kvCache",
        "enum",
        "auto",
        "Dtype of the KV cache: `auto` (the activations' dtype when that holds keys and "
        "values exactly and attention reads it fast, else float32), `float32`, `bfloat16` or "
        "`int8` (lossy: see the bench's KV table).",
        enum=("auto", "float32", "bfloat16", "int8"),
        enum_docs=(
            "bf16 for a bf16 model on the native kernels and on CUDA; float32 otherwise.",
            "Four bytes a value: the ATen attention's fastest on a CPU.",
            "Two bytes a value: half the cache memory and attention reads.",
            "One byte a value and a scale per head and position: a quarter of float32's, "
            "rounded (the native kernel reads it; elsewhere it is widened per call).",
        ),
    )
    # int8 weights: keep a bf16 copy beside them for prefill (~10% faster prefill, 2 more
    # bytes per weight; the same results); off: one copy, dequantized per call (docs/memory.md)
    dense_prefill: bool = False
    # begin a prompt at a file's start with <|endoftext|>; None: as the checkpoint says
    file_start_bos: bool | None = None
    # remote mode (docs/remote.md): an OpenAI-compatible server (vLLM) runs the model
    endpoint: str = declare(
        "endpoint",
        "string",
        "",
        "Base URL of an OpenAI-compatible server (vLLM), e.g. `http://gpu-box:8000/v1`; "
        "empty: run the model in the server's own process. See docs/remote.md.",
        pattern=r"|https?://\S+",
        pattern_doc="empty or an http:// or https:// URL",
    )
    remote_model: str = declare(
        "remoteModel", "string", "", "The served model's name; empty: the first it lists."
    )
    api_key_env: str = declare(
        "apiKeyEnv",
        "string",
        "",
        "Name of the environment variable holding the endpoint's API key (the key itself "
        "never goes in settings).",
        pattern=r"|[A-Za-z_][A-Za-z0-9_]*",
        pattern_doc="empty or an environment variable name",
    )
    request_timeout_ms: int = declare(
        "requestTimeoutMs",
        "int",
        30_000,
        "Most milliseconds to wait for the endpoint's next bytes.",
        minimum=100,
        maximum=600_000,
    )
    ca_bundle: str = declare(
        "caBundle",
        "string",
        "",
        "A CA certificate file for the endpoint's TLS; empty: the system's.",
    )
