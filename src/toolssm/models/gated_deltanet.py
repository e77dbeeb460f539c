"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2024): a linear-attention RNN with a gated delta-rule update.

The layer follows flash-linear-attention's GatedDeltaNet (fla, MIT) and its pure-PyTorch chunked reference in
Hugging Face's Qwen3-Next (Apache-2.0); module names follow fla's so that checkpoints could be loaded later.
The code here is written anew for this package.

    tokens -> embeddings -> n_layers x [x + attn(attn_norm(x)); x + mlp(mlp_norm(x))] -> norm -> lm_head (untied)

(the shell around the blocks is layers.py's RecurrentLM)

fla's GatedDeltaNetBlock: every layer is a GDN mixer and a SwiGLU MLP, as in a Transformer block.

The mixer, per token, with H heads of key width K = head_dim and value width V = expand_v * head_dim:

    q, k, v = silu(causal depthwise conv(q_proj(x), k_proj(x), v_proj(x)))    kernel d_conv, no bias
    q, k    = l2norm(q) / sqrt(K), l2norm(k)                                  per head
    beta    = sigmoid(b_proj(x))                                              (H,), the delta-rule step size
    g       = -exp(A_log) * softplus(a_proj(x) + dt_bias)                     (H,), log of the decay, <= 0
    S       = exp(g) S (I - beta k k^T) + beta v k^T                          S: (V, K) per head
    o       = S q
    out     = o_proj(RMSNorm(o) * silu(g_proj(x)))                            the norm per head, then the gate

The state is stored transposed, h = S^T (K, V) per head (fla's layout); one step is then

    h <- exp(g) h;   u = beta (v - h^T k);   h <- h + k u^T;   o = h^T q.

The chunked form (chunks of L steps; all chunks at once except one matmul-sized loop over chunks). Inside a
chunk write G_t = g_1 + ... + g_t (from the chunk's start) and Gam[t, s] = exp(G_t - G_s) for s <= t. With the
state h_0 entering the chunk, unrolling the step gives, for the "pseudo-values" u_t,

    u_t + beta_t sum_{s<t} Gam[t, s] (k_t . k_s) u_s = beta_t v_t - beta_t exp(G_t) h_0^T k_t,

a unit lower-triangular system (I + A) U = diag(beta) V - diag(beta exp(G)) K h_0 (the WY / UT form). Its two
right-hand sides do not depend on h_0, so one triangular solve per chunk, for all chunks in parallel, gives

    U~ = (I + A)^-1 diag(beta) V,   W = (I + A)^-1 diag(beta exp(G)) K,   U = U~ - W h_0.

Then a loop over chunks passes the state on, h_end = exp(G_end) h_0 + sum_s exp(G_end - G_s) k_s u_s^T, and
after the loop the outputs of all chunks come at once:

    o_t = exp(G_t) h_0^T q_t + sum_{s<=t} Gam[t, s] (q_t . k_s) u_s.

T need not be a multiple of L: padded steps have beta = 0 and g = 0, so their u is 0 and they neither write to
nor decay the state. An incoming state is h_0 of the first chunk. The decays exp(G_t - G_s) are taken from a
direct segment sum (layers.segsum), not a difference of cumsums, for fp32 accuracy.

State (batch first, fixed size): conv (B, n_layers, 2 H K + H V, d_conv-1), the inputs of the q, k, v convs
in that order; ssm (B, n_layers, H, K, V).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models import kernels
from toolssm.models.base import register
from toolssm.models.layers import MLP, RecurrentLM, RMSNorm, from_chunks, normal_init, segsum, to_chunks

# cpu: state per layer H * K * V = 4 * 16 * 32 = 2048 numbers, the same as the mamba and mamba2 cpu presets;
# d_ff 256 as the cpu Transformers (pythia, mistral); chunk 32: a training step of the cpu recipe (addition, batch
# 32 padded to ~230 tokens, one thread, the other core busy) takes 336 ms at chunk 32 against 436 at 64; in
# Figure 2's run, 2,500 steps took 1,208 s at chunk 32 against 1,306 s at 64 (the rest of the step dominates).
# paper: a ~130M model (our choice; the GDN paper trains at 0.4B and 1.3B): 12 blocks of GDN + SwiGLU MLP
# (each block ~ two Mamba layers' parameters), d_model 768, 6 heads of key width 128 (value 256), d_ff 2048
# (fla's 8/3 * d_model): 113M parameters besides the embeddings (Mamba-130M's 24 layers: 90M).
PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "n_heads": 4, "head_dim": 16, "d_conv": 4, "d_ff": 256, "chunk": 32},
    "paper": {"d_model": 768, "n_layers": 12, "n_heads": 6, "head_dim": 128, "d_conv": 4, "d_ff": 2048,
              "chunk": 64},
}  # fmt: skip

CHUNK = 64


# ----------------------------------------------------------------------------------------------------------
# the gated delta rule


def chunk_gated_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, h0: Tensor | None = None, chunk: int = CHUNK
) -> tuple[Tensor, Tensor]:
    """The gated delta rule over a sequence, chunked (see the header). q, k are used as given (normalized, scaled).

    q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) <= 0; beta (B, T, H); h0 (B, H, K, V) or None (zeros)
    -> o (B, T, H, V), the state after the last step (B, H, K, V).
    """
    Bsz, T, H, Kd = k.shape
    L = max(1, min(chunk, T))  # a short sequence is one short chunk, not one padded chunk
    q, k, v = to_chunks(q, L), to_chunks(k, L), to_chunks(v, L)  # (B, H, n, L, K) x2, (B, H, n, L, V)
    g, beta = to_chunks(g, L), to_chunks(beta, L)  # (B, H, n, L) x2; padding: g = 0, beta = 0
    n = g.shape[2]

    gam = torch.exp(segsum(g))  # (B, H, n, L, L): exp(G_t - G_s), 0 above the diagonal
    G = torch.exp(g.cumsum(-1))  # (B, H, n, L): exp(G_t), the decay since the chunk's start
    # the WY form: (I + A) [U~ | W] = [diag(beta) V | diag(beta exp(G)) K]
    A = (k @ k.transpose(-1, -2)) * gam * beta[..., None]  # (B, H, n, L, L): beta_t Gam[t, s] k_t . k_s
    eye = torch.eye(L, dtype=k.dtype, device=k.device)  # (L, L)
    IA = A.tril(-1) + eye  # (B, H, n, L, L) unit lower triangular
    rhs = torch.cat([v * beta[..., None], k * (beta * G)[..., None]], -1)  # (B, H, n, L, V+K)
    Ut, W = torch.linalg.solve_triangular(IA, rhs, upper=False, unitriangular=True).split([v.shape[-1], Kd], -1)
    # (B, H, n, L, V), (B, H, n, L, K)
    k_end = k * gam[..., -1, :, None]  # (B, H, n, L, K): exp(G_end - G_s) k_s
    whole = G[..., -1]  # (B, H, n): the decay over a whole chunk
    h = k.new_zeros(Bsz, H, Kd, v.shape[-1]) if h0 is None else h0  # (B, H, K, V)
    starts, us = [], []
    for c in range(n):  # a Python loop over chunks, not steps
        starts.append(h)
        u = Ut[:, :, c] - W[:, :, c] @ h  # (B, H, L, V): the pseudo-values given the entering state
        us.append(u)
        h = whole[:, :, c, None, None] * h + k_end[:, :, c].transpose(-1, -2) @ u  # (B, H, K, V)
    U, h_in = torch.stack(us, 2), torch.stack(starts, 2)  # (B, H, n, L, V), (B, H, n, K, V)
    o = (q * G[..., None]) @ h_in + ((q @ k.transpose(-1, -2)) * gam) @ U  # (B, H, n, L, V)
    return from_chunks(o, T), h  # (B, T, H, V), (B, H, K, V)


