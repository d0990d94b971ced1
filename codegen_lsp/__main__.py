"""``python -m codegen_lsp`` runs the ``codegen-lsp`` command."""

import sys

from codegen_lsp.cli import main

sys.exit(main())
