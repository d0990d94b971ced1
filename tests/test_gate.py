"""The suggestion gate: its decision on fixed features from the shipped data, the cursor
places it reads, the ``filter`` and ``minLength`` settings, the per-token log-probabilities
the engine gives it, and the before-generation skip counted in ``codegen/status`` through a
real server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import cpu_settings

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.gate import (
    FEATURES,
    GATE_FILE,
    SKIP_RULES,
    Gate,
    GateModel,
    Place,
    features,
    load_gate,
)
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.completion.postprocess import Around
from codegen_lsp.completion.stopping import SINGLE
from codegen_lsp.engine.api import Candidate, EngineSpec, GenerateRequest
from codegen_lsp.server.settings import parse_settings

PYTHON = language_for("python", "x.py")


def cursor(text: str) -> Cursor:
    """The cursor at the end of ``text`` (a Python file typed up to there)."""
    lines = text.split("\n")
    doc = [f"{x}\n" for x in lines[:-1]] + [lines[-1]]
    return Cursor.at(doc, len(doc) - 1, len(lines[-1]), PYTHON)


# Two fixed suggestions: a sure one at a line start (every token near-certain), and an
# unsure one mid-word (first token 1 in 20, one token 1 in 1000).
SURE = ("return self._value", [-0.05, -0.02, -0.1, -0.01], "def value(self):\n    ")
UNSURE = ("ing_thing(x, y)", [-3.0, -1.5, -6.9, -2.0, -0.7], "def f(x, y):\n    total = comput")


def shipped() -> GateModel:
    model = load_gate()
    assert model is not None, f"{GATE_FILE} is shipped with the package"
    return model


def test_the_shipped_gate_decides_fixed_features() -> None:
    """The weights are data: these scores and decisions change when gate.json does."""
    model = shipped()
    scores = {}
    for name, (text, lps, before) in {"sure": SURE, "unsure": UNSURE}.items():
        values = features(text, lps, "stop", Place.of(cursor(before)), SINGLE)
        scores[name] = round(model.score(values), 3)
    assert scores == {"sure": 0.81, "unsure": 0.003}
    assert scores["sure"] >= model.threshold > scores["unsure"], scores
    raw = json.loads(GATE_FILE.read_text())
    assert raw["features"] == list(FEATURES) and set(raw["skip_rules"]) <= set(SKIP_RULES)


def test_judge_shows_above_the_threshold_and_filter_off_shows_all() -> None:
    model = shipped()
    sure = Candidate(SURE[0], [1, 2, 3, 4], "stop", 0.0, SURE[1])
    unsure = Candidate(UNSURE[0], [1, 2, 3, 4, 5], "stop", 0.0, UNSURE[1])
    for candidate, before, expected in ((sure, SURE[2], True), (unsure, UNSURE[2], False)):
        gate = Gate(CompletionOptions(), model)
        shown, verdicts = gate.judge([candidate], Around(), cursor(before), SINGLE)
        assert bool(shown) is expected and verdicts[0].shown is expected
        off = Gate(CompletionOptions(filter="off"), model)
        assert off.judge([candidate], Around(), cursor(before), SINGLE)[0] == [candidate.text]
    # a threshold of its own, and the minimum length
    assert Gate(CompletionOptions(filter=0.0), model).judge(
        [unsure], Around(), cursor(UNSURE[2]), SINGLE
    )[0] == [UNSURE[0]]
    long_only = Gate(CompletionOptions(filter="off", min_length=100), model)
    assert long_only.judge([sure], Around(), cursor(SURE[2]), SINGLE)[0] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = 1  # a comm", {"in_comment": True, "previous": "word", "line_end": True}),
        ('s = "ab # c', {"in_comment": False, "in_string": True}),
        ("s = 'it\\'s", {"in_string": True}),
        ("    ", {"line_start": True, "previous": "space", "indent": 4}),
        ("f(x)", {"previous": "close", "in_string": False, "in_comment": False}),
        ('def f():\n    """Doc\n    more', {"in_string": True}),
        ('def f():\n    """Doc."""\n    x', {"in_string": False, "previous": "word"}),
        ("obj.", {"previous": "dot"}),
    ],
)
def test_place(text: str, expected: dict[str, object]) -> None:
    place = Place.of(cursor(text))
    assert {k: getattr(place, k) for k in expected} == expected


