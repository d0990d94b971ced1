"""Where a model reference points, checked without torch (so the commands can say at once
what is wrong with a path, before the seconds that importing torch costs).

A reference is a local checkpoint directory or a hub id such as
``Salesforce/codegen-350M-mono``; an empty reference means the shipped default model.
"""

from __future__ import annotations

import os
from pathlib import Path

# What every "cannot find the model" message ends with: what a model folder must hold, and
# the way back to a model that always loads.
MODEL_DIR_HINT = (
    "a model directory holds config.json, model.safetensors (or pytorch_model.bin) and "
    "tokenizer.json; leave the model setting empty (no --model) to use the shipped model"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or loaded; the message names the file and problem."""


def is_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references that are not an existing local path."""
    if os.path.exists(os.path.expanduser(ref)):
        return False
    parts = ref.split("/")
    return (
        len(parts) == 2 and all(parts) and not ref.startswith((".", "~", "/")) and "\\" not in ref
    )


def check_local(ref: str) -> None:
    """Raise :class:`CheckpointError` when ``ref`` is a local path that cannot be a model
    folder (missing, a file, no ``config.json``); hub ids and good folders pass."""
    path = Path(os.path.expanduser(ref))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: no config.json in this model directory ({MODEL_DIR_HINT})"
            )
        return
    if path.exists():
        raise CheckpointError(
            f"{path}: expected a model directory, found a file ({MODEL_DIR_HINT})"
        )
    if not is_hub_id(ref):
        raise CheckpointError(f"{path}: model directory not found ({MODEL_DIR_HINT})")
