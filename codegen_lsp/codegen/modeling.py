"""The CodeGen transformer in plain PyTorch.

A GPT-J-like decoder: each block computes ``x + attn(ln_1(x)) + mlp(ln_1(x))`` (one LayerNorm,
parallel residual); rotary position embedding on the first ``rotary_dim`` dims of every head,
rotating interleaved pairs; ``gelu_new`` MLP; final ``ln_f``; untied ``lm_head`` with bias.

Parameter names are Hugging Face's, so a published state dict loads nearly as is. One quirk is
fixed at load time, not here: published ``qkv_proj`` weights are laid out as model-parallel
shards each holding (q, v, k) (4 shards in CodeGen1, 8 in CodeGen2-1B/3.7B: the config's
``qkv_shards``); :func:`qkv_from_hf` permutes them once into plain q|k|v, so ``forward`` is a
plain split. :func:`qkv_to_hf` is the inverse, for writing checkpoints.

The KV cache is static (gpt-fast style): per-layer buffers ``[B, H, S, D]`` written by absolute
position. Attention looks at positions ``0..max(positions)`` and a causal mask built from the
input positions hides anything later, so rolling the cache back is just writing at an earlier
position.

One-token and row-exact calls may take their attention from ``decode_attention`` (set by
:meth:`CodeGenModel.use_decode_attention`: the engine's native kernel, each query computed
alone, so a row of a k-row call still equals a one-token call); prefill keeps SDPA.

Row-exact calls (``rowwise=True``, for verifying speculative drafts): attention and the MLP's
activation run one row at a time, each exactly as a one-token call at that row's position
would run them (same shapes, strides and key length), and rotary cos/sin come from one table.
With per-row kernels for the linear layers (the int8/int4 ones of ``engine/quantize.py``;
LayerNorm, adds and casts are per row anyway), row ``i`` of a ``T``-token call then equals, bit
for bit, a one-token call at position ``p + i``.

References: Hugging Face ``modeling_codegen.py`` (the layout this must match), gpt-fast
``model.py`` (the shape of the code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codegen_lsp.codegen.config import DEFAULT_QKV_SHARDS, CodeGenConfig

# attention of queries [B, T, H, D] at positions [T] over a layer's cache: [B, T, H, D], or
# None for a call it does not take (see CodeGenModel.use_decode_attention)
DecodeAttention = Callable[[Tensor, Tensor, "LayerKV"], Tensor | None]
MP_SHARDS = DEFAULT_QKV_SHARDS  # CodeGen1's shard count; a checkpoint's own is config.qkv_shards


def qkv_from_hf(weight: Tensor, shards: int = MP_SHARDS) -> Tensor:
    """Permute a published ``qkv_proj.weight`` (``shards`` shards of q, v, k) into plain
    q|k|v rows."""
    out_dim, in_dim = weight.shape
    local = out_dim // (3 * shards)
    w = weight.reshape(shards, 3, local, in_dim)  # [shard, (q, v, k), local, in]
    w = w[:, [0, 2, 1]]  # [shard, (q, k, v), local, in]
    return w.transpose(0, 1).reshape(out_dim, in_dim).contiguous()  # [(q|k|v), in]


def qkv_to_hf(weight: Tensor, shards: int = MP_SHARDS) -> Tensor:
    """Inverse of :func:`qkv_from_hf`: plain q|k|v rows back to the published shard layout."""
    out_dim, in_dim = weight.shape
    local = out_dim // (3 * shards)
    w = weight.reshape(3, shards, local, in_dim).transpose(0, 1)  # [shard, (q, k, v), ...]
    return w[:, [0, 2, 1]].reshape(out_dim, in_dim).contiguous()


def rotary_table(n_positions: int, rotary_dim: int, device: torch.device | None = None) -> Tensor:
    """Angles for every position: ``[n_positions, rotary_dim // 2]`` in float32."""
    inv_freq = 1.0 / (
        10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device) / rotary_dim)
    )
    pos = torch.arange(n_positions, dtype=torch.float32, device=device)
    return torch.outer(pos, inv_freq)


def rotary_factors(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension factors ``[1, T, 1, rot]`` for :func:`apply_rotary` from angles' ``cos``
    and ``sin`` ``[T, rot/2]``: ``cos`` for both dims of a pair, ``(-sin, sin)``."""
    c = cos.repeat_interleave(2, dim=-1)
    s = torch.stack((-sin, sin), dim=-1).flatten(-2)
    return c[None, :, None, :], s[None, :, None, :]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs ``(x0, x1)`` of the first ``rot = cos.shape[-1]`` dims of ``x``
    [B, T, H, D] into ``(x0 c - x1 s, x1 c + x0 s)``, in float32; ``cos``/``sin`` come from
    :func:`rotary_factors`. (``x0 c + x1 (-s)`` is ``x0 c - x1 s`` exactly, so this equals the
    pairwise formula bit for bit, in 7 kernels for any number of heads.)"""
    rot = cos.shape[-1]
    x_rot = x[..., :rot].float()
    swapped = x_rot.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) per pair
    rotated = (x_rot * cos + swapped * sin).to(x.dtype)
    return rotated if rot == x.shape[-1] else torch.cat((rotated, x[..., rot:]), dim=-1)


