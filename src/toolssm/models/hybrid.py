"""Hybrid-Mamba: a Mamba-1 stack in which every ``attn_every``-th layer is causal self-attention.

The paper's camera-ready ablation mixes a few attention layers into a Mamba model. The Mamba layers are
mamba.py's ResidualBlock, imported (x + MambaBlock(RMSNorm(x))); an attention layer has the same shape,

    x + Attention(RMSNorm(x))

with mistral.py's attention (q/k/v/o projections, no biases, rotary embeddings on the full head dim, full
causal attention here: no window) and no MLP, so that it replaces a Mamba layer one for one, as in Jamba-style
hybrids without their MLPs. ``pos="nope"`` drops the rotary embeddings (the Mamba layers see order anyway).

Which layers: layer i (0 = nearest the embedding) is attention iff (n_layers - 1 - i) % attn_every == 0, i.e.
every attn_every-th layer counted from the top, so the last layer is always attention and a stack shorter than
attn_every still has one. When attn_every divides n_layers this is the usual "layers attn_every-1, 2
attn_every-1, ...": the paper preset (24 layers, attn_every 6) has attention at layers 5, 11, 17, 23 (1 in 6).

    tokens -> embedding -> n_layers x [Mamba or attention layer] -> RMSNorm -> LM head (tied to the embedding)

State (batch first): conv (B, n_mamba, d_inner, d_conv-1), ssm (B, n_mamba, d_inner, d_state) for the Mamba
layers; k, v (B, n_attn, n_heads, T_seen, d_head) for the attention layers, rotary applied to k; pos (B,) the
next token's position. The KV cache grows with the context, so ``fixed_state`` is False.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from toolssm.models.attention import attention_mask, check_pos, decode_cache, positions, rope_cos_sin
from toolssm.models.base import State, register
from toolssm.models.layers import LanguageModel, RMSNorm
from toolssm.models.mamba import CHUNK, ResidualBlock
from toolssm.models.mistral import Attention

PRESETS = {
    # one attention layer on top of three Mamba layers
    "cpu": {"d_model": 64, "n_layers": 4, "d_state": 16, "d_conv": 4, "expand": 2, "n_heads": 4, "attn_every": 4,
            "pos": "rope"},
    # Mamba-130M's shape with 4 of its 24 layers attention (12 heads of 64)
    "paper": {"d_model": 768, "n_layers": 24, "d_state": 16, "d_conv": 4, "expand": 2, "n_heads": 12,
              "attn_every": 6, "pos": "rope"},
}  # fmt: skip


def attention_layers(n_layers: int, attn_every: int) -> list[bool]:
    """Which layers are attention: every attn_every-th counted from the top (the last layer always is)."""
    return [(n_layers - 1 - i) % attn_every == 0 for i in range(n_layers)]


class AttentionLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = Attention(d_model, n_heads, n_heads)

    def forward(self, x, rope, ck, cv, mask, grown: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D); rope cos, sin (B, 1, T, Dh) or None; ck, cv (B, H, C, Dh) or None; mask (B, 1, T, C+T)
        or None (plain causal) -> x (B, T, D), k, v (B, H, C+T, Dh). grown: see mistral.Attention."""
        a, k, v = self.mixer(self.norm(x), rope, ck, cv, mask, grown)  # (B, T, D), (B, H, C+T, Dh) x2
        return x + a, k, v


@register("hybrid", PRESETS)
class Hybrid(LanguageModel):  # the shell: layers.py

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        attn_every: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        pos: str = "rope",
        rope_base: float = 10000.0,
        tie_embeddings: bool = True,
        chunk: int = CHUNK,
        backend: str | None = None,
    ):
        """backend: which kernels the Mamba layers run (models/kernels.py; default: mamba.SCAN, auto)."""
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
        if attn_every < 1:
            raise ValueError(f"attn_every must be positive, got {attn_every}")
        self.pos, self.rope_base = check_pos(pos), rope_base
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.d_inner, self.d_state, self.d_conv = expand * d_model, d_state, d_conv
        self.is_attn = attention_layers(n_layers, attn_every)
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        mamba = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "n_layers": n_layers, "chunk": chunk,
                 "backend": backend}  # fmt: skip
        self.layers = nn.ModuleList(
            AttentionLayer(d_model, n_heads) if a else ResidualBlock(d_model, **mamba) for a in self.is_attn
        )
        self.norm_f = RMSNorm(d_model)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        # attention: normal(0.02) weights, the output scaled by 1/sqrt(n_layers) like the Mamba blocks' out_proj
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer, AttentionLayer):
                    for lin in (layer.mixer.q_proj, layer.mixer.k_proj, layer.mixer.v_proj, layer.mixer.o_proj):
                        nn.init.normal_(lin.weight, std=0.02)
                    layer.mixer.o_proj.weight /= math.sqrt(n_layers)

    @property
    def fixed_state(self) -> bool:
        return False  # the attention layers' KV cache grows with the context

    def _run(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """All layers over a chunk of T >= 1 tokens (T = 1: Mamba layers take their O(1) step).
        x (B, T, D) -> x (B, T, D), the new state."""
        B, T, _ = x.shape
        conv, ssm, ck, cv, p_in = (None,) * 5 if state is None else state
        C = 0 if ck is None else ck.shape[3]
        p0, qpos = positions(p_in, B, T, x.device)  # (B,), (B, T)
        rope = rope_cos_sin(qpos, self.d_head, self.rope_base, x.dtype) if self.pos == "rope" else None
        mask = None if state is None else attention_mask(p0, T, C, None)  # (B, 1, T, C+T); None: plain causal
        ck, cv, grown = decode_cache(ck, cv, T)  # decoding: (B, La, H, C+T, Dh) x2, the last T slots free
        convs, hs, ks, vs = [], [], [], []
        for layer, is_attn in zip(self.layers, self.is_attn, strict=True):
            if is_attn:
                a = len(ks)
                k_in, v_in = (None, None) if ck is None else (ck[:, a], cv[:, a])
                x, k, v = self.call_layer(layer, x, rope, k_in, v_in, mask, grown)
                ks.append(k)  # (B, H, C+T, Dh)
                vs.append(v)
                continue
            m = len(convs)
            c, h = (None, None) if conv is None else (conv[:, m], ssm[:, m])  # (B, Di, K-1), (B, Di, N)
            if T == 1:
                y, c, h = layer.step(x[:, 0], c, h)  # (B, D)
                x = y[:, None]  # (B, 1, D)
            else:
                x, c, h = self.call_layer(layer, x, c, h)  # (B, T, D)
            convs.append(c)
            hs.append(h)
        new = (
            torch.stack(convs, 1) if convs else x.new_zeros(B, 0, self.d_inner, self.d_conv - 1),  # (B, Lm, Di, K-1)
            torch.stack(hs, 1) if hs else x.new_zeros(B, 0, self.d_inner, self.d_state),  # (B, Lm, Di, N)
            ck if grown else torch.stack(ks, 1) if ks else x.new_zeros(B, 0, self.n_heads, C + T, self.d_head),
            cv if grown else torch.stack(vs, 1) if vs else x.new_zeros(B, 0, self.n_heads, C + T, self.d_head),
            p0 + T,  # (B,)
        )
        return x, new

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x, state = self._run(self.embed(tokens), state)  # (B, T, D)
        return self._logits(x), state  # (B, T, V)

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x, state = self._run(self.embed(tokens)[:, None], state)  # (B, 1, D)
        return self._logits(x[:, 0]), state  # (B, V)
