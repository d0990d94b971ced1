"""The CodeGen model family in plain PyTorch: config, model, checkpoints, tokenizer.

Nothing in this package knows about editors; it is usable on its own as a small, exact
CodeGen implementation (parity with Hugging Face's ``CodeGenForCausalLM`` is tested).
Import the modules themselves (``codegen_lsp.codegen.modeling`` ...): this package imports
nothing, so its torch-free parts (``locate``) load without torch.
"""
