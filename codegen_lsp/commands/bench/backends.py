"""The systems the benchmark compares, behind one small interface.

Each backend turns a list of prompt ids into ``new_tokens`` greedy continuation ids and says
how long that took and, where it knows, how many prompt tokens it prefilled and reused:

* ``ours``: :class:`~codegen_lsp.engine.local.CodeGenEngine` with prefix reuse on or off
  (:func:`load_local` loads it), or any other :class:`~codegen_lsp.engine.api.Engine`;
* ``transformers``: ``generate`` with a fresh cache every call (full recompute), test/bench
  only, never imported by the package proper;
* ``ctranslate2``: a converted copy of the checkpoint (int8 or float32), full recompute.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from codegen_lsp.engine.api import Engine, EngineSpec, GenerateRequest, ProgressFn
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.local import CodeGenEngine


@dataclass
class Timing:
    """One call: wall time, when each new token appeared, what was prefilled and reused."""

    ms: float
    generated: int
    prefilled: int | None = None
    reused: int | None = None
    token_ms: list[float] = field(default_factory=list)  # since the call started

    @property
    def first_ms(self) -> float:
        """Time to the first new token."""
        return self.token_ms[0] if self.token_ms else self.ms

    @property
    def decode_ms(self) -> float | None:
        """Mean time per token after the first."""
        if len(self.token_ms) < 2:
            return None
        return (self.token_ms[-1] - self.token_ms[0]) / (len(self.token_ms) - 1)


class Backend(Protocol):
    """Something that continues prompts greedily."""

    name: str

    def run(self, ids: list[int], new_tokens: int) -> Timing: ...


def load_local(spec: EngineSpec, progress: ProgressFn | None = None) -> CodeGenEngine:
    """The local engine ``spec`` names (what the bench measures and reaches into)."""
    if spec.endpoint:
        raise ValueError(f"the bench needs a local engine, not the endpoint {spec.endpoint}")
    engine = load_engine(spec, progress)
    if not isinstance(engine, CodeGenEngine):
        raise TypeError(f"expected a local engine, got {type(engine).__name__}")
    return engine


class OursBackend:
    """This project's engine; ``key`` names the document for the prefix cache. Speculative
    decoding is off unless asked for (random weights repeat themselves, which lookup drafts
    would turn into decode figures no real text gets)."""

    def __init__(
        self, engine: Engine, name: str, key: str = "bench.py", speculation: str = "off"
    ) -> None:
        self.engine = engine
        self.name = name
        self.key = key
        self.speculation = speculation

    def run(self, ids: list[int], new_tokens: int, heal: bool = False) -> Timing:
        marks: list[float] = []

        def on_token(_row: int, _token: int) -> None:  # streamed: when each token is chosen
            marks.append(time.perf_counter())

        req = GenerateRequest(
            self.key,
            ids,
            max_new_tokens=new_tokens,
            heal=heal,
            ignore_eos=True,
            on_token=on_token,
            speculation=self.speculation,
        )
        start = time.perf_counter()
        result = self.engine.generate(req, threading.Event())
        ms = (time.perf_counter() - start) * 1000
        stats = result.stats
        token_ms = [(t - start) * 1000 for t in marks]
        return Timing(
            ms, stats.generated_tokens, stats.prefilled_tokens, stats.reused_tokens, token_ms
        )

    def reset(self) -> None:
        """Forget every cached prefix."""
        self.engine.clear_cache()


class TransformersBackend:
    """Hugging Face ``generate`` with a new cache per call (what a naive server does)."""

    def __init__(self, directory: Path, dtype: torch.dtype, name: str) -> None:
        from transformers import AutoModelForCausalLM

        self.name = name
        self.model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype).eval()

    @torch.inference_mode()
    def run(self, ids: list[int], new_tokens: int) -> Timing:
        tokens = torch.tensor([ids])
        marks: list[float] = []

        class Streamer:  # transformers calls put() with the prompt, then once per new token
            def put(self, value: torch.Tensor) -> None:
                marks.append(time.perf_counter())

            def end(self) -> None:
                pass

        start = time.perf_counter()
        out = self.model.generate(
            tokens,
            attention_mask=torch.ones_like(tokens),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            streamer=Streamer(),
        )
        ms = (time.perf_counter() - start) * 1000
        token_ms = [(t - start) * 1000 for t in marks[1:]]
        return Timing(ms, out.shape[1] - len(ids), len(ids), 0, token_ms)


def convert_ctranslate2(directory: Path, out: Path, quantization: str) -> Path:
    """Convert a checkpoint with CTranslate2's Transformers converter (cached in ``out``)."""
    import ctranslate2.converters

    if (out / "model.bin").is_file():
        return out
    converter = ctranslate2.converters.TransformersConverter(str(directory))
    converter.convert(str(out), quantization=quantization, force=True)
    return out


class CTranslate2Backend:
    """A CTranslate2 generator over a converted copy of the checkpoint."""

    def __init__(self, converted: Path, compute_type: str, tokens: list[str], name: str) -> None:
        import ctranslate2

        self.name = name
        self.tokens = tokens  # id -> token string, as CTranslate2 takes strings
        self.generator = ctranslate2.Generator(
            str(converted),
            device="cpu",
            compute_type=compute_type,
            intra_threads=torch.get_num_threads(),
        )

    def run(self, ids: list[int], new_tokens: int) -> Timing:
        prompt = [self.tokens[i] for i in ids]
        marks: list[float] = []
        start = time.perf_counter()
        for _step in self.generator.generate_tokens(
            prompt, max_length=new_tokens, min_length=new_tokens, sampling_topk=1
        ):
            marks.append(time.perf_counter())
        ms = (time.perf_counter() - start) * 1000
        token_ms = [(t - start) * 1000 for t in marks]
        return Timing(ms, len(marks), len(ids), 0, token_ms)


def token_strings(tokenizer_dir: Path) -> list[str]:
    """Token strings by id from ``tokenizer.json`` (for CTranslate2)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    size = tok.get_vocab_size(with_added_tokens=True)
    return [tok.id_to_token(i) or "<unk>" for i in range(size)]
