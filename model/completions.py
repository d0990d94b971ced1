"""The evaluation's completion suites: held-out function prompts, and lines through the server.

- **prompts**: for the first suitable top-level function of each held-out file (at least two
  statements in the body), the prompt is its header and docstring (or header alone), at the
  start of a file (after ``<|endoftext|>``, as ``codegen-lsp generate`` gives it). Two
  decodings of up to ``max_new`` tokens: greedy, and the best of ``n`` ranked candidates (what
  ``codegen-lsp generate`` prints). Each is cut at the first blank line or at the first line
  indented no deeper than the ``def``, or, when the token limit ends it first, after its last
  complete line. ``ast.parse`` of prompt + completion says whether it is valid Python.
- **lines**: through the server's code path (``SuggestionService`` on the worker, the prompt
  window, stop rules and filters of a keystroke, ``multiline: never``): for each sampled line
  the document is the file up to that line's indentation, the cursor after the indentation;
  "line": nothing follows, "infill": the rest of the file follows (the line itself emptied), so
  a model with CodeGen2's infill tokens gets the suffix (``fim: auto``). The suggestion's first
  line is compared with the real one: exact match (trailing whitespace ignored) and edit
  similarity (1 - Levenshtein / the longer length). Lines: per file, lines of 8-100 characters
  that are not comments, not blank and not among the file's first 5, ranked by sha256(path,
  line number), ``per_file`` of them from each of the first ``files`` files.

Nothing generated is executed.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import threading

import torch
from tokenizers import Tokenizer

from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.commands.generate import SAMPLE_TEMPERATURE, parses, rank_key
from codegen_lsp.engine.api import GenerateRequest, SamplingParams
from codegen_lsp.engine.local import CodeGenEngine
from model.corpus import EOS_ID


def function_prompts(texts: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """``(file, prompt)``: header (+ docstring) of the first suitable function per file."""
    out = []
    for rel, text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines(keepends=True)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if len(node.body) < 2:
                continue
            first = node.body[0]
            has_doc = (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            )
            last_line = first.end_lineno if has_doc else first.lineno - 1
            assert last_line is not None
            out.append((rel, "".join(lines[node.lineno - 1 : last_line])))
            break
        if len(out) == limit:
            break
    return out


def cut(completion: str, hit_limit: bool) -> str:
    """End a completion at a blank line or a dedent to the ``def``'s level (column 0)."""
    text = completion.split("\n\n")[0] if "\n\n" in completion else completion
    lines = text.split("\n")
    kept = [lines[0]]
    ended = "\n\n" in completion
    for line in lines[1:]:
        if line.strip() and not line[0].isspace():
            ended = True
            break
        kept.append(line)
    text = "\n".join(kept)
    if hit_limit and not ended and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


@torch.no_grad()
def prompts_suite(
    model: CodeGenForCausalLM,
    model_dir: str,
    texts: list[tuple[str, str]],
    limit: int = 12,
    max_new: int = 48,
    n: int = 8,
) -> list[dict]:
    """Greedy and best-of-``n`` continuations of the held-out function prompts."""
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    engine = CodeGenEngine(model, CodeGenTokenizer.from_dir(model_dir), prefix_reuse=False)
    rows = []
    for rel, prompt in function_prompts(texts, limit):
        ids = [EOS_ID, *tokenizer.encode(prompt).ids]
        request = GenerateRequest("eval", ids, max_new_tokens=max_new, heal=False)
        greedy = engine.generate(request, threading.Event()).candidates[0]
        completion = cut(greedy.text, hit_limit=greedy.finish_reason == "length")
        sampling = SamplingParams(SAMPLE_TEMPERATURE, 0.95, seed=0)
        request = GenerateRequest(
            "eval", ids, max_new_tokens=max_new, n=n, sampling=sampling, greedy_first=True,
            heal=False,
        )  # fmt: skip
        cands = engine.generate(request, threading.Event()).candidates
        cuts = [cut(c.text, hit_limit=c.finish_reason == "length") for c in cands]
        best = max(range(n), key=lambda i: rank_key(prompt, cuts[i], cands[i].mean_logprob))
        rows.append(
            {
                "file": rel,
                "prompt": prompt,
                "completion": completion,
                "parses": parses(prompt + completion),
                "ranked": cuts[best],
                "ranked_parses": parses(prompt + cuts[best]),
            }
        )
    return rows


