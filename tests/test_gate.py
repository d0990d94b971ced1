"""The suggestion gate: its decision on fixed features from the shipped data, the cursor
places it reads, the ``filter`` and ``minLength`` settings, the per-token log-probabilities
the engine gives it, and the before-generation skip counted in ``codegen/status`` through a
real server."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path

import pytest
from raw_lsp import AUTOMATIC, INVOKED, RawServer
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
# The shipped data's scores of the two fixed suggestions below (change with gate.json).
PINNED_SURE = 0.93
PINNED_UNSURE = 0.017


def cursor(text: str) -> Cursor:
    """The cursor at the end of ``text`` (a Python file typed up to there)."""
    lines = text.split("\n")
    doc = [f"{x}\n" for x in lines[:-1]] + [lines[-1]]
    return Cursor.at(doc, len(doc) - 1, len(lines[-1]), PYTHON)


# Two fixed suggestions: a sure one at a line start (every token near-certain, far ahead of
# the next likeliest, a peaked distribution), and an unsure one mid-word (first token 1 in 20
# and barely ahead, one token 1 in 1000, flat distributions). Per token: log-probability,
# margin, entropy; then where each token's text starts.
SURE = Candidate(
    "return self._value",
    [1, 2, 3, 4],
    "stop",
    -0.18,
    [-0.05, -0.02, -0.1, -0.01],
    [6.0, 7.5, 4.0, 8.0],
    [0.2, 0.1, 0.4, 0.05],
    [0, 6, 11, 13],
)
UNSURE = Candidate(
    "ing_thing(x, y)",
    [1, 2, 3, 4, 5],
    "stop",
    -14.1,
    [-3.0, -1.5, -6.9, -2.0, -0.7],
    [0.05, 0.3, 0.0, 0.1, 1.0],
    [3.5, 2.0, 5.1, 2.4, 1.2],
    [0, 3, 9, 10, 11],
)
SURE_AT = "def value(self):\n    "
UNSURE_AT = "def f(x, y):\n    total = comput"


def place(text: str) -> Place:
    """The gate's view of the cursor at the end of ``text``."""
    return Place.of(cursor(text))


def shipped() -> GateModel:
    model = load_gate()
    assert model is not None, f"{GATE_FILE} is shipped with the package"
    return model


def test_the_shipped_gate_decides_fixed_features() -> None:
    """The weights are data: these scores and decisions change when gate.json does."""
    model = shipped()
    scores = {}
    for name, (candidate, before) in {
        "sure": (SURE, SURE_AT),
        "unsure": (UNSURE, UNSURE_AT),
    }.items():
        values = features(candidate.text, candidate, place(before), SINGLE)
        scores[name] = round(model.score(values), 3)
    assert scores == {"sure": PINNED_SURE, "unsure": PINNED_UNSURE}
    assert scores["sure"] >= model.threshold > scores["unsure"], scores
    raw = json.loads(GATE_FILE.read_text())
    assert set(raw["features"]) <= set(FEATURES) and set(raw["skip_rules"]) <= set(SKIP_RULES)


def test_a_figure_the_engine_cannot_tell_counts_as_its_mean() -> None:
    """A remote engine gives no margins or entropies (NaN): the gate reads their means."""
    model = shipped()
    values = features(SURE.text, SURE, place(SURE_AT), SINGLE)
    unknown = {"first_margin", "head_margin", "mean_margin", "min_margin", "word_margin"}
    unknown |= {"first_entropy", "mean_entropy", "word_entropy"}
    blind = dataclasses.replace(SURE, token_margins=[math.nan] * 4, token_entropies=[math.nan] * 4)
    nan_values = features(SURE.text, blind, place(SURE_AT), SINGLE)
    assert {FEATURES[i] for i, v in enumerate(nan_values) if math.isnan(v)} == unknown
    means = dict(zip(model.names, model.mean, strict=True))
    filled = [
        means.get(n, v) if math.isnan(v) else v for n, v in zip(FEATURES, nan_values, strict=True)
    ]
    assert model.score(nan_values) == pytest.approx(model.score(filled))
    assert model.score(nan_values) != pytest.approx(model.score(values))


def test_judge_shows_above_the_threshold_and_filter_off_shows_all() -> None:
    model = shipped()
    for candidate, before, expected in ((SURE, SURE_AT, True), (UNSURE, UNSURE_AT, False)):
        gate = Gate(CompletionOptions(), model)
        shown, verdicts = gate.judge([candidate], Around(), place(before), SINGLE)
        assert bool(shown) is expected and verdicts[0].shown is expected
        off = Gate(CompletionOptions(filter="off"), model)
        assert off.judge([candidate], Around(), place(before), SINGLE)[0] == [candidate.text]
    # a threshold of its own, and the minimum length
    assert Gate(CompletionOptions(filter=0.0), model).judge(
        [UNSURE], Around(), place(UNSURE_AT), SINGLE
    )[0] == [UNSURE.text]
    long_only = Gate(CompletionOptions(filter="off", min_length=100), model)
    assert long_only.judge([SURE], Around(), place(SURE_AT), SINGLE)[0] == []


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
    at = place(text)
    assert {k: getattr(at, k) for k in expected} == expected


