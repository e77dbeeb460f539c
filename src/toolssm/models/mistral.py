"""Mistral (Jiang et al., 2023): a sliding-window-attention Transformer, the paper's fixed-state Transformer.

The architecture follows Hugging Face's Mistral (Apache-2.0); the code here is written anew for this package.

    tokens -> embed_tokens -> n_layers x [x + self_attn(input_layernorm(x)); x + mlp(post_attention_layernorm(x))]
           -> norm -> lm_head (untied)

RMSNorm pre-norm, sequential residual, no biases, rotary embeddings on the full head dim (attention.py),
SwiGLU MLP down_proj(silu(gate_proj(x)) * up_proj(x)) (layers.py, as RMSNorm and the shell), optional
grouped-query attention (``n_kv_heads`` key/value heads shared by n_heads / n_kv_heads query heads each).
``pos="nope"``: no position encoding.

Sliding window: the token at position t attends to positions t-window+1 .. t (itself and the window-1 tokens
before it), in the parallel forward and in decoding alike. ``window=None`` (constructor only) is full causal
attention, with a growing cache as in pythia.py.

State (batch first): k, v (B, n_layers, n_kv_heads, window-1, d_head), rotary already applied to k, and
pos (B,) the position of the next token. The cache holds EXACTLY the last window-1 keys/values: the next token
sees those and itself, which is its whole window, so nothing more is needed. Slot j holds position
pos-(window-1)+j; while fewer than window-1 tokens have been seen the leading slots are zeros at negative
positions and are masked out. The size never changes: ``fixed_state`` is True. The cache is a shift register,
not a ring buffer: each call concatenates the new keys behind it and keeps the last window-1, so a prefill
continuation (forward with a state) is exact too.

The parallel forward masks a full (T, C+T) score matrix; a banded kernel would save the work outside the
window, which matters little at the lengths trained here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from toolssm.models.attention import (
    Rope,
    apply_rope,
    attend,
    attention_mask,
    check_pos,
    positions,
    rope_cos_sin,
    trim_cache,
    with_cache,
)
from toolssm.models.base import State, register
from toolssm.models.layers import MLP, LanguageModel, RMSNorm, normal_init

PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": None, "d_ff": 256, "window": 64, "pos": "rope"},
    "paper": {
        "d_model": 768,
        "n_layers": 8,
        "n_heads": 8,
        "n_kv_heads": None,
        "d_ff": 1536,
        "window": 512,
        "pos": "rope",
    },
}


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.d_head, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.d_head, bias=False)
        self.o_proj = nn.Linear(n_heads * self.d_head, d_model, bias=False)

    def forward(self, x: Tensor, rope: Rope, ck: Tensor | None, cv: Tensor | None, mask: Tensor | None,
                grown: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """x (B, T, D); rope: cos, sin (B, 1, T, Dh); ck, cv (B, Hkv, C, Dh) or None; mask (B, 1, T, C+T) or None
        -> out (B, T, D), k, v (B, Hkv, C+T, Dh). grown: ck, cv are already (B, Hkv, C+T, Dh) with the last T
        slots free (attention.extend_cache), and the new keys and values are written there."""
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.d_head).transpose(1, 2)  # (B, Hkv, T, Dh)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # (B, H, T, Dh), (B, Hkv, T, Dh)
        k, v = with_cache(ck, cv, k, v, grown)  # (B, Hkv, C+T, Dh) x2
        y = attend(q, k, v, mask)  # (B, H, T, Dh)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, D)), k, v  # (B, T, D)


class Layer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, d_ff: int, eps: float):
        super().__init__()
        self.input_layernorm = RMSNorm(d_model, eps)
        self.post_attention_layernorm = RMSNorm(d_model, eps)
        self.self_attn = Attention(d_model, n_heads, n_kv_heads)
        self.mlp = MLP(d_model, d_ff)

    def forward(self, x, rope, ck, cv, mask) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.self_attn(self.input_layernorm(x), rope, ck, cv, mask)  # (B, T, D), (B, Hkv, C+T, Dh) x2
        x = x + a  # (B, T, D)
        return x + self.mlp(self.post_attention_layernorm(x)), k, v  # sequential residual


@register("mistral", PRESETS)
class Mistral(LanguageModel):
    parts = ("embed_tokens", "norm", "lm_head")

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        window: int | None,
        n_kv_heads: int | None = None,
        pos: str = "rope",
        rope_base: float = 10000.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"need n_kv_heads | n_heads | d_model, got {n_kv_heads}, {n_heads}, {d_model}")
        if window is not None and window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.pos, self.window, self.rope_base = check_pos(pos), window, rope_base
        self.d_head = d_model // n_heads
        self.embed_tokens = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(Layer(d_model, n_heads, n_kv_heads, d_ff, eps) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        # normal(0.02) weights; GPT-2 style 1/sqrt(2 n_layers) on the residual outputs
        residual = [w for layer in self.layers for w in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)]
        normal_init(self, residual, math.sqrt(2 * n_layers))

    @property
    def fixed_state(self) -> bool:
        return self.window is not None

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T = tokens.shape
        ck, cv, p_in = (None, None, None) if state is None else state  # (B, L, Hkv, C, Dh) x2, (B,)
        C = 0 if ck is None else ck.shape[3]
        p0, qpos = positions(p_in, B, T, tokens.device)  # (B,), (B, T)
        x = self.embed_tokens(tokens)  # (B, T, D)
        rope = rope_cos_sin(qpos, self.d_head, self.rope_base, x.dtype) if self.pos == "rope" else None
        full_causal = state is None and (self.window is None or self.window >= T)
        mask = None if full_causal else attention_mask(p0, T, C, self.window)  # (B, 1, T, C+T); None: causal
        keep = None if self.window is None else self.window - 1
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            k_in, v_in = (None, None) if ck is None else (ck[:, i], cv[:, i])
            x, k, v = self.call_layer(layer, x, rope, k_in, v_in, mask)
            ks.append(trim_cache(k, keep))  # (B, Hkv, window-1, Dh), or (B, Hkv, C+T, Dh) for full attention
            vs.append(trim_cache(v, keep))
        logits = self._logits(x)  # (B, T, V)
        return logits, (torch.stack(ks, 1), torch.stack(vs, 1), p0 + T)  # (B, L, Hkv, keep, Dh) x2, (B,)
