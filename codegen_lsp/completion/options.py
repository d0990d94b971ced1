"""Per-request knobs: :class:`CompletionOptions`.

Its fields are the declaration of the server's generation and prompt settings
(``codegen.maxNewTokens``, ``codegen.multiline``, ...): each carries its JSON key, default,
range and documentation (:func:`~codegen_lsp.engine.setting_spec.declare`), so
``CompletionOptions()`` is what users get by default. What the engine needs in another form
(``sampling``, ``time_limit_s``, ``header``) is derived in properties.
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen_lsp.engine.api import SamplingParams
from codegen_lsp.engine.setting_spec import declare


@dataclass(frozen=True)
class CompletionOptions:
    """Per-request knobs, taken from the server settings or the command line."""

    max_new_tokens: int = declare(
        "maxNewTokens",
        "int",
        64,
        "Most tokens generated per suggestion (function bodies get at least 128).",
        minimum=1,
        maximum=2048,
    )
    temperature: float = declare(
        "temperature",
        "float",
        0.0,
        "Sampling temperature; 0 is greedy.",
        minimum=0.0,
        maximum=5.0,
    )
    top_p: float = declare(
        "topP",
        "float",
        0.95,
        "Nucleus sampling mass, in (0, 1].",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
    )
    top_k: int = declare(
        "topK",
        "int",
        0,
        "Sample from the k most likely tokens; 0 is off.",
        minimum=0,
        maximum=100_000,
    )
    candidates: int = declare(
        "candidates",
        "int",
        1,
        "Suggestions per request (1 to 10); the editors cycle through them.",
        minimum=1,
        maximum=10,
    )
    stop_sequences: tuple[str, ...] = declare(
        "stopSequences", "strings", (), "Extra strings that end a suggestion."
    )
    time_limit_ms: int = declare(
        "timeLimitMs",
        "int",
        10_000,
        "Most milliseconds of model time per request (the text so far is kept); 0: no limit.",
        minimum=0,
        maximum=3_600_000,
    )
    speculation: str = declare(
        "speculation",
        "enum",
        "auto",
        "Speculative decoding of greedy suggestions, exact (the text never changes): `auto` (a "
        "draft model when `codegen.draftModel` is set, else lookup), `lookup` (drafts from the "
        "prompt's own text), `draft` (the draft model's tokens), `off`; needs int8/int4 weights.",
        enum=("auto", "off", "lookup", "draft"),
    )
    context_tokens: int = declare(
        "contextTokens",
        "int",
        1024,
        "Most prompt tokens; 0: all that the model's context allows.",
        minimum=0,
        maximum=1 << 20,
    )
    multiline: str = declare(
        "multiline",
        "enum",
        "auto",
        "Single- or multi-line suggestions: `auto`, `always` or `never`.",
        enum=("auto", "always", "never"),
        enum_docs=(
            "Multi-line where a block starts (after `:` or `{`), else one line.",
            "Always allow multi-line suggestions.",
            "One line at a time.",
        ),
    )
    answer_early: bool = declare(
        "answerEarly",
        "bool",
        True,
        "Show a multi-line suggestion's first line as soon as it is complete and decode the "
        "rest in the background (accepting or typing on serves it without a new model call).",
    )
    context_files: int = declare(
        "contextFiles",
        "int",
        2,
        "Snippets from other open files of the same language (the ones most like the code "
        "above the cursor) put before the file's own text, as comments; 0: off.",
        minimum=0,
        maximum=10,
    )
    context_file_tokens: int = declare(
        "contextFileTokens",
        "int",
        256,
        "Most tokens for those snippets (at most a quarter of the prompt).",
        minimum=0,
        maximum=8192,
    )
    definitions: str = declare(
        "definitions",
        "enum",
        "workspace",
        "Put the definitions of the names near the cursor (signature, docstring, a class's "
        "fields and methods), as the editor's other language servers resolve them, before "
        "the file's own text as comments (clients that support `codegen/resolveDefinitions`): "
        "`workspace` (those in the workspace's files), `all` (libraries too), or `off`.",
        enum=("workspace", "all", "off"),
        enum_docs=(
            "Definitions in the workspace's own files (code no model has seen).",
            "Also definitions in libraries (the standard library, installed packages).",
            "No definitions.",
        ),
    )
    definition_tokens: int = declare(
        "definitionTokens",
        "int",
        192,
        "Most tokens for those definitions (at most a fifth of the prompt).",
        minimum=0,
        maximum=8192,
    )
    recent_edits: bool = declare(
        "recentEdits",
        "bool",
        True,
        "Rank the places edited lately in other open files first among the snippets "
        "(`contextFiles`).",
    )
    fim: str = declare(
        "fim",
        "enum",
        "auto",
        "Fill-in-the-middle for CodeGen2 checkpoints (their `<mask_1>`/`<sep>`/`<eom>` "
        "tokens): `auto` when text follows the cursor, `on`, or `off`. CodeGen1 checkpoints "
        "never infill.",
        enum=("auto", "on", "off"),
    )
    header_mode: str = declare(
        "header",
        "enum",
        "auto",
        "Start prompts with a language/path comment: `auto` does so for multi-language "
        "models, `on` or `off`.",
        enum=("auto", "on", "off"),
    )
    filter: str | float = declare(
        "filter",
        "word_or_number",
        "auto",
        "Show a suggestion only when it is likely to be taken: `auto` (the gate shipped with "
        "the default model scores each suggestion from its token probabilities and the cursor "
        "place, and skips the model run where suggestions are almost never taken), `off` "
        "(show all, always ask), or a threshold from 0 to 1 of its own (the score is an "
        "estimated chance that the first word is taken).",
        enum=("auto", "off"),
        minimum=0.0,
        maximum=1.0,
    )
    min_length: int = declare(
        "minLength",
        "int",
        0,
        "Shortest suggestion shown, in characters (leading and trailing whitespace not "
        "counted); 0: no minimum.",
        minimum=0,
        maximum=1000,
    )
    multi_language: bool = False  # the loaded model's training mix; decides header "auto"

    def __post_init__(self) -> None:
        self.sampling  # noqa: B018 - SamplingParams checks the sampling fields now, not later

    @property
    def sampling(self) -> SamplingParams:
        """How the next token is chosen."""
        return SamplingParams(self.temperature, self.top_p, self.top_k)

    @property
    def time_limit_s(self) -> float | None:
        """The model time limit per request, seconds; None: none."""
        return self.time_limit_ms / 1000 if self.time_limit_ms else None

    @property
    def header(self) -> bool:
        """Whether to prepend ``# language: ...`` / ``# path: ...`` comment lines."""
        return self.header_mode == "on" or (self.header_mode == "auto" and self.multi_language)