def test_skip_rules_only_with_the_filter_on() -> None:
    model = shipped()
    examples = {
        "comment mid-word": "x = 1  # a comm",
        "string mid-word": 's = "hello wor',
        "in a comment": "# ",
        "in a string": 's = "',
        "after a closing bracket at the line end": "f(x)",
    }
    inside = Place.of(Cursor.at(["x = compute(1)"], 0, 7, PYTHON))  # x = com|pute(1)
    for rule in model.skip_rules:
        at = inside if rule == "inside a word" else place(examples[rule])
        assert Gate(CompletionOptions(), model).skip_reason(at), rule
        assert Gate(CompletionOptions(filter="off"), model).skip_reason(at) == "", rule
    assert Gate(CompletionOptions(), model).skip_reason(place("def f(x):\n    ")) == ""


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
        {"features": [*data["features"][:-1], "not_a_feature"]},
        {"skip_rules": ["nowhere"]},
        {"format": 99},
        {"weights": data["weights"][:-1]},
    ):
        with pytest.raises(ValueError):
            GateModel.from_json({**data, **change})
    broken = tmp_path / "gate.json"
    broken.write_text('{"format": 1}')  # unreadable data: no filtering, never a failed request
    assert load_gate(broken) is None


def test_first_word_figures_come_from_the_tokens_inside_it() -> None:
    """ "ing_thing(x, y)": the first word is ``ing_thing``, its tokens ``ing`` and ``_thing``."""
    values = dict(
        zip(FEATURES, features(UNSURE.text, UNSURE, place(UNSURE_AT), SINGLE), strict=True)
    )
    assert values["word_lp"] == pytest.approx(-4.5)
    assert values["word_margin"] == pytest.approx(0.05)
    assert values["word_entropy"] == pytest.approx(3.5)
    assert values["word_tokens"] == pytest.approx(math.log1p(2))
    assert values["first_margin"] == pytest.approx(0.05) and values["min_margin"] == 0.0
    sure = dict(zip(FEATURES, features(SURE.text, SURE, place(SURE_AT), SINGLE), strict=True))
    assert sure["word_lp"] == pytest.approx(-0.05) and sure["word_tokens"] == pytest.approx(
        math.log1p(1)
    )


def test_gate_data_may_read_a_subset_of_the_features() -> None:
    """A gate that reads only the first word's log-probability: its score moves with that
    feature alone, whatever the others say."""
    data = {
        "format": 1,
        "features": ["word_lp"],
        "mean": [-1.0],
        "scale": [1.0],
        "weights": [2.0],
        "bias": 0.0,
        "threshold": 0.5,
        "skip_rules": [],
    }
    model = GateModel.from_json(data)
    values = features(SURE.text, SURE, place(SURE_AT), SINGLE)
    word_lp = values[FEATURES.index("word_lp")]
    assert model.score(values) == pytest.approx(1 / (1 + math.exp(-2.0 * (word_lp + 1.0))))
    other = [v + 1.0 if n != "word_lp" else v for n, v in zip(FEATURES, values, strict=True)]
    assert model.score(other) == pytest.approx(model.score(values))


def test_the_engine_gives_each_kept_tokens_figures(steady_checkpoint: Path) -> None:
    """Greedy rows: one log-probability, margin, entropy and text start per token; the tokens
    after a stop cut are left out; the log-probabilities of an uncut row sum to the
    candidate's; a greedy token is the top choice (margin >= 0) of a distribution whose
    entropy is at least its own surprise's share."""
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
    assert len(c.token_margins) == len(c.token_entropies) == 6
    assert all(m >= 0 for m in c.token_margins) and all(e >= 0 for e in c.token_entropies)
    assert c.token_starts == [0, 2, 4, 6, 8, 10]
    stop = make_stop_rule(SINGLE, "value =", "", PYTHON, ("0 0",))  # cut after " "
    request = GenerateRequest("k", prompt, max_new_tokens=6, heal=False, stop=stop)
    cut = engine.generate(request, threading.Event()).candidates[0]
    assert cut.text == " " and len(cut.token_logprobs) == 1 < len(cut.token_ids)
    assert len(cut.token_margins) == len(cut.token_entropies) == len(cut.token_starts) == 1


def test_the_before_generation_skip_is_counted_in_status(
    tmp_path: Path, steady_checkpoint: Path
) -> None:
    """Inside a word (a rule of the shipped data): an automatic request runs no model,
    counted; asked for explicitly (the user invoked it) the same position runs the model and
    shows what it writes; so does ``filter: off``."""
    assert "inside a word" in shipped().skip_rules
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint, filter="auto")})
        uri = "file:///work/gate.py"
        server.open(uri, "x = compute(1)")
        answer = server.inline(uri, 0, 7, trigger=AUTOMATIC)
        assert answer["result"]["items"] == []
        status = server.status()
        assert status["gateSkipped"] == 1 and status["shown"] == 0
        items = server.inline(uri, 0, 7, trigger=INVOKED)["result"]["items"]
        status = server.status()
        assert items and status["gateSkipped"] == 1 and status["shown"] == 1
        assert status["gateHidden"] == 0
        server.configure({"codegen": cpu_settings(steady_checkpoint, filter="off")})
        items = server.inline(uri, 0, 7, trigger=AUTOMATIC)["result"]["items"]
        status = server.status()
        assert items and status["gateSkipped"] == 1 and status["shown"] == 2
    finally:
        server.close()
