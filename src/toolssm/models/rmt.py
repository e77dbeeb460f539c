"""Recurrent Memory Transformer (Bulatov, Kuratov & Burtsev, 2022): a Transformer run segment by segment, with a
few memory vectors carried from one segment to the next. The camera-ready's App. D.9 ablation.

The sequence is cut into segments of ``segment`` tokens. Each segment is processed by an ordinary causal
Transformer (a mistral.py Mistral with full attention: RMSNorm pre-norm, rotary attention, SwiGLU MLP) over

    [ read memory (n_mem) | the segment's tokens (segment) | write memory (n_mem) ]

as in the paper's decoder-only form: the read memory comes first, so every token of the segment attends to
it; the write memory comes last and attends to the whole segment. Both slots take the segment's incoming
memory vectors as input; the last layer's outputs at the write slots, RMS-normalized (``mem_norm``), are the
memory of the next segment. The first segment's memory is a learned parameter. Positions (rotary) count from
the start of each segment's window, so nothing grows from one segment to the next.

    tokens -> embedding -> per segment: n_layers x Layer([mem | x | mem]) -> RMSNorm -> LM head (untied)
                                        new mem = mem_norm(output at the write slots)

Gradients flow through the memory across every segment of a training sequence (full backpropagation through
time, as the paper's RMT is trained). ``forward`` runs one Transformer pass per segment (parallel inside it);
``step`` is a one-token ``forward``. Where a segment fills up, the write pass runs at once and the next
segment's read memory is prefilled, so after the last token of a segment the state holds the new memory.

State (batch first, fixed size): mem (B, n_mem, d_model), the current segment's memory; k, v
(B, n_layers, n_heads, n_mem + segment, d_head), a buffer whose first n_mem + fill slots are the keys and values
of the read memory and of the segment's tokens so far (rotary applied), the rest zeros; fill (B,) how many of the
segment's tokens have been seen. Every row of a batch must be at the same point of its segment (the rollout and
training both step all rows together).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models.attention import attention_mask, check_pos, rope_cos_sin
from toolssm.models.base import SequenceModel, State, register
from toolssm.models.mamba import RMSNorm
from toolssm.models.mistral import Mistral

PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 256, "segment": 16, "n_mem": 4, "pos": "rope"},
    # the paper gives no configuration (App. D.9); Pythia's width and depth budget at the paper preset
    "paper": {"d_model": 768, "n_layers": 12, "n_heads": 8, "d_ff": 1536, "segment": 128, "n_mem": 16,
              "pos": "rope"},
}  # fmt: skip


@register("rmt", PRESETS)
class RMT(SequenceModel):
    layered = True  # forward runs its layers through call_layer

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        segment: int,
        n_mem: int,
        pos: str = "rope",
        rope_base: float = 10000.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        if segment < 1 or n_mem < 1:
            raise ValueError(f"segment and n_mem must be positive, got {segment} and {n_mem}")
        self.pos, self.rope_base = check_pos(pos), rope_base
        self.segment, self.n_mem = segment, n_mem
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        # the Transformer run inside each window: mistral.py's embedding, layers, final norm and head, with their
        # initialization; its own forward is not used (the memory slots enter as vectors, not tokens)
        self.transformer = Mistral(vocab_size, d_model, n_layers, n_heads, d_ff, window=None, pos=pos,
                                   rope_base=rope_base, eps=eps)  # fmt: skip
        self.memory = nn.Parameter(torch.randn(n_mem, d_model))  # the first segment's memory, RMS about 1
        self.mem_norm = RMSNorm(d_model, eps)

    @property
    def fixed_state(self) -> bool:
        return True  # memory and one segment's cache, whatever the context's length

    # -- one pass of the Transformer over part of a segment's window ----------------------------------------
    def _layers(self, x: Tensor, ck: Tensor | None, cv: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D) at window positions C.. C+T-1 after a cache ck, cv (B, L, H, C, Dh) (None: C = 0)
        -> x (B, T, D), k, v (B, L, H, C+T, Dh)."""
        B, T, _ = x.shape
        C = 0 if ck is None else ck.shape[3]
        p0 = torch.full((B,), C, dtype=torch.long, device=x.device)  # (B,)
        qpos = p0[:, None] + torch.arange(T, device=x.device)  # (B, T)
        rope = rope_cos_sin(qpos, self.d_head, self.rope_base, x.dtype) if self.pos == "rope" else None
        mask = None if C == 0 else attention_mask(p0, T, C, None)  # (B, 1, T, C+T); None: plain causal
        ks, vs = [], []
        for i, layer in enumerate(self.transformer.layers):
            k_in, v_in = (None, None) if ck is None else (ck[:, i], cv[:, i])  # (B, H, C, Dh) x2
            x, k, v = self.call_layer(layer, x, rope, k_in, v_in, mask)  # (B, T, D), (B, H, C+T, Dh) x2
            ks.append(k)
            vs.append(v)
        return x, torch.stack(ks, 1), torch.stack(vs, 1)  # (B, T, D), (B, L, H, C+T, Dh) x2

    def _pad(self, k: Tensor) -> Tensor:
        """(B, L, H, C, Dh) -> the state's buffer (B, L, H, n_mem + segment, Dh), zeros after the first C slots."""
        return F.pad(k, (0, 0, 0, self.n_mem + self.segment - k.shape[3]))

    def _open(self, mem: Tensor) -> tuple[Tensor, Tensor]:
        """A new segment: the read memory mem (B, M, D) through the layers -> its keys, values (B, L, H, M, Dh)."""
        _, k, v = self._layers(mem, None, None)
        return k, v

    def initial_state(self, batch: int) -> State:
        mem = self.memory[None].expand(batch, -1, -1)  # (B, M, D)
        k, v = self._open(mem)  # (B, L, H, M, Dh) x2
        fill = torch.zeros(batch, dtype=torch.long, device=mem.device)  # (B,)
        return mem, self._pad(k), self._pad(v), fill

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T = tokens.shape
        mem, ck, cv, fill = self.initial_state(B) if state is None else state  # (B,M,D), (B,L,H,M+S,Dh) x2, (B,)
        f = int(fill[0]) if B else 0
        if B and bool((fill != f).any()):
            raise ValueError("rmt: every row of a batch must be at the same point of its segment")
        x = self.transformer.embed_tokens(tokens)  # (B, T, D)
        M, S = self.n_mem, self.segment
        outs, t = [], 0
        while t < T:
            n = min(S - f, T - t)  # the tokens that fit in the current segment
            C = M + f
            h, k, v = self._layers(x[:, t : t + n], ck[:, :, :, :C], cv[:, :, :, :C])  # (B, n, D), (B,L,H,C+n,Dh)
            outs.append(h)
            t, f = t + n, f + n
            if f < S:
                ck, cv = self._pad(k), self._pad(v)  # (B, L, H, M+S, Dh) x2
                continue
            w, _, _ = self._layers(mem, k, v)  # the write slots: (B, M, D), seeing the whole segment
            mem = self.mem_norm(w)  # (B, M, D): the next segment's memory
            k, v = self._open(mem)  # (B, L, H, M, Dh) x2
            ck, cv, f = self._pad(k), self._pad(v), 0
        h = torch.cat(outs, 1) if outs else x  # (B, T, D)
        logits = self.transformer.lm_head(self.transformer.norm(h))  # (B, T, V)
        new_fill = torch.full((B,), f, dtype=torch.long, device=tokens.device)  # (B,)
        return logits, (mem, ck, cv, new_fill)
