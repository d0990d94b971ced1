"""Where the embedded default model lives.

The package ships a small CodeGen-architecture checkpoint trained on the Python standard
library (see ``model/README.md`` for how it was made and what it is good for) in
``codegen_lsp/default_model/``: ``config.json``, ``model.safetensors`` and ``tokenizer.json``,
in the same layout as the published Salesforce checkpoints.
"""

from __future__ import annotations

from pathlib import Path


def default_model_dir() -> Path:
    """The directory of the shipped default checkpoint."""
    return Path(__file__).resolve().parent.parent / "default_model"
