"""What the completion core knows about each language: comment syntax, block openers, stops.

Languages are named by LSP ``languageId`` (``python``, ``typescriptreact``, ...); a file
extension table fills in when a client sends no id (the ``complete`` command).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

# An identifier as the completion core reads one (ASCII, as in most languages' keywords and
# most code): the snippet and definition lookups and the gate's "seen above" features.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Language:
    """How prompts and stop rules treat one language."""

    name: str
    comment: str = "#"  # line comment prefix used for the prompt header
    openers: tuple[str, ...] = ()  # a line ending in one of these opens a block
    closers: tuple[str, ...] = ()  # lines made of these close a block (brace languages)
    stops: tuple[str, ...] = ("\n\n\n",)  # stop sequences for multi-line suggestions

    @property
    def braces(self) -> bool:
        """True for languages whose blocks end with a closing bracket line."""
        return bool(self.closers)


_BRACE_STOPS = ("\n\n\n",)
_CLOSERS = ("}", ")", "]")

PYTHON = Language(
    "python",
    openers=(":",),
    stops=(
        "\n\n\n",
        "\ndef ",
        "\nclass ",
        "\nasync def ",
        "\nif __name__",
        "\nprint(",
        "\n#",
        '\n"""',
        "\n'''",
    ),
)


def _brace(name: str, comment: str = "//", extra: tuple[str, ...] = ()) -> Language:
    return Language(
        name, comment=comment, openers=("{",), closers=_CLOSERS, stops=_BRACE_STOPS + extra
    )


_JS_STOPS = ("\nfunction ", "\nexport ", "\nclass ")

LANGUAGES: dict[str, Language] = {
    "python": PYTHON,
    "javascript": _brace("javascript", extra=_JS_STOPS),
    "javascriptreact": _brace("javascriptreact", extra=_JS_STOPS),
    "typescript": _brace("typescript", extra=_JS_STOPS),
    "typescriptreact": _brace("typescriptreact", extra=_JS_STOPS),
    "go": _brace("go", extra=("\nfunc ", "\ntype ")),
    "rust": _brace("rust", extra=("\nfn ", "\npub fn ", "\nimpl ")),
    "c": _brace("c"),
    "cpp": _brace("cpp"),
    "csharp": _brace("csharp"),
    "java": _brace("java"),
    "kotlin": _brace("kotlin"),
    "scala": _brace("scala"),
    "swift": _brace("swift"),
    "php": _brace("php"),
    "shellscript": Language("shellscript"),
    "ruby": Language("ruby"),
    "lua": Language("lua", comment="--"),
    "sql": Language("sql", comment="--"),
    "markdown": Language("markdown", comment=""),
    "plaintext": Language("plaintext", comment=""),
}

_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascriptreact",
    ".ts": "typescript",
    ".tsx": "typescriptreact",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
    ".php": "php",
    ".sh": "shellscript",
    ".bash": "shellscript",
    ".rb": "ruby",
    ".lua": "lua",
    ".sql": "sql",
    ".md": "markdown",
    ".txt": "plaintext",
}


def language_for(language_id: str | None, path: str = "") -> Language:
    """The language for an LSP ``languageId``, falling back to the file extension."""
    if language_id and language_id in LANGUAGES:
        return LANGUAGES[language_id]
    by_ext = _EXTENSIONS.get(PurePath(path).suffix.lower()) if path else None
    if by_ext is not None:
        return LANGUAGES[by_ext]
    return Language(language_id or "plaintext")


def language_id_for_path(path: str) -> str:
    """The LSP ``languageId`` guessed from a file name (``plaintext`` if unknown)."""
    return _EXTENSIONS.get(PurePath(path).suffix.lower(), "plaintext")