class LayerKV(NamedTuple):
    """One layer's cache: keys and values ``[B, H, S, D]``; for an int8 cache also their
    scales ``[B, H, S]`` (float32: a value is ``q * scale``, one scale per head and position)."""

    k: Tensor
    v: Tensor
    k_scale: Tensor | None = None
    v_scale: Tensor | None = None

    def write(self, positions: Tensor, k: Tensor, v: Tensor) -> None:
        """Store keys and values ``[B, H, T, D]`` at ``positions`` (rounded to int8 with a
        scale per head and position, for an int8 cache)."""
        for buf, scale_buf, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            if scale_buf is None:
                buf.index_copy_(2, positions, x.to(buf.dtype))
                continue
            q, scale = quantize_rows(x)
            buf.index_copy_(2, positions, q)
            scale_buf.index_copy_(2, positions, scale)

    def read(self, length: int) -> tuple[Tensor, Tensor]:
        """Keys and values of positions ``0..length-1`` for ATen's attention (float32 on a
        CPU, where attention over bf16 is ~10x slower; int8 dequantized)."""
        k, v = self.k[:, :, :length], self.v[:, :, :length]
        if self.k_scale is not None and self.v_scale is not None:
            k = k.float() * self.k_scale[:, :, :length, None]
            v = v.float() * self.v_scale[:, :, :length, None]
        elif k.device.type == "cpu" and k.dtype != torch.float32:
            k, v = k.float(), v.float()
        return k, v


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` ``[..., D]`` as int8 ``round(x / scale)`` and float32 ``scale = max|x| / 127``
    per row (a row of zeros gets scale 1)."""
    x = x.float()
    amax = x.abs().amax(-1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(x / scale[..., None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class KVCache:
    """Static key/value buffers for every layer: ``k[i]``, ``v[i]`` are ``[B, H, S, D]``; an
    int8 cache also keeps ``k_scale[i]``, ``v_scale[i]`` ``[B, H, S]``."""

    def __init__(
        self,
        config: CodeGenConfig,
        batch: int = 1,
        max_len: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.max_len = max_len or config.n_positions
        shape = (batch, config.n_head, self.max_len, config.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        n_scales = config.n_layer if dtype == torch.int8 else 0
        scale_shape = shape[:3]
        self.k_scale = [torch.ones(scale_shape, device=device) for _ in range(n_scales)]
        self.v_scale = [torch.ones(scale_shape, device=device) for _ in range(n_scales)]

    def layer(self, i: int) -> LayerKV:
        """Layer ``i``'s buffers."""
        if self.k_scale:
            return LayerKV(self.k[i], self.v[i], self.k_scale[i], self.v_scale[i])
        return LayerKV(self.k[i], self.v[i])

    @property
    def buffers(self) -> list[Tensor]:
        """Every tensor of the cache; position is dimension 2 of each."""
        return self.k + self.v + self.k_scale + self.v_scale

    @property
    def batch(self) -> int:
        """Number of rows (sequences) the cache holds."""
        return self.k[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers."""
        return sum(t.numel() * t.element_size() for t in self.buffers)

    def copy_rows_(self, src: KVCache, length: int, src_row: int = 0) -> None:
        """Fill every row of this cache with positions ``[0, length)`` of ``src``'s row."""
        for dst_t, src_t in zip(self.buffers, src.buffers, strict=True):
            dst_t[:, :, :length].copy_(src_t[src_row : src_row + 1, :, :length])


class Attention(nn.Module):
    """Multi-head self-attention with a fused (plain q|k|v) projection and partial rotary."""

    decode_attention: DecodeAttention | None = None

    def __init__(self, config: CodeGenConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.qkv_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        positions: Tensor,
        cache: LayerKV | None,
        rowwise: bool = False,
    ) -> Tensor:
        bsz, seq, embd = x.shape
        qkv = self.qkv_proj(x)  # [B, T, 3E]
        heads = (bsz, seq, 2 * self.n_head, self.head_dim)
        q, k = apply_rotary(qkv[..., : 2 * embd].view(heads), cos, sin).split(self.n_head, 2)
        k = k.transpose(1, 2)  # [B, H, T, D]
        v = qkv[..., 2 * embd :].view(bsz, seq, self.n_head, self.head_dim).transpose(1, 2)
        if cache is None:
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=seq > 1)
        else:
            cache.write(positions, k, v)
            native = None
            if self.decode_attention is not None and (seq == 1 or rowwise):
                native = self.decode_attention(q, positions, cache)  # [B, T, H, D]
            if native is not None:  # each row computed alone, as a one-token call would
                return self.out_proj(native.reshape(bsz, seq, embd))
            if rowwise and seq > 1:
                rows = [
                    self._attend(q[:, i : i + 1].contiguous(), positions[i : i + 1], cache)
                    for i in range(seq)
                ]
                y = torch.cat(rows, dim=2)  # [B, H, T, D]
            else:
                y = self._attend(q, positions, cache)
        y = y.transpose(1, 2).reshape(bsz, seq, embd)  # [B, T, E]
        return self.out_proj(y)

    @staticmethod
    def _attend(q: Tensor, positions: Tensor, cache: LayerKV) -> Tensor:
        """Attention of queries ``q`` [B, T, H, D] at ``positions`` over the cache's keys
        ``0..positions[-1]``; ``[B, H, T, D]`` in ``q``'s dtype."""
        length = int(positions[-1]) + 1
        mask = None  # one query at the last position sees every key: no mask to build
        if q.shape[1] > 1:
            keys_pos = torch.arange(length, device=q.device)
            mask = positions[:, None] >= keys_pos[None, :]  # [T, L]
        keys, values = cache.read(length)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2).to(keys.dtype), keys, values, attn_mask=mask
        )
        return y.to(q.dtype)


def _activation(name: str) -> nn.Module:
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    return nn.SiLU()


class MLP(nn.Module):
    """``fc_out(act(fc_in(x)))``."""

    def __init__(self, config: CodeGenConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.n_embd, config.inner_dim)
        self.fc_out = nn.Linear(config.inner_dim, config.n_embd)
        self.act = _activation(config.activation_function)

    def forward(self, x: Tensor, rowwise: bool = False) -> Tensor:
        h = self.fc_in(x)  # [B, T, inner]
        if rowwise and h.shape[1] > 1:  # a transcendental's vector and scalar paths may differ
            return self.fc_out(torch.cat([self.act(h[:, i : i + 1]) for i in range(h.shape[1])], 1))
        return self.fc_out(self.act(h))


class Block(nn.Module):
    """One decoder layer with CodeGen's parallel residual."""

    def __init__(self, config: CodeGenConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        positions: Tensor,
        cache: LayerKV | None,
        rowwise: bool = False,
    ) -> Tensor:
        h = self.ln_1(x)
        return x + self.attn(h, cos, sin, positions, cache, rowwise) + self.mlp(h, rowwise)


class CodeGenModel(nn.Module):
    """Embedding, decoder blocks and final LayerNorm: token ids to hidden states."""

    def __init__(self, config: CodeGenConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self._rotary: tuple[Tensor, Tensor] | None = None

    def use_decode_attention(self, attend: DecodeAttention | None) -> None:
        """Compute one-token and row-exact (``rowwise``) calls' attention with ``attend``
        (the engine's native kernel) where it takes the call; prefill keeps SDPA."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.decode_attention = attend

    def rotary(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos and sin of the rotary angles, ``[n_positions, rotary_dims // 2]`` each (float32,
        computed once per device: a position's values never depend on the call)."""
        if self._rotary is None or self._rotary[0].device != device:
            angles = rotary_table(self.config.n_positions, self.config.rotary_dims, device=device)
            self._rotary = (angles.cos(), angles.sin())
        return self._rotary

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache | None = None,
        rowwise: bool = False,
    ) -> Tensor:
        """Hidden states ``[B, T, E]`` for ``tokens`` [B, T] at absolute ``positions`` [T];
        ``rowwise``: every row as a one-token call would compute it (see the module doc)."""
        if int(positions.max()) >= self.config.n_positions:
            raise ValueError(
                f"position {int(positions.max())} is past the model's context "
                f"({self.config.n_positions} tokens)"
            )
        cos_table, sin_table = self.rotary(tokens.device)
        cos, sin = rotary_factors(cos_table[positions], sin_table[positions])  # [1, T, 1, rot]
        x = self.wte(tokens)
        for i, block in enumerate(self.h):
            layer_cache = None if cache is None else cache.layer(i)
            x = block(x, cos, sin, positions, layer_cache, rowwise)
        return self.ln_f(x)


class CodeGenForCausalLM(nn.Module):
    """CodeGen with its language-model head: ``forward(tokens, positions, cache) -> logits``."""

    def __init__(self, config: CodeGenConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = CodeGenModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=True)

    def forward(self, tokens: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        """Float32 logits ``[B, T, V]``."""
        return self.logits(self.transformer(tokens, positions, cache))

    def logits(self, hidden: Tensor) -> Tensor:
        """Project hidden states ``[..., E]`` to float32 logits ``[..., V]``."""
        return self.lm_head(hidden).float()

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the embedding weights."""
        return self.transformer.wte.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.transformer.wte.weight.device

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """A static KV cache matching this model's dtype and device."""
        dtype = self.dtype if self.dtype.is_floating_point else torch.bfloat16
        return KVCache(self.config, batch, max_len, dtype=dtype, device=self.device)

    def init_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """Random initialisation (GPT-2 style), for tests and training from scratch."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif "ln_" in name:
                    p.fill_(1.0)
                else:
                    scale = std / math.sqrt(2 * self.config.n_layer) if "out" in name else std
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
