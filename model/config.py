"""A training run as configuration: one dataclass of defaults, a JSON file per run.

``model/configs/NAME.json`` holds the fields a run sets (nanoGPT-style overrides of the
defaults below); ``key=value`` pairs from the command line override the file. Unknown keys are
an error, so a typo cannot silently train with a default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
DATA_KINDS = ("stdlib", "v3")


@dataclass
class TrainConfig:
    """Everything that decides what a run trains (not where it runs: see ``train.py``)."""

    name: str = ""
    note: str = ""
    # "stdlib": the stdlib corpus and BPE (v1, v2); "v3": stdlib + packages, infill tokens
    data: str = "stdlib"
    # "scratch" | "run:NAME" (that run's weights and AdamW moments; the step count restarts)
    # | "git:COMMIT" (the checkpoint shipped at COMMIT, its vocabulary grown to the data's)
    init: str = "scratch"
    # model shape, used when init is "scratch" (vocab: the tokenizer's, padded to 64)
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 8
    rotary_dim: int = 16
    seq: int = 512  # training context, = n_positions
    # optimisation: AdamW (0.9, 0.95), weight decay on matrices, bf16 autocast
    batch: int = 8
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    bf16: bool = True
    seed: int = 0
    # budget: the cosine follows the largest of these fractions (0 = not used); the run
    # ends when it reaches 1
    steps: int = 0
    passes: float = 0.0
    minutes: float = 0.0
    # rows: a share ``fim`` made infill examples (data "v3"); library (non-test) windows
    # drawn ``lib_weight`` times as often per token as test windows (data "stdlib")
    fim: float = 0.0
    lib_weight: float = 1.0
    # quick held-out score every ``eval_every`` seconds, keeping the best weights (0: none,
    # the last weights are the result)
    eval_every: float = 0.0
    eval_windows: int = 100_000
    log_every: int = 10
    save_every: float = 300.0  # seconds between resumable states
    threads: str = "auto"  # CPU: "1", "2" or "auto" (probe 1 vs 2 now and then)

    def __post_init__(self) -> None:
        if self.data not in DATA_KINDS:
            raise ValueError(f"data: {self.data!r} is not one of {DATA_KINDS}")
        if not (self.init == "scratch" or self.init.startswith(("run:", "git:"))):
            raise ValueError(f"init: {self.init!r} is not scratch, run:NAME or git:COMMIT")
        if not (self.steps or self.passes or self.minutes):
            raise ValueError("no budget: set steps, passes or minutes")
        if self.fim and self.data != "v3":
            raise ValueError("fim needs the v3 data (its tokenizer has the infill tokens)")

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _parse(name: str, value: str, kind: type) -> object:
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name}: {value!r} is not a boolean")
        return value.lower() in ("true", "1")
    return kind(value)


def load_config(name: str, overrides: list[str] | None = None) -> TrainConfig:
    """The run ``name`` (``configs/NAME.json``, or a path to a JSON file) with overrides."""
    path = Path(name) if name.endswith(".json") else CONFIGS / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise SystemExit(f"no run config {path} (known: {known})")
    values = json.loads(path.read_text())
    values.setdefault("name", path.stem)
    types = {f.name: type(f.default) for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise SystemExit(f"{path}: unknown keys {unknown}")
    for key, value in values.items():
        if types.get(key) is float and isinstance(value, int):
            values[key] = float(value)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"override {item!r}: expected KEY=VALUE with KEY one of {list(types)}")
        values[key] = _parse(key, value, types[key])
    return TrainConfig(**values)


def config_names() -> list[str]:
    """Every run configuration in ``model/configs``."""
    return sorted(p.stem for p in CONFIGS.glob("*.json"))
