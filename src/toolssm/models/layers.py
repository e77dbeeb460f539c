"""Layers shared by the architectures: the norms and MLP, the chunking helpers of the chunked scans, and the
shell every layered model is built in. Not a registered model.

The shell (`LanguageModel`):

    tokens -> embedding -> n_layers x layer -> final norm -> head (its own Linear, or tied to the embedding)

Each architecture builds its parts under the names of the checkpoints it loads (``embed``/``norm_f``/``head``
for Mamba, ``embed_tokens``/``norm``/``lm_head`` for Mistral, ...), so the state-dict keys are the checkpoints'
own, and names them in ``parts``. It builds them in that order, embedding first: the order is the order of the
random initialization. A head of None is tied: the logits reuse the embedding matrix (not a shared Parameter:
safetensors refuses shared tensors).

`RecurrentLM` adds the loop of the models whose layers each carry a fixed-size state pair, a causal
convolution's last inputs and an SSM state (Mamba, Mamba-2, Gated DeltaNet):

    state: conv (B, n_layers, Dc, d_conv-1), ssm (B, n_layers, *S)      S: the layer's SSM state shape
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models.base import SequenceModel, State

# ----------------------------------------------------------------------------------------------------------
# norms and MLP


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:  # (..., d) -> (..., d)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    """SwiGLU, no biases: down_proj(silu(gate_proj(x)) * up_proj(x)) (Mistral's names)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # via (B, T, d_ff)


def normal_init(
    model: nn.Module, residual: Iterable[Tensor] = (), scale: float = 1.0, std: float = 0.02, zero_bias: bool = False
) -> None:
    """Every Linear and Embedding weight drawn from normal(0, std), in module order (zero_bias: Linear biases 0),
    then each weight in ``residual`` (the residual branches' output projections) divided by ``scale``: GPT-2's
    1/sqrt(2 n_layers) with two branches per layer."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
        if zero_bias and isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for w in residual:
            w /= scale


# ----------------------------------------------------------------------------------------------------------
# chunking (the chunked parallel forms of mamba2.py and gated_deltanet.py)


def segsum(a: Tensor) -> Tensor:
    """a (..., L) -> (..., L, L): out[..., t, s] = a[s+1] + ... + a[t] for s <= t (0 on the diagonal), -inf above.

    Summed directly, a cumsum down each column of a masked copy, not as cumsum[t] - cumsum[s], which would
    cancel in fp32 once the sum over a chunk is large.
    """
    L = a.shape[-1]
    x = a[..., :, None].expand(*a.shape, L)  # (..., L, L): x[t, s] = a[t]
    strict = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1)  # (L, L): s < t
    x = x.masked_fill(~strict, 0).cumsum(-2)  # (..., L, L): sum over s < r <= t
    lower = torch.ones(L, L, dtype=torch.bool, device=a.device).tril()  # (L, L): s <= t
    return x.masked_fill(~lower, -math.inf)  # (..., L, L)


def to_chunks(x: Tensor, L: int) -> Tensor:
    """x (B, T, H, ...) -> (B, H, n, L, ...), time zero-padded at the end to n * L steps."""
    Bsz, T = x.shape[:2]
    pad = (-T) % L
    if pad:
        x = torch.cat([x, x.new_zeros(Bsz, pad, *x.shape[2:])], 1)  # (B, n L, H, ...)
    x = x.view(Bsz, (T + pad) // L, L, *x.shape[2:])  # (B, n, L, H, ...)
    return x.movedim(3, 1)  # (B, H, n, L, ...)


def from_chunks(y: Tensor, T: int) -> Tensor:
    """y (B, H, n, L, ...) -> (B, T, H, ...), the padding dropped."""
    y = y.movedim(1, 3)  # (B, n, L, H, ...)
    return y.reshape(y.shape[0], -1, *y.shape[3:])[:, :T]  # (B, T, H, ...)


# ----------------------------------------------------------------------------------------------------------
# the shell


class LanguageModel(SequenceModel):
    """tokens -> embedding -> ``self.layers`` -> final norm -> head. A subclass builds the embedding, the layers
    (an nn.ModuleList), the final norm and the head in that order, and names the three others in ``parts``."""

    layered = True  # forward runs its layers through call_layer
    parts: tuple[str, str, str] = ("embed", "norm_f", "head")
    """attribute names of the embedding, the final norm and the head (None: tied to the embedding)"""

    def _embed(self, tokens: Tensor) -> Tensor:  # (B, ...) -> (B, ..., d_model)
        return getattr(self, self.parts[0])(tokens)

    def _logits(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., V)
        embed, norm, head = (getattr(self, p) for p in self.parts)
        x = norm(x)
        return F.linear(x, embed.weight) if head is None else head(x)


class RecurrentLM(LanguageModel):
    """A `LanguageModel` whose layers each take and return a (conv, ssm) state pair:
    layer(x, conv, ssm) -> x, conv, ssm in the forward, layer.step likewise for one token."""

    @staticmethod
    def _split(state: State | None, i: int) -> tuple[Tensor | None, Tensor | None]:
        if state is None:
            return None, None
        conv, ssm = state  # (B, L, Dc, K-1), (B, L, *S)
        return conv[:, i], ssm[:, i]  # (B, Dc, K-1), (B, *S)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self._embed(tokens)  # (B, T, d_model)
        convs, hs = [], []
        for i, layer in enumerate(self.layers):
            x, conv, h = self.call_layer(layer, x, *self._split(state, i))  # (B, T, d_model), (B, Dc, K-1), (B, *S)
            convs.append(conv)
            hs.append(h)
        return self._logits(x), (torch.stack(convs, 1), torch.stack(hs, 1))  # (B, T, V); (B, L, Dc, K-1), (B, L, *S)

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self._embed(tokens)  # (B, d_model)
        convs, hs = [], []
        for i, layer in enumerate(self.layers):
            x, conv, h = layer.step(x, *self._split(state, i))  # (B, d_model), (B, Dc, K-1), (B, *S)
            convs.append(conv)
            hs.append(h)
        return self._logits(x), (torch.stack(convs, 1), torch.stack(hs, 1))  # (B, V); (B, L, Dc, K-1), (B, L, *S)