def prompts_table(rows: list[dict]) -> str:
    """The model card's markdown table of :func:`prompts_suite`'s rows."""

    def show(text: str) -> str:
        return "`" + text.replace("\n", "⏎").replace("|", "\\|").replace("`", "'") + "`"

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    out = [
        "| file | prompt (first line; +N more lines) | greedy | parses | best of 8 | parses |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines = row["prompt"].rstrip("\n").split("\n")
        head = show(lines[0]) + (f" +{len(lines) - 1}" if len(lines) > 1 else "")
        out.append(
            f"| {row['file']} | {head} | {show(row['completion'])} | {yes(row['parses'])} "
            f"| {show(row['ranked'])} | {yes(row['ranked_parses'])} |"
        )
    return "\n".join(out)


def sample_lines(
    texts: list[tuple[str, str]], files: int, per_file: int
) -> list[tuple[str, str, int]]:
    """(path, text, line number) of the evaluation lines (see the module docstring)."""
    out = []
    for path, text in texts[:files]:
        lines = text.split("\n")
        good = [
            i
            for i, line in enumerate(lines)
            if i >= 5 and 8 <= len(line.strip()) <= 100 and not line.strip().startswith("#")
        ]
        good.sort(key=lambda i: hashlib.sha256(f"{path}:{i}".encode()).digest())
        out.extend((path, text, i) for i in sorted(good[:per_file]))
    return out


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / the longer length (1.0 for two empty strings)."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def lines_suite(model_dir: str, samples: list[tuple[str, str, int]], infill: bool) -> list[dict]:
    """One suggestion per sample through the server's suggestion service."""
    from codegen_lsp.completion.context import Cursor
    from codegen_lsp.completion.languages import language_for
    from codegen_lsp.completion.service import SuggestionService
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.worker import Worker
    from codegen_lsp.server.documents import split_lines
    from codegen_lsp.server.settings import parse_settings

    settings, problems, _ = parse_settings(
        {
            "model": model_dir,
            "multiline": "never",
            "maxNewTokens": 48,
            "fim": "auto",
            "filter": "off",
        }  # the model's lines, whatever the suggestion gate would show
    )
    if problems:
        raise SystemExit(f"settings: {problems}")
    worker = Worker(load_engine)
    rows = []
    try:
        engine = worker.load(settings.engine_spec(), lambda *_: None).result()
        service = SuggestionService(worker, lambda message: None)
        service.ready = lambda: ""
        service.configure(settings.completion_options(engine.info))
        language = language_for("python", "x.py")
        for n, (path, text, line) in enumerate(samples):
            lines = text.split("\n")
            target = lines[line]
            indent = target[: len(target) - len(target.lstrip())]
            after = lines[line + 1 :] if infill else []
            document = "\n".join([*lines[:line], indent, *after])
            cursor = Cursor.at(split_lines(document), line, len(indent), language, path)
            service.reset()
            out = asyncio.run(service.suggest(f"doc{n}", lambda c=cursor: c))
            got = (out.texts[0] if out.texts else "").split("\n")[0].rstrip()
            want = target.strip()
            rows.append(
                {"path": path, "line": line, "want": want, "got": got, "exact": got == want,
                 "similarity": edit_similarity(got, want)}
            )  # fmt: skip
    finally:
        worker.close()
    return rows


def summary(rows: list[dict]) -> dict[str, float]:
    """Exact-match share and mean edit similarity."""
    n = max(1, len(rows))
    return {
        "lines": len(rows),
        "exact": sum(r["exact"] for r in rows) / n,
        "similarity": sum(r["similarity"] for r in rows) / n,
    }
