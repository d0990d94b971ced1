"""Functions whose body is missing, found by text alone (no parser).

Python: a ``def`` whose body is empty, only a docstring, ``pass`` or ``...`` (comments
allowed), or a one-line ``def f(x): pass``. Brace languages: a function-like header ending
in ``{`` followed by nothing but blank or comment lines and its ``}``, or ``{}`` on the
header line. A :class:`Stub` says which text a generated body replaces and how to build
the prompt that asks for it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from codegen_lsp.completion.languages import Language
from codegen_lsp.completion.stopping import indent_width

_DEF = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]+\w+")
_ONE_LINE_STUB = re.compile(r":([ \t]*(?:pass|\.\.\.)[ \t]*(?:#.*)?)$")
_DOCSTRING = re.compile(r"^[rRuUbB]{0,2}(\"\"\"|'''|\"|')")
_CONTROL = {"if", "for", "while", "switch", "catch", "else", "do", "try", "return", "match"}
_SCAN_LINES = 40
_BLANK_LINES = 400  # lines (blank ones included) looked at below a signature for its body


@dataclass(frozen=True)
class Stub:
    """A function without a body and the region a generated body replaces.

    The replacement text is ``lead + body_indent + generated + tail``. The prompt is the
    document up to the region (``prefix_line`` replaces line ``start[0]`` when the region
    starts mid-line) followed by ``body_indent``.
    """

    def_line: int
    last_line: int  # last line of the function as it stands
    indent: str
    body_indent: str
    start: tuple[int, int]  # (line, column in code points)
    end: tuple[int, int]
    head: str  # signature (and docstring) lines, for previews
    lead: str = ""
    tail: str = "\n"
    prefix_line: str | None = None

    def contains(self, line: int) -> bool:
        """True when ``line`` is inside the function."""
        return self.def_line <= line <= self.last_line

    def replacement(self, generated: str) -> str:
        """The text that replaces the region for a generated body."""
        return self.lead + self.body_indent + generated + self.tail

    def preview(self, generated: str) -> str:
        """Signature plus generated body, dedented, for a hover."""
        return textwrap.dedent(self.head + self.body_indent + generated + "\n").rstrip()


def _content(lines: Sequence[str], i: int) -> str:
    return lines[i].rstrip("\r\n")


def _code(text: str) -> str:
    """The code part of a line: strings blanked, a trailing ``#`` comment removed."""
    text = re.sub(r"\"[^\"]*\"|'[^']*'", '""', text)
    return text.split("#", 1)[0]


def _depth_change(code: str) -> int:
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


def _insert_after(lines: Sequence[str], k: int) -> dict[str, object]:
    """Region fields for inserting a body after line ``k``."""
    if k + 1 < len(lines):
        return {"start": (k + 1, 0), "end": (k + 1, 0)}
    end = (k, len(_content(lines, k)))
    return {"start": end, "end": end, "lead": "\n", "tail": "", "prefix_line": lines[k] + "\n"}


def _replace_lines(lines: Sequence[str], first: int, last: int) -> dict[str, object]:
    """Region fields for replacing whole lines ``first..last``."""
    if last + 1 < len(lines):
        return {"start": (first, 0), "end": (last + 1, 0)}
    return {"start": (first, 0), "end": (last, len(_content(lines, last))), "tail": ""}


def _docstring_end(lines: Sequence[str], i: int, stop: int) -> int:
    """Last line of the docstring starting on line ``i`` (``i`` itself if one line)."""
    text = _content(lines, i).strip()
    m = _DOCSTRING.match(text)
    quote = m.group(1) if m else '"'
    if m is None or text.count(quote) >= 2 or len(quote) == 1:
        return i
    for j in range(i + 1, min(stop, i + 200)):
        if quote in _content(lines, j):
            return j
    return i


def _python_header(lines: Sequence[str], d: int) -> tuple[int, bool] | None:
    """(last signature line, one-line stub?) for the ``def`` on line ``d``."""
    depth = 0
    for h in range(d, min(len(lines), d + _SCAN_LINES)):
        code = _code(_content(lines, h)).rstrip()
        depth += _depth_change(code)
        if depth > 0:
            continue
        if code.endswith(":"):
            return h, False
        if _ONE_LINE_STUB.search(_content(lines, h).rstrip()):
            return h, True
        return None
    return None


