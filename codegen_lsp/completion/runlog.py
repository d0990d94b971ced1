"""What the suggestion service keeps of finished model runs: speculation counts over all
requests (for ``codegen/status``) and the one log line per run."""

from __future__ import annotations

from codegen_lsp.engine.api import GenerateResult


class DecodingCounts:
    """Drafts verified and kept, decode forward calls and the tokens they produced."""

    def __init__(self) -> None:
        self.counts = {"draftedTokens": 0, "acceptedDrafts": 0, "decodeForwards": 0}
        self.decoded_tokens = 0

    def add(self, result: GenerateResult) -> None:
        """Count one finished run."""
        stats = result.stats
        self.counts["draftedTokens"] += stats.drafted_tokens
        self.counts["acceptedDrafts"] += stats.accepted_tokens
        self.counts["decodeForwards"] += stats.decode_forwards
        if stats.decode_forwards:
            self.decoded_tokens += stats.generated_tokens

    def status(self) -> dict[str, float]:
        """The counts and generated tokens per decode forward call (over all requests)."""
        forwards = self.counts["decodeForwards"]
        per_forward = self.decoded_tokens / forwards if forwards else 0.0
        return {**self.counts, "tokensPerForward": round(per_forward, 3)}


def run_line(label: str, result: GenerateResult, suggestions: int) -> str:
    """The log line of a finished run."""
    s = result.stats
    return (
        f"request {label}: prompt={s.prompt_tokens} reused={s.reused_tokens} "
        f"prefilled={s.prefilled_tokens} generated={s.generated_tokens} "
        f"queue={s.queue_ms:.0f}ms prefill={s.prefill_ms:.0f}ms decode={s.decode_ms:.0f}ms "
        f"total={s.total_ms:.0f}ms drafted={s.drafted_tokens} accepted={s.accepted_tokens} "
        f"forwards={s.decode_forwards} tokens/forward={s.tokens_per_forward:.2f} "
        f"suggestions={suggestions}"
        + (" (cancelled)" if result.cancelled else "")
        + (f" (cold: the prompt's last {s.cold_tail} tokens)" if s.cold_tail else "")
    )
