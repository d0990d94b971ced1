"""Cases and definitions for ``bench context``: held-out packages read with jedi.

A case is a call in a module of a package that the shipped model never saw (it was trained on
CPython's standard library only): the cursor is just after ``name(``, and the expected text is
the rest of the line. Jedi decides which calls are cross-file (``name`` is defined in another
module of the same package) and which are not (defined in the same file, a builtin or the
standard library). Definitions are what jedi-language-server answers for
``textDocument/definition``: ``jedi.Script.goto(follow_imports=True)`` on the text as typed so
far, read from the definition's line on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from codegen_lsp.completion.definitions import (
    LOOKBACK_LINES,
    STALE_S,
    Head,
    NameUse,
    definition_head,
)
from codegen_lsp.completion.languages import PYTHON

PACKAGES = ("packaging", "click", "markdown_it", "cattrs")  # held out: not in the stdlib
TEXT_LINES = 120  # lines of a definition's file sent from its line on (as the plugins do)
_CALL = re.compile(r"(?<!\w)([A-Za-z_][A-Za-z0-9_]*)\(")
_SKIP = re.compile(r"^\s*(def |class |import |from |@|#|\"\"\"|'''|$)")


@dataclass(frozen=True)
class Case:
    """A cursor after ``name(`` in ``path`` (line, column), and the rest of its line."""

    package: str
    path: Path
    root: Path  # the folder the package is in (paths are shown relative to it)
    line: int
    column: int
    name: str
    defined_in: str  # the relative path of the module that defines ``name`` ("" for none)
    def_line: int  # its line there (0-based; -1 when not cross-file)
    expected: str
    cross: bool


def package_files(package: str) -> tuple[Path, list[Path]]:
    """The package's folder's parent and its modules (tests left out)."""
    module: Any = import_module(package)
    folder = Path(module.__file__).parent
    files = sorted(p for p in folder.rglob("*.py") if "test" not in p.name)
    return folder.parent, files


def _goto(jedi: Any, text: str, path: Path, line: int, column: int) -> list[Any]:
    try:
        return list(jedi.Script(text, path=str(path)).goto(line + 1, column, follow_imports=True))
    except Exception:  # noqa: BLE001 - jedi fails on some code; no definition then
        return []


def find_cases(package: str, per_file: int, limit: int) -> list[Case]:
    """Up to ``limit`` cross-file and ``limit`` other calls of ``package`` (at most
    ``per_file`` of each per module), in file order."""
    import jedi

    root, files = package_files(package)
    known = {str(f) for f in files}
    cases: dict[bool, list[Case]] = {True: [], False: []}
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        taken = {True: 0, False: 0}
        for i, line in enumerate(lines):
            if i < 10 or _SKIP.match(line) or len(line) > 100:
                continue
            match = _CALL.search(line)
            rest = line[match.end() :] if match else ""
            if match is None or len(rest.strip()) < 2 or "#" in rest:
                continue
            found = _goto(jedi, text, path, i, match.start(1))
            if not found or found[0].module_path is None or found[0].line is None:
                continue
            where = str(found[0].module_path)
            cross = where in known and where != str(path)
            if taken[cross] >= per_file or len(cases[cross]) >= limit:
                continue
            taken[cross] += 1
            defined = str(Path(where).relative_to(root)) if cross else ""
            cases[cross].append(
                Case(package, path, root, i, match.end(), match.group(1), defined,
                     found[0].line - 1 if cross else -1, rest, cross)
            )  # fmt: skip
        if all(len(c) >= limit for c in cases.values()):
            break
    return cases[True] + cases[False]


class JediResolver:
    """Plays the editor's Python language server: resolves the names the service asks for."""

    def __init__(self) -> None:
        import jedi

        self.jedi = jedi
        self.pending: list[tuple[str, list[NameUse]]] = []
        self.ms: list[float] = []  # time per resolve round (the client's, not the keystroke's)
        self.workspace_only = True  # the server's "workspace" mode: the package's own files

    def ask(self, key: str, names: list[NameUse]) -> None:
        """The service's resolve hook: remember what to answer."""
        self.pending.append((key, list(names)))

    def answer(self, case: Case, text: str, store: Any) -> None:
        """Answer the pending names of ``case``'s document (its text now is ``text``):
        ``store(key, name, head)`` as the server does with the client's answer."""
        started = time.perf_counter()
        for key, names in self.pending:
            for use in names:
                found = _goto(self.jedi, text, case.path, use.line, use.column)
                head: Head | None = None
                target = found[0] if found else None
                if target is not None and target.module_path is not None and target.line:
                    line = target.line - 1
                    same = Path(target.module_path) == case.path
                    in_window = same and use.line - LOOKBACK_LINES <= line <= use.line
                    path = Path(target.module_path)
                    if self.workspace_only and not path.is_relative_to(case.root / case.package):
                        store(key, use.name, None, STALE_S)  # as the server leaves it out
                        continue
                    head = self._head(use.name, path, line, case, in_window)
                store(key, use.name, head)
        self.pending.clear()
        self.ms.append((time.perf_counter() - started) * 1000)

    def _head(self, name: str, path: Path, line: int, case: Case, in_window: bool) -> Head | None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError:
            return None
        try:
            shown = str(path.relative_to(case.root))
        except ValueError:
            shown = path.name
        text = "".join(lines[line : line + TEXT_LINES])
        return definition_head(name, shown, text, PYTHON, in_window)
