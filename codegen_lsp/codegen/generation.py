"""Token generation for CodeGen: greedy and seeded sampling over the static KV cache.

A small, dependency-free reference loop: prefill the prompt once, then one token per step.
The editor-facing engine (``codegen_lsp.engine``) adds KV reuse across requests, candidates,
token healing and cancellation on top of the same sampling functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from codegen_lsp.codegen.modeling import CodeGenForCausalLM


@dataclass
class SamplingParams:
    """How the next token is chosen: ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def mask_vocab(logits: Tensor, vocab_limit: int) -> Tensor:
    """Forbid ids the tokenizer cannot decode (the model's vocab is padded past it)."""
    if vocab_limit < logits.shape[-1]:
        logits = logits.clone()
        logits[..., vocab_limit:] = float("-inf")
    return logits


def logits_to_probs(logits: Tensor, params: SamplingParams) -> Tensor:
    """Temperature, top-k and top-p applied to ``[B, V]`` logits; returns probabilities."""
    logits = logits / max(params.temperature, 1e-5)
    if params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """Next token ids ``[B]`` from ``[B, V]`` float logits."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits.float(), params)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: CodeGenForCausalLM,
    prompt: Sequence[int],
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    vocab_limit: int | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    should_stop: Callable[[list[int]], bool] | None = None,
) -> list[int]:
    """Generate up to ``max_new_tokens`` ids after ``prompt`` (batch 1); returns new ids only."""
    params = params or SamplingParams()
    if not prompt:
        raise ValueError("prompt must contain at least one token")
    n_ctx = model.config.n_positions
    budget = min(max_new_tokens, n_ctx - len(prompt))
    if budget <= 0:
        return []
    limit = vocab_limit or model.config.vocab_size
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = model.device
    cache = model.new_cache(batch=1, max_len=len(prompt) + budget)
    tokens = torch.tensor([list(prompt)], device=device)  # [1, T]
    positions = torch.arange(len(prompt), device=device)
    hidden = model.transformer(tokens, positions, cache)[:, -1]  # [1, E]
    out: list[int] = []
    for step in range(budget):
        logits = mask_vocab(model.logits(hidden), limit)
        next_id = int(sample(logits.cpu(), params, generator)[0])
        out.append(next_id)
        if next_id == eos_id or (should_stop is not None and should_stop(out)):
            break
        if step + 1 == budget:
            break
        pos = torch.tensor([len(prompt) + step], device=device)
        hidden = model.transformer(torch.tensor([[next_id]], device=device), pos, cache)[:, -1]
    return out


@dataclass
class Sampled:
    """One sampled continuation: new ids and the sum of their log-probabilities."""

    ids: list[int]
    logprob: float

    @property
    def mean_logprob(self) -> float:
        """Average log-probability per generated token (0 for an empty continuation)."""
        return self.logprob / len(self.ids) if self.ids else 0.0


@torch.inference_mode()
def generate_candidates(
    model: CodeGenForCausalLM,
    prompt: Sequence[int],
    n: int,
    max_new_tokens: int,
    params: SamplingParams,
    *,
    vocab_limit: int | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    greedy_first: bool = True,
) -> list[Sampled]:
    """``n`` continuations of ``prompt`` decoded together in one batch.

    With ``greedy_first`` the first row is the greedy continuation and the others are sampled
    with ``params``; each row stops at ``eos_id`` (included) or after ``max_new_tokens``.
    Log-probabilities are those of the model's own distribution (before temperature/top-p),
    so candidates can be ranked by how likely the model finds them.
    """
    if not prompt:
        raise ValueError("prompt must contain at least one token")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    budget = min(max_new_tokens, model.config.n_positions - len(prompt))
    if budget <= 0:
        return [Sampled([], 0.0) for _ in range(n)]
    limit = vocab_limit or model.config.vocab_size
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = model.device
    cache = model.new_cache(batch=n, max_len=len(prompt) + budget)
    tokens = torch.tensor([list(prompt)] * n, device=device)  # [n, T]
    hidden = model.transformer(tokens, torch.arange(len(prompt), device=device), cache)[:, -1]
    outs: list[list[int]] = [[] for _ in range(n)]
    logprobs = [0.0] * n
    done = [False] * n
    for step in range(budget):
        logits = mask_vocab(model.logits(hidden), limit).float().cpu()  # [n, V]
        chosen = sample(logits, params, generator)
        if greedy_first:
            chosen[0] = logits[0].argmax()
        token_lp = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
        for row in range(n):
            if done[row]:
                continue
            outs[row].append(int(chosen[row]))
            logprobs[row] += float(token_lp[row])
            done[row] = int(chosen[row]) == eos_id
        if all(done) or step + 1 == budget:
            break
        pos = torch.tensor([len(prompt) + step], device=device)
        hidden = model.transformer(chosen[:, None].to(device), pos, cache)[:, -1]
    return [Sampled(ids, lp) for ids, lp in zip(outs, logprobs, strict=True)]