def find_python_stub(lines: Sequence[str], line: int) -> Stub | None:
    """The body-less Python function around ``line``, if any."""
    for d in range(line, max(-1, line - _SCAN_LINES), -1):
        m = _DEF.match(lines[d])
        if m:
            break
    else:
        return None
    indent = m.group(1)
    header = _python_header(lines, d)
    if header is None:
        return None
    h, one_line = header
    step = "\t" if "\t" in indent else "    "
    if one_line:
        content = _content(lines, h).rstrip()
        col = _ONE_LINE_STUB.search(content).start(1)  # type: ignore[union-attr]
        head = "".join(lines[d:h]) + content[:col] + "\n"
        return Stub(
            d, h, indent, indent + step, (h, col), (h, len(_content(lines, h))), head,
            lead="\n", tail="", prefix_line=content[:col] + "\n",
        )  # fmt: skip
    body: list[int] = []
    i = h + 1
    while i < min(len(lines), h + 1 + _BLANK_LINES):  # blank lines too: the scan is bounded
        content = _content(lines, i)
        if content.strip():
            if indent_width(content) <= indent_width(indent):
                break
            body.append(i)
            if len(body) > _SCAN_LINES:
                return None
        i += 1
    if line > (body[-1] if body else h):
        return None
    head_end = h
    rest = body
    if body and _DOCSTRING.match(_content(lines, body[0]).strip()):
        head_end = _docstring_end(lines, body[0], i)
        rest = [j for j in body if j > head_end]
    stmts = [j for j in rest if not _content(lines, j).strip().startswith("#")]
    if any(_content(lines, j).strip() not in ("pass", "...") for j in stmts):
        return None
    body_indent = (
        _content(lines, body[0])[: -len(_content(lines, body[0]).lstrip())] if body else ""
    )
    body_indent = body_indent or indent + step
    head = "".join(lines[d : head_end + 1])
    if not stmts:
        region = _insert_after(lines, rest[-1] if rest else head_end)
        head = "".join(lines[d : (rest[-1] if rest else head_end) + 1])
    else:
        region = _replace_lines(lines, stmts[0], body[-1])
        head = "".join(lines[d : stmts[0]])
    last = body[-1] if body else h
    return Stub(d, last, indent, body_indent, head=head, **region)  # type: ignore[arg-type]


def _brace_header(content: str) -> bool:
    s = content.strip()
    word = re.match(r"[A-Za-z_]+", s)
    if s.startswith("}") or (word is not None and word.group(0) in _CONTROL):
        return False
    return "(" in s and ")" in s and ";" not in s and s.endswith(("{", "{}"))


def find_brace_stub(lines: Sequence[str], line: int) -> Stub | None:
    """The body-less function (``{`` then ``}``) whose header is on ``line``."""
    if line >= len(lines) or not _brace_header(_content(lines, line)):
        return None
    content = _content(lines, line).rstrip()
    indent = content[: len(content) - len(content.lstrip())]
    step = "\t" if "\t" in indent else "    "
    if content.endswith("{}"):
        col = len(content) - 1
        return Stub(
            line, line, indent, indent + step, (line, col), (line, col), content[:col] + "\n",
            lead="\n", tail="\n" + indent, prefix_line=content[:col] + "\n",
        )  # fmt: skip
    first = line + 1
    for j in range(line + 1, min(len(lines), line + _SCAN_LINES)):
        text = _content(lines, j).strip()
        if not text:
            continue
        if text.startswith(("//", "/*", "*", "#")):
            first = j + 1
            continue
        if text.rstrip(";") == "}" and indent_width(_content(lines, j)) == indent_width(indent):
            head = "".join(lines[line:first])
            region = {"start": (first, 0), "end": (j, 0)}
            return Stub(line, j, indent, indent + step, head=head, **region)  # type: ignore[arg-type]
        return None
    return None


def find_stub(lines: Sequence[str], line: int, language: Language) -> Stub | None:
    """The body-less function at ``line`` (Python or a brace language), if any."""
    if not 0 <= line < len(lines):
        return None
    if language.name == "python":
        return find_python_stub(lines, line)
    if language.braces:
        return find_brace_stub(lines, line)
    return None
