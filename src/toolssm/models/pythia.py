"""Pythia (GPT-NeoX architecture; Biderman et al., 2023): the paper's full-attention Transformer baseline.

The architecture follows Hugging Face's GPTNeoX (Apache-2.0); the code here is written anew for this package.

    tokens -> embed_in -> n_layers x [x + attention(input_layernorm(x)) + mlp(post_attention_layernorm(x))]
           -> final_layer_norm -> embed_out (untied)

Options for other GPT-NeoX checkpoints (models/hf.py), off by default: ``parallel_residual=False`` (x = x + attn,
then x = x + mlp(post_attention_layernorm(x))), ``attention_bias=False`` (no bias in query_key_value and dense),
``tie_embeddings=True`` (the head reuses embed_in's matrix).

Parallel residual (attention and MLP both read x), LayerNorm pre-norm, one fused QKV projection laid out per
head as [q | k | v] (GPT-NeoX's layout), rotary embeddings on the first ``rotary_pct`` of each head's dims
(rounded down to an even count; attention.py), exact-GELU MLP, biases everywhere. Module names match the
Hugging Face checkpoint (without its ``gpt_neox.`` prefix); models/hf.py loads Pythia weights.
``pos="nope"``: no position encoding at all (causal masking alone).

State: the KV cache, which grows with the context (``fixed_state`` is False):
k, v (B, n_layers, n_heads, T_seen, d_head), rotary already applied to k; pos (B,) the next token's position.
Decoding concatenates to the cache at every step (O(T) copy per token); fine at this package's scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models.attention import (
    Rope,
    apply_rope,
    attend,
    attention_mask,
    check_pos,
    decode_cache,
    positions,
    rope_cos_sin,
    with_cache,
)
from toolssm.models.base import State, register
from toolssm.models.layers import LanguageModel, normal_init

PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256, "pos": "rope"},
    "paper": {"d_model": 768, "n_layers": 24, "n_heads": 8, "d_ff": 1536, "pos": "rope"},
}


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.query_key_value = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.dense = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, rope: Rope, ck: Tensor | None, cv: Tensor | None, mask: Tensor | None,
                grown: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """x (B, T, D); rope: cos, sin (B, 1, T, rot); ck, cv (B, H, C, Dh) or None; mask (B, 1, T, C+T) or None
        -> out (B, T, D), k, v (B, H, C+T, Dh). grown: ck, cv are already (B, H, C+T, Dh) with the last T slots
        free (attention.extend_cache), and the new keys and values are written there."""
        B, T, D = x.shape
        qkv = self.query_key_value(x).view(B, T, self.n_heads, 3 * self.d_head).transpose(1, 2)  # (B, H, T, 3Dh)
        q, k, v = qkv.split(self.d_head, -1)  # (B, H, T, Dh) x3
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # (B, H, T, Dh) x2
        k, v = with_cache(ck, cv, k, v, grown)  # (B, H, C+T, Dh) x2
        y = attend(q, k, v, mask)  # (B, H, T, Dh)
        return self.dense(y.transpose(1, 2).reshape(B, T, D)), k, v  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(d_model, d_ff)
        self.dense_4h_to_h = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # via (B, T, d_ff)


class Layer(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, eps: float, parallel_residual: bool = True, bias: bool = True
    ):
        super().__init__()
        self.parallel_residual = parallel_residual
        self.input_layernorm = nn.LayerNorm(d_model, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(d_model, eps=eps)
        self.attention = Attention(d_model, n_heads, bias)
        self.mlp = MLP(d_model, d_ff)

    def forward(self, x, rope, ck, cv, mask, grown: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attention(self.input_layernorm(x), rope, ck, cv, mask, grown)  # (B, T, D), (B, H, C+T, Dh) x2
        if self.parallel_residual:
            return x + a + self.mlp(self.post_attention_layernorm(x)), k, v  # Pythia: both read x
        x = x + a  # sequential: the MLP reads the attention's output
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


@register("pythia", PRESETS)
class Pythia(LanguageModel):
    parts = ("embed_in", "final_layer_norm", "embed_out")  # the shell (layers.py)

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        pos: str = "rope",
        rotary_pct: float = 0.25,
        rotary_base: float = 10000.0,
        eps: float = 1e-5,
        parallel_residual: bool = True,
        attention_bias: bool = True,
        tie_embeddings: bool = False,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
        self.pos = check_pos(pos)
        self.rot = int(d_model // n_heads * rotary_pct) // 2 * 2  # rotated dims per head, even
        self.rotary_base = rotary_base
        self.embed_in = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            Layer(d_model, n_heads, d_ff, eps, parallel_residual, attention_bias) for _ in range(n_layers)
        )
        self.final_layer_norm = nn.LayerNorm(d_model, eps=eps)
        # tied: the head reuses embed_in's matrix, not a shared Parameter (safetensors refuses shared tensors)
        self.embed_out = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        # GPT-NeoX: normal(0.02) weights, zero biases; GPT-2 style 1/sqrt(2 n_layers) on the residual outputs
        residual = [w for layer in self.layers for w in (layer.attention.dense.weight, layer.mlp.dense_4h_to_h.weight)]
        normal_init(self, residual, math.sqrt(2 * n_layers), zero_bias=True)

    @property
    def fixed_state(self) -> bool:
        return False  # the KV cache grows with the context

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T = tokens.shape
        ck, cv, p_in = (None, None, None) if state is None else state  # (B, L, H, C, Dh) x2, (B,)
        C = 0 if ck is None else ck.shape[3]
        p0, qpos = positions(p_in, B, T, tokens.device)  # (B,), (B, T)
        x = self.embed_in(tokens)  # (B, T, D)
        rope = rope_cos_sin(qpos, self.rot, self.rotary_base, x.dtype) if self.pos == "rope" else None
        mask = None if state is None else attention_mask(p0, T, C, None)  # (B, 1, T, C+T); None: plain causal
        ck, cv, grown = decode_cache(ck, cv, T)  # decoding: (B, L, H, C+T, Dh) x2, the last T slots free
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            k_in, v_in = (None, None) if ck is None else (ck[:, i], cv[:, i])
            x, k, v = self.call_layer(layer, x, rope, k_in, v_in, mask, grown)
            ks.append(k)  # (B, H, C+T, Dh)
            vs.append(v)
        logits = self._logits(x)  # (B, T, V)
        if grown:
            return logits, (ck, cv, p0 + T)  # the layers wrote into ck, cv: (B, L, H, C+T, Dh) x2, (B,)
        return logits, (torch.stack(ks, 1), torch.stack(vs, 1), p0 + T)  # (B, L, H, C+T, Dh) x2, (B,)
