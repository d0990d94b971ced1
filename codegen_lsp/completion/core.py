"""The completion core: a cursor in, a generation request out; a result in, suggestions out.

:class:`Completer` strings the pure pieces together and keeps the little state that makes
keystrokes cheap: the prompt window start per document (so consecutive requests share a
token prefix), per-line token counts, and recent suggestions for type-ahead. The server
and the ``complete`` command both go through it; neither builds prompts itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from codegen_lsp.completion.context import (
    Cursor,
    Encode,
    Prompt,
    build_prompt,
    clamp_generation,
    count_line,
    header_text,
    token_budget,
)
from codegen_lsp.completion.functions import Stub
from codegen_lsp.completion.gate import Gate, Place, Verdict
from codegen_lsp.completion.neighbors import Neighbor, NeighborContext
from codegen_lsp.completion.options import CompletionOptions as CompletionOptions  # re-exported
from codegen_lsp.completion.postprocess import Around, postprocess
from codegen_lsp.completion.stopping import MULTI, StopRule, choose_mode, make_stop_rule
from codegen_lsp.completion.typeahead import ANCHOR_CHARS, TypeAhead
from codegen_lsp.engine.api import Engine, GenerateRequest, GenerateResult

AFTER_CHARS = 2000  # text after the cursor compared against suggestions
FIM_SUFFIX_TOKENS = 128  # most suffix tokens in an infill prompt (all re-prefilled per keystroke)
FUNCTION_MIN_TOKENS = 128  # generation budget for a whole function body, at least
HEAL_CHARS = 256  # whitespace before the cursor encoded to decide on token healing, at most


def needs_healing(before: str, encode: Encode) -> bool:
    """Whether the prompt's last token may be a fragment that token healing should back off.

    Indentation is the exception: when the tokenizer keeps a run of spaces as its own token
    before a word (CodeGen's whitespace tokens), the cursor after indentation ends on a
    whole token, and healing would only let the model widen the indentation.
    """
    if not before or before.strip():
        return True
    before = before[-HEAL_CHARS:]  # only the end matters: a long indentation is not encoded
    ids = encode(before)
    return encode(before + "x")[: len(ids)] != ids


def infill_suffix(
    cursor: Cursor, engine: EngineInfo, options: CompletionOptions, budget: int
) -> list[int] | None:
    """The suffix ids of a fill-in-the-middle prompt, or None for a plain one: only for a model
    with CodeGen2's infill tokens, ``fim`` not off, and (``auto``) text after the cursor. The
    suffix takes at most a quarter of the budget (FIM_SUFFIX_TOKENS at most), cut at the end:
    the text right after the cursor matters most."""
    if engine.fim is None or options.fim == "off":
        return None
    after = cursor.text_after(AFTER_CHARS)
    if options.fim == "auto" and not after.strip():
        return None
    room = min(FIM_SUFFIX_TOKENS, budget // 4)
    return engine.encode(after)[:room]


def infill_prompt(
    prefix: list[int], suffix: list[int], fim: tuple[int, int, int], engine: EngineInfo
) -> list[int]:
    """CodeGen2's infill layout: prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>; the
    model writes the masked span and ends it with <eom>. The prefix comes first, so typing
    (which changes the prefix's end) re-prefills the suffix too: the suffix is bounded."""
    mask, sep, _eom = fim
    return [*prefix, mask, *suffix, *engine.encode("<|endoftext|>"), sep, mask]


class CompletionSkipped(Exception):
    """No request can be made for this cursor; the message says why (it is logged)."""


@dataclass(frozen=True)
class EngineInfo:
    """What prompt building needs from the loaded engine."""

    n_ctx: int
    encode: Encode
    bos_id: int | None = None  # prepended when the prompt starts where the file starts
    fim: tuple[int, int, int] | None = None  # (<mask_1>, <sep>, <eom>): the model infills

    @classmethod
    def of(cls, engine: Engine) -> EngineInfo:
        """What a loaded engine offers."""
        return cls(engine.n_ctx, engine.encode, engine.bos_id, engine.info.fim)


@dataclass
class Prepared:
    """A request ready for the worker, with what is needed to read its result."""

    key: str
    cursor: Cursor
    prompt: Prompt
    mode: str
    stop: StopRule
    request: GenerateRequest
    around: Around  # text after the cursor, captured before the document changes again
    anchor: str  # text before the cursor, for type-ahead
    remember: bool = True
    gate: Gate | None = None  # decides which suggestions are shown (None: all)
    place: Place | None = None  # the cursor as the gate sees it (taken once, before generation)
    verdicts: list[Verdict] | None = None  # the gate's, on the first answer read

    @property
    def hidden(self) -> int:
        """Suggestions of the first answer that the gate did not show."""
        return sum(not v.shown for v in self.verdicts or ())


class Completer:
    """Builds requests and reads results; remembers windows and suggestions per key."""

    def __init__(self, line_cache: int = 50_000) -> None:
        self.typeahead = TypeAhead()
        self._windows: dict[str, int] = {}
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._line_cache = line_cache
        self._encode: Encode | None = None
        self.neighbor_context = NeighborContext()

    # --- type-ahead ----------------------------------------------------------------------
    def lookup(self, key: str, cursor: Cursor) -> list[str]:
        """Suggestions served from type-ahead (empty if the user typed something else)."""
        before = cursor.text_before(ANCHOR_CHARS + 4096)
        return self.typeahead.lookup(key, before, cursor.after)

    # --- requests ------------------------------------------------------------------------
    def prepare(
        self,
        key: str,
        cursor: Cursor,
        engine: EngineInfo,
        options: CompletionOptions,
        neighbors: Sequence[Neighbor] = (),
        block: str | None = None,
        place: Place | None = None,
    ) -> Prepared:
        """The generation request for a completion at ``cursor`` (``neighbors``: the other
        open documents of its language, for the snippet block; or ``block``, that block made
        already by :meth:`context_block`; ``place``: the gate's view of the cursor, when the
        caller took it already)."""
        mode = choose_mode(cursor.before, cursor.after, options.multiline, cursor.language)
        stop = make_stop_rule(
            mode,
            cursor.before,
            cursor.indent,
            cursor.language,
            options.stop_sequences,
            next_line=cursor.next_nonblank_line(),
        )
        if block is None:
            block = self.context_block(key, cursor, engine, options, neighbors)
        prepared = self._prepared(
            key, cursor, engine, options, mode, stop, options.max_new_tokens, block
        )
        prepared.place = place or Place.of(cursor)
        return prepared

    def prepare_body(
        self,
        key: str,
        stub: Stub,
        cursor_template: Cursor,
        engine: EngineInfo,
        options: CompletionOptions,
    ) -> Prepared:
        """The generation request for the body of ``stub`` (hover, code action, command)."""
        lines = cursor_template.lines
        line = stub.start[0]
        if stub.prefix_line is not None:
            lines = [*lines[:line], stub.prefix_line]
            line += 1
        cursor = Cursor(
            lines, line, stub.body_indent, "", cursor_template.language, cursor_template.path
        )
        stop = make_stop_rule(
            MULTI,
            stub.body_indent,
            stub.body_indent,
            cursor.language,
            options.stop_sequences,
            min_indent=len(stub.body_indent.expandtabs(4)),
        )
        budget = max(options.max_new_tokens, FUNCTION_MIN_TOKENS)
        prepared = self._prepared(key, cursor, engine, options, MULTI, stop, budget)
        prepared.remember = False
        prepared.gate = None
        prepared.around = Around()
        return prepared

    def _prepared(
        self,
        key: str,
        cursor: Cursor,
        engine: EngineInfo,
        options: CompletionOptions,
        mode: str,
        stop: StopRule,
        max_new_tokens: int,
        block: str = "",
    ) -> Prepared:
        max_new_tokens = clamp_generation(max_new_tokens, engine.n_ctx)  # half n_ctx at most
        budget = token_budget(engine.n_ctx, max_new_tokens, options.context_tokens)
        if budget <= 0:
            raise CompletionSkipped(f"no room for a prompt (n_ctx={engine.n_ctx})")
        header = block + (header_text(cursor.language, cursor.path) if options.header else "")
        suffix = infill_suffix(cursor, engine, options, budget)
        if suffix is not None:
            budget -= len(suffix) + 4  # the suffix and the infill tokens come after the prefix
        prompt = build_prompt(
            cursor,
            engine.encode,
            budget,
            self._windows.get(key),
            header,
            count=self._counter(engine.encode, budget),
            bos=engine.bos_id,
        )
        stop_ids: tuple[int, ...] = ()
        if suffix is not None and engine.fim is not None and prompt.ids:
            prompt.ids = infill_prompt(prompt.ids, suffix, engine.fim, engine)
            stop_ids = (engine.fim[2],)
        if not prompt.ids:
            raise CompletionSkipped("empty prompt (nothing before the cursor)")
        self._windows[key] = prompt.start_line
        request = GenerateRequest(
            key=key,
            prompt=prompt.ids,
            max_new_tokens=max_new_tokens,
            n=options.candidates,
            sampling=options.sampling,
            heal=not stop_ids and needs_healing(cursor.before, engine.encode),
            stop_ids=stop_ids,
            stop=stop,
            stop_strings=stop.strings(),
            time_limit_s=options.time_limit_s,
            speculation=options.speculation,
        )
        around = Around(cursor.after, cursor.text_after(AFTER_CHARS))
        anchor = cursor.text_before(ANCHOR_CHARS)
        return Prepared(
            key, cursor, prompt, mode, stop, request, around, anchor, gate=Gate(options)
        )

    def context_block(
        self,
        key: str,
        cursor: Cursor,
        engine: EngineInfo,
        options: CompletionOptions,
        neighbors: Sequence[Neighbor],
    ) -> str:
        """The block of other files' snippets for a request at ``cursor`` ("" when off or
        none). Bounded work (see ``neighbors``); the service runs it off the event loop."""
        neighbors = [n for n in (self._own(key, n) for n in neighbors) if n is not None]
        if not neighbors or options.context_files <= 0:
            return ""
        max_new_tokens = clamp_generation(options.max_new_tokens, engine.n_ctx)
        budget = token_budget(engine.n_ctx, max_new_tokens, options.context_tokens)
        tokens = min(options.context_file_tokens, budget // 4)
        count = lambda text: len(engine.encode(text))  # noqa: E731
        return self.neighbor_context.block(
            key, cursor, neighbors, options.context_files, tokens, count
        )

    def _own(self, key: str, doc: Neighbor) -> Neighbor | None:
        """``doc`` as a snippet candidate; the document itself only with its edits above its
        prompt window, and then with a version that changes only when those do (typing in
        the window leaves the choice as it was, without new work)."""
        if not doc.own:
            return doc
        start = self._windows.get(key) or 0
        above = tuple(line for line in doc.edited if line < start)
        if not above:
            return None
        return replace(doc, edited=above, until=start, version=hash((start, above)) | 1)

    def _counter(self, encode: Encode, budget: int) -> Callable[[str], int]:
        if encode is not self._encode:
            self._counts.clear()
            self._encode = encode

        def count(line: str) -> int:
            cached = self._counts.get(line)
            if cached is None:
                cached = count_line(line, encode, budget)
                self._counts[line] = cached
                if len(self._counts) > self._line_cache:
                    self._counts.popitem(last=False)
            return cached

        return count

    # --- results -------------------------------------------------------------------------
    def finish(self, prepared: Prepared, result: GenerateResult) -> list[str]:
        """Suggestions from a result (already cut by its stop rule): filters run, the gate
        judges the first answer (an early one), the rest of it is kept when that was shown;
        the ones shown are remembered."""
        if result.cancelled:
            return []
        texts = [c.text for c in result.candidates]
        if prepared.gate is None or prepared.verdicts is not None:
            shown = prepared.verdicts is None or any(v.shown for v in prepared.verdicts)
            suggestions = postprocess(texts, prepared.around) if shown else []
        else:
            place = prepared.place or Place.of(prepared.cursor)
            judged = prepared.gate.judge(result.candidates, prepared.around, place, prepared.mode)
            suggestions, prepared.verdicts = judged
        if prepared.remember:
            after = prepared.cursor.after
            self.typeahead.remember(prepared.key, prepared.anchor, after, suggestions)
        return suggestions

    def forget(self, key: str) -> None:
        """Drop the state kept for a document (it was closed)."""
        self._windows.pop(key, None)
        self.typeahead.forget(key)
        self.neighbor_context.forget(key)

    def reset(self) -> None:
        """Drop all state (the model or the settings changed)."""
        self._windows.clear()
        self._counts.clear()
        self._encode = None
        self.typeahead.clear()
        self.neighbor_context = NeighborContext()
