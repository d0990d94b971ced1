"""What the editor knows, for the suggestion service: definitions, the prompt view, timing.

:class:`EditorContext` sits beside the suggestion service and keeps its edits there small:

- :meth:`EditorContext.definitions_block` adds the block of definitions (``definitions``)
  after the other files' snippets, and hands the names that have no answer yet to
  :attr:`EditorContext.resolve` (the server sends them to the client; nothing waits);
- :meth:`EditorContext.remember` keeps the parts of the last prompt per document (snippets,
  definitions, header, window, suffix) for ``codegen/lastPrompt`` (:meth:`view`), and the
  time each request spent on context (:meth:`context_ms`).
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from codegen_lsp.completion.context import Cursor, clamp_generation, header_text, token_budget
from codegen_lsp.completion.core import AFTER_CHARS, EngineInfo, Prepared
from codegen_lsp.completion.definitions import DefinitionContext, Head, NameUse, names_near
from codegen_lsp.completion.options import CompletionOptions

DEFINITION_SHARE = 5  # the definitions take at most 1/DEFINITION_SHARE of the prompt budget
TIMINGS = 256  # context times kept (the latest)
VIEWS = 16  # documents whose last prompt is kept


@dataclass
class PromptParts:
    """The last prompt of a document, by part, in prompt order."""

    key: str
    snippets: str
    definitions: str
    header: str
    window: str
    suffix: str
    prompt_tokens: int
    encode: Callable[[str], list[int]]

    def view(self) -> dict[str, object]:
        """``{uri, promptTokens, parts: [{name, text, tokens}]}`` (suffix tokens: those that
        fit in the prompt; its text may go on further)."""
        parts = []
        used = 0
        for name in ("snippets", "definitions", "header", "window"):
            text = getattr(self, name)
            tokens = len(self.encode(text)) if text else 0
            used += tokens
            parts.append({"name": name, "text": text, "tokens": tokens})
        suffix_tokens = max(0, self.prompt_tokens - used - 4) if self.suffix else 0
        parts.append({"name": "suffix", "text": self.suffix, "tokens": suffix_tokens})
        return {"uri": self.key, "promptTokens": self.prompt_tokens, "parts": parts}


class EditorContext:
    """Definitions from the editor, the last prompts and the context timings."""

    def __init__(self) -> None:
        self.definitions = DefinitionContext()
        # called with (document key, names to resolve) when names have no answer yet
        self.resolve: Callable[[str, list[NameUse]], None] = lambda key, names: None
        self._blocks: dict[str, str] = {}  # key -> the definitions block of its last request
        self._views: OrderedDict[str, PromptParts] = OrderedDict()
        self._last: str | None = None
        self._times: deque[float] = deque(maxlen=TIMINGS)
        self.timed = 0  # requests whose context time was recorded
        self.last_context_ms = 0.0

    def forget(self, key: str) -> None:
        """The document was closed."""
        self.definitions.forget(key)
        self._blocks.pop(key, None)
        self._views.pop(key, None)

    def store(self, key: str, name: str, head: Head | None, retry_s: float | None = None) -> None:
        """A definition the client resolved (None: none to show; asked again after
        ``retry_s``, by default soon when it found none)."""
        self.definitions.store(key, name, head, retry_s)

    def definitions_block(
        self, key: str, cursor: Cursor, engine: EngineInfo | None, options: CompletionOptions
    ) -> str:
        """The block of the definitions that are ready for ``cursor`` ("" when off, none are
        ready or no model is loaded); asks for the names without an answer."""
        if options.definitions == "off" or options.definition_tokens <= 0 or engine is None:
            self._blocks.pop(key, None)
            return ""
        names = names_near(cursor)
        missing = [n for n in names if not self.definitions.known(key, n.name)]
        if missing:
            self.resolve(key, missing)
        max_new_tokens = clamp_generation(options.max_new_tokens, engine.n_ctx)
        budget = token_budget(engine.n_ctx, max_new_tokens, options.context_tokens)
        tokens = min(options.definition_tokens, budget // DEFINITION_SHARE)
        count = lambda text: len(engine.encode(text))  # noqa: E731
        block = self.definitions.block(key, names, cursor.language.comment, tokens, count)
        self._blocks[key] = block
        return block

    def remember(
        self,
        prepared: Prepared,
        snippets: str,
        engine: EngineInfo,
        options: CompletionOptions,
        context_ms: float,
    ) -> None:
        """Keep ``prepared``'s prompt by part, and the time its context took."""
        self._times.append(context_ms)
        self.timed += 1
        self.last_context_ms = context_ms
        cursor = prepared.cursor
        definitions = self._blocks.get(prepared.key, "")
        header = header_text(cursor.language, cursor.path) if options.header else ""
        if not prepared.prompt.header:
            snippets = definitions = header = ""  # the block did not fit: build_prompt left it
        suffix = cursor.text_after(AFTER_CHARS) if prepared.request.stop_ids else ""
        parts = PromptParts(
            prepared.key,
            snippets,
            definitions,
            header,
            prepared.prompt.text,
            suffix,
            len(prepared.request.prompt),
            engine.encode,
        )
        self._views.pop(prepared.key, None)
        self._views[prepared.key] = parts
        self._last = prepared.key
        while len(self._views) > VIEWS:
            self._views.popitem(last=False)

    def view(self, key: str | None = None) -> dict[str, object] | None:
        """The last prompt of ``key`` (None: of the latest request), or None."""
        parts = self._views.get(key or self._last or "")
        return parts.view() if parts is not None else None

    def context_ms(self) -> dict[str, float]:
        """Milliseconds requests spent on context (snippets and definitions): p50, max."""
        if not self._times:
            return {"contextMsP50": 0.0, "contextMsMax": 0.0}
        times = list(self._times)
        return {
            "contextMsP50": round(statistics.median(times), 3),
            "contextMsMax": round(max(times), 3),
        }


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` value)."""
    return (time.perf_counter() - since) * 1000
