"""The CodeGen model family in plain PyTorch: config, model, checkpoints, tokenizer.

Nothing in this package knows about editors; it is usable on its own as a small, exact
CodeGen implementation (parity with Hugging Face's ``CodeGenForCausalLM`` is tested).
"""

from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, KVCache

__all__ = ["CodeGenConfig", "ConfigError", "CodeGenForCausalLM", "KVCache"]
