"""codegen-lsp: a language server running CodeGen models locally, in its own process."""

__version__ = "0.1.0"
