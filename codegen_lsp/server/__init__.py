"""The LSP face of codegen-lsp: server, handlers, documents, settings, converters."""
