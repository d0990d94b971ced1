"""Editor text -> prompt -> suggestion text.

Pure pieces (``context``, ``stopping``, ``postprocess``, ``typeahead``, ``functions``) and
the :class:`~codegen_lsp.completion.core.Completer` that strings them together. Nothing here
knows about LSP; the server and the ``complete`` command both use this package.
"""
