"""The default model's v3 corpus and rows (model/): licence rule, manifest, near duplicates,
infill rows. (``model`` is the repository's recipe package: run pytest as ``python -m pytest``
from the repository root, as scripts/test does.)"""

from __future__ import annotations

from email.message import Message

import numpy as np
import pytest

from model import packages
from model.corpus import read_manifest


def metadata(**fields: str | list[str]) -> Message:
    meta = Message()
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            meta[key.replace("_", "-")] = item
    return meta


@pytest.mark.parametrize(
    ("fields", "permissive"),
    [
        ({"License_Expression": "MIT"}, True),
        (
            {
                "License_Expression": "Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND "
                "BSD-3-Clause"
            },
            True,
        ),
        ({"License_Expression": "MPL-2.0 AND MIT"}, False),
        ({"License_Expression": "MPL-2.0"}, False),
        ({"License": "BSD"}, True),
        ({"License": "GPL-3.0-or-later"}, False),
        ({"Classifier": ["License :: OSI Approved :: BSD License"]}, True),
        (
            {"Classifier": ["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"]},
            False,
        ),
        ({}, False),  # nothing declared: left out
    ],
)
def test_licence_rule(fields: dict, permissive: bool) -> None:
    _, ok = packages.licence_of(metadata(**fields))
    assert ok is permissive


def test_near_duplicates_are_caught_and_different_files_are_not() -> None:
    base = "\n".join(f"value_{i} = compute({i}, scale={i * 3})" for i in range(200))
    edited = base.replace("value_17 = compute(17", "value_17 = recompute(17")
    other = "\n".join(f"def handler_{i}(event):\n    return event.kind == {i}" for i in range(120))
    near = packages.NearDuplicates()
    assert not near.seen(base)
    assert near.seen(edited)
    assert not near.seen(other)


def test_manifest_splits_are_disjoint_and_keep_the_stdlib_split() -> None:
    rows = packages.read_manifest_v3()
    splits = {row.split for row in rows}
    known = {"train", "heldout", "heldout-package", "duplicate", "near-duplicate", "not-utf8"}
    assert splits <= known | {s for s in splits if s.startswith("filtered:")}
    train = {row.sha256 for row in rows if row.split == "train"}
    held = {row.sha256 for row in rows if row.split.startswith("heldout")}
    assert not train & held, "a held-out file's bytes are also trained on"
    assert all(
        row.package not in packages.HELD_OUT_PACKAGES for row in rows if row.split == "train"
    )
    assert all(
        row.split == "filtered:licence" for row in rows if row.package in ("hypothesis", "tqdm")
    ), "MPL-licensed packages must stay out"
    v2 = {f.rel: f for f in read_manifest()}
    stdlib = [row for row in rows if row.package == packages.STDLIB]
    assert len(stdlib) == len(v2)
    for row in stdlib:
        old = v2[row.rel]
        assert row.sha256 == old.sha256
        assert row.split == old.split or (old.split == "train" and row.split == "near-duplicate")
    assert sum(row.size for row in rows if row.split == "train") > 4 * sum(
        f.size for f in v2.values() if f.split == "train"
    ), "the v3 corpus is several times v2's"


def test_infill_rows_have_codegen2_layout() -> None:
    from codegen_lsp.codegen.default import default_model_dir
    from model.data import Batches, fim_tokenizer

    seq = 512
    tokenizer = fim_tokenizer(default_model_dir())
    mask, sep, eom = (tokenizer.token_to_id(t) for t in ("<mask_1>", "<sep>", "<eom>"))
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400))
    ids = tokenizer.encode(text).ids
    stream = np.array(([0, *ids] * 3)[: 3 * len(ids)], dtype=np.uint16)
    batches = Batches(stream, tokenizer, seq, seed=0, fim=1.0)
    for _ in range(50):
        row = batches.infill().tolist()
        assert len(row) == seq + 1
        assert row.count(sep) == 1 and row.count(mask) == 2 and row.count(eom) == 1
        first, cut, end = row.index(mask), row.index(sep), row.index(eom)
        assert row[cut - 1] == 0 and row[cut + 1] == mask
        middle = row[cut + 2 : end]
        assert middle and 0 not in middle, "the middle stays inside one file"
        assert 0 not in row[first + 1 : cut - 1], "the suffix stays inside one file"
        # cut in text, as the server cuts: prefix + middle + suffix is the file's own text,
        # the middle is the rest of whole lines (no line end of its own)
        prefix = row[:first]
        if prefix[:1] == [0]:
            prefix = prefix[1:]
        assert 0 not in prefix
        parts = [tokenizer.decode(p) for p in (prefix, middle, row[first + 1 : cut - 1])]
        assert "".join(parts) in text
        assert not parts[1].endswith("\n") and parts[1].strip()