def gated_delta_step(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One step. q, k (B, H, K); v (B, H, V); g, beta (B, H); h (B, H, K, V) or None -> o (B, H, V), h."""
    if h is None:
        h = k.new_zeros(*k.shape, v.shape[-1])  # (B, H, K, V)
    h = torch.exp(g)[..., None, None] * h  # (B, H, K, V)
    u = beta[..., None] * (v - (k[..., None, :] @ h)[..., 0, :])  # (B, H, V): beta (v - h^T k)
    h = h + k[..., :, None] * u[..., None, :]  # (B, H, K, V)
    return (q[..., None, :] @ h)[..., 0, :], h  # (B, H, V): h^T q


def chunk_gated_delta_rule_auto(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    h0: Tensor | None = None,
    chunk: int = CHUNK,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """chunk_gated_delta_rule's contract, by device (models/kernels.py): fla's chunk_gated_delta_rule for CUDA
    fp16/bf16 tensors when it imports (its own chunk length), chunk_gated_delta_rule otherwise."""
    if kernels.resolve(backend, q.device, "gated_delta") == "cuda":
        out = kernels.cuda_gated_delta(q, k, v, g, beta, h0)
        if out is not None:
            return out
    return chunk_gated_delta_rule(q, k, v, g, beta, h0, chunk)


def gated_delta_step_auto(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, h: Tensor | None, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """gated_delta_step's contract, by device: fla's fused_recurrent_gated_delta_rule for CUDA tensors when it
    imports and no gradient is wanted, gated_delta_step otherwise."""
    if kernels.resolve(backend, q.device, "gated_delta_step") == "cuda":
        out = kernels.cuda_gated_delta_step(q, k, v, g, beta, h)
        if out is not None:
            return out
    return gated_delta_step(q, k, v, g, beta, h)


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:  # (..., d) -> (..., d), unit length
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


# ----------------------------------------------------------------------------------------------------------
# modules


class GatedRMSNorm(nn.Module):
    """RMSNorm(x) * weight * silu(z): fla's FusedRMSNormGated (norm before the gate), over the last dim."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # (..., d) x2 -> (..., d)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight * F.silu(z)


class GatedDeltaNetMixer(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int,
        expand_v: int = 2,
        d_conv: int = 4,
        chunk: int = CHUNK,
        eps: float = 1e-6,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        backend: str | None = None,
    ):
        super().__init__()
        self.backend = None if backend is None else kernels.check(backend)  # None: auto (models/kernels.py)
        self.n_heads, self.head_k_dim, self.head_v_dim = n_heads, head_dim, expand_v * head_dim
        self.key_dim, self.value_dim = key_dim, value_dim = n_heads * head_dim, n_heads * expand_v * head_dim
        self.conv_dim = 2 * key_dim + value_dim
        self.d_conv, self.chunk = d_conv, chunk

        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False)
        self.b_proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        # unpadded short convs (the state gives the past); applied as one conv over [q | k | v]
        self.q_conv1d = nn.Conv1d(key_dim, key_dim, d_conv, groups=key_dim, bias=False)
        self.k_conv1d = nn.Conv1d(key_dim, key_dim, d_conv, groups=key_dim, bias=False)
        self.v_conv1d = nn.Conv1d(value_dim, value_dim, d_conv, groups=value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, value_dim, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

        with torch.no_grad():  # as fla's GatedDeltaNet
            self.A_log.copy_(torch.log(torch.empty(n_heads).uniform_(0, 16)))  # decay rate in (0, 16)
            dt = torch.exp(torch.rand(n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)  # (H,)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def _conv_weight(self) -> Tensor:  # (Dc, K): the three depthwise kernels, stacked
        return torch.cat([self.q_conv1d.weight, self.k_conv1d.weight, self.v_conv1d.weight], 0)[:, 0]

    def _inputs(self, x: Tensor, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (..., d_model); qkv (..., Dc) after the conv -> q, k (..., H, K), v (..., H, V), g, beta (..., H)."""
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], -1)  # (..., HK) x2, (..., HV)
        q = l2norm(q.unflatten(-1, (self.n_heads, self.head_k_dim))) * self.head_k_dim**-0.5  # (..., H, K)
        k = l2norm(k.unflatten(-1, (self.n_heads, self.head_k_dim)))  # (..., H, K)
        v = v.unflatten(-1, (self.n_heads, self.head_v_dim))  # (..., H, V)
        g = -torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias)  # (..., H)
        return q, k, v, g, torch.sigmoid(self.b_proj(x))  # ..., (..., H), (..., H)

    def _out(self, x: Tensor, o: Tensor) -> Tensor:  # x (..., d_model); o (..., H, V) -> (..., d_model)
        gate = self.g_proj(x).unflatten(-1, (self.n_heads, self.head_v_dim))  # (..., H, V)
        return self.o_proj(self.o_norm(o, gate).flatten(-2))  # (..., d_model)

    def _qkv(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., Dc), before the conv
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1)

    def forward(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d_model); conv (B, Dc, d_conv-1) or None; h (B, H, K, V) or None -> out, conv, h."""
        # silu(causal conv); conv: the last d_conv-1 inputs (B, Dc, K-1)
        qkv, conv = kernels.causal_conv1d(self._qkv(x), self._conv_weight(), None, conv, self.backend)  # (B, T, Dc)
        q, k, v, g, beta = self._inputs(x, qkv)  # (B, T, H, K) x2, (B, T, H, V), (B, T, H) x2
        o, h = chunk_gated_delta_rule_auto(q, k, v, g, beta, h, self.chunk, self.backend)  # (B, T, H, V), (B, H, K, V)
        return self._out(x, o), conv, h  # (B, T, d_model)

    def step(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, d_model); conv (B, Dc, d_conv-1) or None; h (B, H, K, V) or None -> out, conv, h."""
        qkv, conv = kernels.causal_conv1d_step(self._qkv(x), self._conv_weight(), None, conv, self.backend)  # (B, Dc)
        q, k, v, g, beta = self._inputs(x, qkv)  # (B, H, K) x2, (B, H, V), (B, H) x2
        o, h = gated_delta_step_auto(q, k, v, g, beta, h, self.backend)  # (B, H, V), (B, H, K, V)
        return self._out(x, o), conv, h  # (B, d_model)


class Block(nn.Module):
    """x + attn(attn_norm(x)); x + mlp(mlp_norm(x)) (fla's GatedDeltaNetBlock names)."""

    def __init__(self, d_model: int, d_ff: int, eps: float, **mixer_kwargs):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = GatedDeltaNetMixer(d_model, eps=eps, **mixer_kwargs)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = MLP(d_model, d_ff)

    def forward(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.attn(self.attn_norm(x), conv, h)  # (B, T, d_model)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), conv, h

    def step(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.attn.step(self.attn_norm(x), conv, h)  # (B, d_model)
        x = x + y
        return x + self.mlp(self.mlp_norm(x)), conv, h


@register("gated_deltanet", PRESETS)
class GatedDeltaNet(RecurrentLM):
    parts = ("embeddings", "norm", "lm_head")

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        head_dim: int,
        d_ff: int,
        d_conv: int = 4,
        expand_v: int = 2,
        chunk: int = CHUNK,
        eps: float = 1e-6,
        backend: str | None = None,
    ):
        """backend: which kernels run (models/kernels.py; default auto)."""
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, d_model)
        mixer = {"n_heads": n_heads, "head_dim": head_dim, "expand_v": expand_v, "d_conv": d_conv, "chunk": chunk,
                 "backend": backend}  # fmt: skip
        self.layers = nn.ModuleList(Block(d_model, d_ff, eps, **mixer) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        # fla: normal(0.02) weights; the residual outputs (o_proj, down_proj) scaled by 1/sqrt(2 n_layers)
        normal_init(self, [w for layer in self.layers for w in (layer.attn.o_proj.weight, layer.mlp.down_proj.weight)],
                    math.sqrt(2 * n_layers))