def test_skip_rules_only_with_the_filter_on() -> None:
    model = shipped()
    examples = {
        "comment mid-word": "x = 1  # a comm",
        "string mid-word": 's = "hello wor',
        "in a comment": "# ",
        "in a string": 's = "',
        "after a closing bracket at the line end": "f(x)",
    }
    inside = Cursor.at(["x = compute(1)"], 0, 7, PYTHON)  # x = com|pute(1)
    for rule in model.skip_rules:
        at = inside if rule == "inside a word" else cursor(examples[rule])
        assert Gate(CompletionOptions(), model).skip_reason(at), rule
        assert Gate(CompletionOptions(filter="off"), model).skip_reason(at) == "", rule
    assert Gate(CompletionOptions(), model).skip_reason(cursor("def f(x):\n    ")) == ""


def test_filter_and_min_length_settings() -> None:
    for value, expected in (("auto", "auto"), ("off", "off"), (0.25, 0.25), (1, 1.0)):
        settings, problems, _ = parse_settings({"filter": value, "minLength": 3})
        assert problems == [] and settings.completion.filter == expected
        assert settings.completion.min_length == 3
    for bad in ("0.3", "on", 1.5, -0.1, True, None):
        settings, problems, _ = parse_settings({"filter": bad})
        assert problems and "codegen.filter" in problems[0], bad
        assert settings.completion.filter == "auto"


def test_gate_data_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    data = json.loads(GATE_FILE.read_text())
    GateModel.from_json(data)
    for change in (
        {"features": data["features"][:-1]},
        {"skip_rules": ["nowhere"]},
        {"format": 99},
        {"weights": data["weights"][:-1]},
    ):
        with pytest.raises(ValueError):
            GateModel.from_json({**data, **change})
    broken = tmp_path / "gate.json"
    broken.write_text('{"format": 1}')  # unreadable data: no filtering, never a failed request
    assert load_gate(broken) is None


def test_the_engine_gives_each_kept_tokens_log_probability(steady_checkpoint: Path) -> None:
    """Greedy rows: one log-probability per token; the tokens after a stop cut are left out;
    their sum over an uncut row is the candidate's log-probability."""
    from codegen_lsp.completion.stopping import make_stop_rule
    from codegen_lsp.engine.loader import load_engine

    engine = load_engine(EngineSpec(model=str(steady_checkpoint), device="cpu"), lambda *_: None)
    prompt = engine.encode("value =")
    request = GenerateRequest("k", prompt, max_new_tokens=6, heal=False)
    whole = engine.generate(request, threading.Event())
    c = whole.candidates[0]
    assert len(c.token_logprobs) == len(c.token_ids) == 6
    assert sum(c.token_logprobs) == pytest.approx(c.logprob)
    assert all(lp <= 0 for lp in c.token_logprobs)
    assert c.text == " 0" * 6
    stop = make_stop_rule(SINGLE, "value =", "", PYTHON, ("0 0",))  # cut after " "
    request = GenerateRequest("k", prompt, max_new_tokens=6, heal=False, stop=stop)
    cut = engine.generate(request, threading.Event()).candidates[0]
    assert cut.text == " " and len(cut.token_logprobs) == 1 < len(cut.token_ids)


def test_the_before_generation_skip_is_counted_in_status(
    tmp_path: Path, steady_checkpoint: Path
) -> None:
    """Inside a word (a rule of the shipped data): no model run, counted; with
    ``filter: off`` the same position runs the model."""
    assert "inside a word" in shipped().skip_rules
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint, filter="auto")})
        uri = "file:///work/gate.py"
        server.open(uri, "x = compute(1)")
        answer = server.inline(uri, 0, 7)
        assert answer["result"]["items"] == []
        status = server.status()
        assert status["gateSkipped"] == 1 and status["shown"] == 0
        server.configure({"codegen": cpu_settings(steady_checkpoint, filter="off")})
        items = server.inline(uri, 0, 7)["result"]["items"]
        status = server.status()
        assert items and status["gateSkipped"] == 1 and status["shown"] == 1
    finally:
        server.close()
