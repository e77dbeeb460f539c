"""Pieces shared by the Transformer baselines (pythia.py, mistral.py): rotary embeddings, the causal (optionally
sliding-window) mask, attention over a KV cache, and the cache bookkeeping. Not a registered model.

Positions. Every row carries the absolute position of its next token, ``pos`` (B,), as the last state tensor.
A cache of C keys ends just before ``pos``, so its slot j holds position ``pos - C + j``; a slot with a negative
position is padding (a rolling cache that has not filled up yet) and is masked out. Queries of a T-token chunk
sit at ``pos + i``. Query i may see key j iff

    0 <= kpos_j <= qpos_i            (causal; padding excluded)
    kpos_j > qpos_i - window         (sliding window: itself and the window-1 tokens before it)

RoPE follows the GPT-NeoX / Hugging Face "rotate_half" convention: the rotated dims are split into two halves
(x1, x2) and rotated as (x1 cos - x2 sin, x2 cos + x1 sin), with frequency base^(-2k/dim) for pair k; only the
first ``rot`` dims of each head are rotated (GPT-NeoX's rotary_pct), the rest pass through. The angles are
computed in float64 so that long positions stay exact in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POS_ENCODINGS = ("rope", "nope")


def check_pos(pos: str) -> str:
    if pos not in POS_ENCODINGS:
        raise ValueError(f"unknown position encoding {pos!r} (choose from: {', '.join(POS_ENCODINGS)})")
    return pos


def rope_cos_sin(positions: Tensor, dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """positions (B, T) long -> cos, sin (B, 1, T, dim), ready to broadcast over heads. dim is even."""
    inv_freq = base ** -(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)  # (dim/2,)
    ang = positions.to(torch.float64)[..., None] * inv_freq  # (B, T, dim/2)
    ang = torch.cat([ang, ang], -1)[:, None]  # (B, 1, T, dim)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, Dh); cos, sin (B, 1, T, rot), rot <= Dh -> x with its first rot dims rotated."""
    rot = cos.shape[-1]
    if rot == 0:
        return x
    xr, xp = x[..., :rot], x[..., rot:]  # (B, H, T, rot), (B, H, T, Dh-rot)
    x1, x2 = xr.chunk(2, -1)  # (B, H, T, rot/2) x2
    rotated = torch.cat([-x2, x1], -1)  # (B, H, T, rot): rotate_half
    return torch.cat([xr * cos + rotated * sin, xp], -1)  # (B, H, T, Dh)


def positions(state_pos: Tensor | None, batch: int, T: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The chunk's start positions p0 (B,) and query positions (B, T)."""
    p0 = torch.zeros(batch, dtype=torch.long, device=device) if state_pos is None else state_pos  # (B,)
    return p0, p0[:, None] + torch.arange(T, device=device)  # (B,), (B, T)


def attention_mask(p0: Tensor, T: int, C: int, window: int | None) -> Tensor:
    """Which keys each query sees: (B, 1, T, C+T) bool, True = attend. p0 (B,); C cached keys before the chunk."""
    i = torch.arange(T, device=p0.device)  # (T,)
    j = torch.arange(C + T, device=p0.device)  # (S,)
    rel = (j - C)[None, :] - i[:, None]  # (T, S): kpos - qpos, the same for every row
    ok = rel <= 0  # (T, S) causal
    if window is not None:
        ok = ok & (rel > -window)  # (T, S) sliding window
    kpos = p0[:, None] - C + j  # (B, S)
    return ok[None, None] & (kpos >= 0)[:, None, None, :]  # (B, 1, T, S)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """q (B, H, T, Dh); k, v (B, Hkv, S, Dh) with H a multiple of Hkv (grouped-query attention: query head h
    reads kv head h // (H/Hkv)); mask (B, 1, T, S) bool, or None for plain causal attention with S == T."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)  # (B, H, S, Dh) x2
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)


def extend_cache(cache: Tensor, T: int) -> Tensor:
    """A full-attention KV cache (B, L, H, C, Dh) -> a (B, L, H, C+T, Dh) view whose first C slots are the
    cache and whose last T slots are free, to be written by the layers (`with_cache`).

    Decoding appends one token at a time, and a ``torch.cat`` per step copies the whole cache: O(C) memory
    traffic per token, three times what attention itself reads. So the cache lives in a buffer with spare
    room along C (capacity doubled when it runs out, amortized O(1) per token), and the returned view is
    the same storage with T more slots. A cache with no spare room (a stacked prefill, `select_state`'s
    copy) moves into a new buffer once. Writing past the old view leaves the old state's own slots as they
    were, so the previous state stays valid; but a state must be extended at most once: stepping twice
    from the same state (branching) would write both branches' slots into the same place. Decoding never
    does that, and the models use this only without autograd (`decode_cache`)."""
    B, L, H, C, Dh = cache.shape
    need, base = C + T, cache._base  # a view's base tensor; None for a tensor that owns its storage
    if (
        base is not None
        and getattr(base, "_kv_buffer", False)  # a buffer made here, never someone else's tensor
        and cache.data_ptr() == base.data_ptr()
        and cache.stride() == base.stride()  # a prefix of the buffer along C
        and base.shape[3] >= need
    ):
        return base[:, :, :, :need]  # the same buffer, T more slots
    buf = cache.new_empty(B, L, H, max(2 * need, 64), Dh)  # (B, L, H, capacity, Dh)
    buf._kv_buffer = True
    buf[:, :, :, :C] = cache
    return buf[:, :, :, :need]


def decode_cache(ck: Tensor | None, cv: Tensor | None, T: int) -> tuple[Tensor | None, Tensor | None, bool]:
    """A full-attention model's caches (B, L, H, C, Dh) x2 for a chunk of T tokens -> the caches and
    ``grown``. Decoding (a cache and no autograd): both grown by `extend_cache`, grown = True; otherwise (a
    prefill, or training through the cache) unchanged, grown = False, and the layers concatenate."""
    if ck is None or torch.is_grad_enabled():
        return ck, cv, False
    return extend_cache(ck, T), extend_cache(cv, T), True


Rope = tuple[Tensor, Tensor] | None  # cos, sin (B, 1, T, rot), or None (no position encoding)


def with_cache(ck: Tensor | None, cv: Tensor | None, k: Tensor, v: Tensor, grown: bool) -> tuple[Tensor, Tensor]:
    """A layer's keys and values over the cache and the chunk. k, v (B, H, T, Dh); ck, cv (B, H, C, Dh) or None
    -> (B, H, C+T, Dh) x2. grown: ck, cv are already (B, H, C+T, Dh) with their last T slots free
    (`extend_cache`), and k, v are written there in place; otherwise they are concatenated."""
    if grown:
        ck[:, :, ck.shape[2] - k.shape[2] :], cv[:, :, cv.shape[2] - v.shape[2] :] = k, v
        return ck, cv
    if ck is None:
        return k, v
    return torch.cat([ck, k], 2), torch.cat([cv, v], 2)


def trim_cache(x: Tensor, keep: int | None) -> Tensor:
    """The cache to carry on: all of x (B, H, S, Dh) if keep is None, else exactly its last ``keep`` slots,
    padded on the left with zeros while fewer have been seen (the padding's positions are negative)."""
    if keep is None:
        return x
    S = x.shape[2]
    if S < keep:
        return F.pad(x, (0, 0, keep - S, 0))  # (B, H, keep, Dh)
    return x[:, :, S - keep :]  # (B, H, keep, Dh); not x[:, :, -keep:], which is all of x when keep == 0
