"""Mamba-2 (Dao & Gu, 2024, "Transformers are SSMs"): the SSD layer, a selective SSM with a scalar decay per head.

The algorithm follows the paper and its reference "ssd_minimal" listing (state-spaces/mamba, Apache-2.0); the
parameter names follow Hugging Face's Mamba2 (Apache-2.0) so that checkpoints could be loaded later. The code
here is written anew for this package.

    tokens -> embedding -> n_layers x [x + Mamba2Mixer(RMSNorm(x))  (+ optional x + MLP(RMSNorm(x)))]
           -> RMSNorm -> LM head (tied to the embedding)                (the shell: layers.py's RecurrentLM)

Mamba2Mixer, per token (d_inner = expand * d_model = H * P heads of head_dim P, N = d_state, one group):

    z, xBC, dt = in_proj(u)                       (d_inner,), (d_inner + 2N,), (H,)
    xBC        = silu(causal depthwise conv(xBC)) kernel d_conv, its last d_conv-1 inputs are state
    x, B, C    = xBC                              x: (H, P); B, C: (N,), shared by all heads
    dt         = softplus(dt + dt_bias)           (H,), one step size per head
    h          = exp(dt A) h + dt x B^T           h: (H, P, N); A = -exp(A_log) < 0, a SCALAR per head
    y          = h C + D x                        (H, P)
    out        = out_proj(RMSNorm(y * silu(z)))   gated RMSNorm over all of d_inner (norm after gate)

The difference from Mamba-1 (mamba.py) is the scalar A: the decay exp(dt A) is the same for every (P, N)
entry of a head's state, so the recurrence is a masked linear attention ("state space duality") and can be
computed with matmuls. The chunked SSD algorithm, with chunks of L steps and a_t = dt_t A:

    1. inside each chunk, the quadratic (attention-like) form:
           y_t += sum_{s <= t in chunk} (C_t . B_s) exp(a_{s+1} + ... + a_t) dt_s x_s
       the decays form an (L, L) triangular matrix per head, exp(segsum(a)) (layers.py; built transposed, [s, t]);
    2. each chunk's own contribution to the state at its end, from a zero start:
           S_c = sum_s exp(a_{s+1} + ... + a_end) dt_s x_s B_s^T
    3. a loop over chunks (not steps) passes the state on: h_c+1 = exp(a_1 + ... + a_end) h_c + S_c;
    4. the state entering each chunk reaches its outputs: y_t += exp(a_first + ... + a_t) C_t h_c.

Work is O(T L) for the quadratic part plus O(T N P / L) for the state passing. T need not be a multiple of L:
the last chunk is padded with dt = 0, which contributes nothing and does not decay the state, so the final
state is exact. An incoming state (prefill continuation) enters at step 3.

Stability: the segment sums are summed directly (a cumsum along one axis of a masked (L, L) matrix) rather
than formed as differences of one cumsum, which would cancel in fp32 once sum(a) over a chunk is large. Only
exponentials of sums of a <= 0 are taken, so nothing overflows.

Speed (CPU, fp32): the same algorithm as transformers' torch path, about 1.1-1.3x its training throughput (see
bench/models.py), from the layout: the (L, L) matrices are indexed [source, target] so that the cumsum runs over
contiguous memory, the causal mask multiplies C . B (one per group) instead of masking each head's decays with
masked_fill, and their gradients are made contiguous before the elementwise backward.

The optional MLP: mamba_ssm's Mamba-2 configs can interleave a gated MLP after each mixer (``d_intermediate``);
off by default (``d_ff=None``), as in the Mamba-2 language models. When on it is a SwiGLU (layers.py's MLP).

Options for loading Hugging Face / mamba_ssm checkpoints (models/hf.py), off by default: n_groups G > 1 splits
B and C into G groups, each shared by H/G consecutive heads (and the gated RMSNorm normalizes each of G slices of
d_inner separately); dt_limit clamps dt after the softplus; bias puts biases on in_proj and out_proj; eps.

State (batch first, fixed size): conv (B, n_layers, d_inner + 2GN, d_conv-1), ssm (B, n_layers, H, P, N)
(Hugging Face's layout of the SSM state).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models import kernels
from toolssm.models.base import register
from toolssm.models.layers import MLP, RecurrentLM, RMSNorm, from_chunks, to_chunks

# cpu: state per layer H * P * N = 8 * 16 * 16 = 2048 numbers, the same as the mamba and gated_deltanet cpu presets;
# chunk 16: a training step of the cpu recipe (addition, batch 32 padded to ~230 tokens, one thread, the other
# core busy) takes 205 ms at chunk 16, 207 at 32, 298 at 64: the L x L intra-chunk work shrinks faster than the
# chunk loop grows. In Figure 2's run, 2,500 steps took 583 s at chunk 16 against 853 s at 64.
PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "d_state": 16, "head_dim": 16, "expand": 2, "d_conv": 4, "d_ff": None,
            "chunk": 16},
    # Mamba-2 130M (state-spaces/mamba2-130m): 24 layers, d_model 768, d_state 128, headdim 64 (24 heads)
    "paper": {"d_model": 768, "n_layers": 24, "d_state": 128, "head_dim": 64, "expand": 2, "d_conv": 4, "d_ff": None,
              "chunk": 64},
}  # fmt: skip

CHUNK = 64


# ----------------------------------------------------------------------------------------------------------
# the SSD scan


def _triangles(L: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(L, L) 0/1 masks indexed [s, t]: t > s (strictly upper), t >= s (upper), in dtype, to multiply by."""
    up = torch.ones(L, L, dtype=torch.bool, device=device)
    return up.triu(1).to(dtype), up.triu().to(dtype)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward makes the incoming gradient contiguous: the gradient of a matrix used
    transposed in a matmul arrives transposed, and the elementwise ops and cumsum of the backward run several
    times faster on contiguous memory."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def ssd_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None, chunk: int = CHUNK
) -> tuple[Tensor, Tensor]:
    """The SSD recurrence h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t, over a sequence, chunked.

    x (B, T, H, P); dt (B, T, H) > 0; A (H,) < 0; B, C (B, T, N) shared by all heads, or (B, T, G, N) for G
    groups of H/G consecutive heads (head h reads group h // (H/G)); h0 (B, H, P, N) or None (zeros)
    -> y (B, T, H, P) (without the D skip), the state after the last step (B, H, P, N).

    The (L, L) matrices of step 1 are built transposed, indexed [s, t] (source, target), for speed on the CPU:
    the segment sums are then a cumsum along the last (contiguous) dimension, and the causal mask is a multiply
    (not a masked_fill) applied once to C_t . B_s, which is shared by all heads of a group, rather than per head.
    """
    Bsz, T, H, P = x.shape
    if B.dim() == 3:
        B, C = B[:, :, None], C[:, :, None]  # (B, T, 1, N)
    G, N = B.shape[2:]
    Hg = H // G
    L = max(1, min(chunk, T))  # a short sequence is one short chunk, not one padded chunk
    # heads as (G, H/G): the groups' B, C broadcast over their heads, never copied per head
    a = to_chunks(dt * A, L).unflatten(1, (G, Hg))  # (B, G, Hg, n, L): log-decay per step, <= 0; padding 0
    xdt = to_chunks(x * dt[..., None], L).contiguous().unflatten(1, (G, Hg))  # (B, G, Hg, n, L, P); padding 0
    Bc, Cc = to_chunks(B, L)[:, :, None], to_chunks(C, L)[:, :, None]  # (B, G, 1, n, L, N)
    n = a.shape[-2]
    strict, upper = _triangles(L, x.device, x.dtype)  # (L, L) [s, t]: t > s, t >= s

    # decay[s, t] = exp(a_{s+1} + ... + a_t) for t >= s, summed directly (see the header); 1 for t < s, where
    # the masked BC below zeroes it. Only exponentials of sums of a <= 0: nothing overflows.
    decay = torch.exp((a[..., None, :] * strict).cumsum(-1))  # (B, G, Hg, n, L, L)
    # 1. intra-chunk: y_t = sum_{s <= t} (C_t . B_s) decay[s, t] dt_s x_s
    BC = (Bc @ Cc.transpose(-1, -2)) * upper  # (B, G, 1, n, L, L): B_s . C_t for s <= t, else 0
    y = _ContiguousGrad.apply(decay * BC).transpose(-1, -2) @ xdt  # (B, G, Hg, n, L, P)
    # 2. each chunk's state at its end from a zero start: sum_s decay[s, end] dt_s x_s B_s^T
    to_end = decay[..., :, -1]  # (B, G, Hg, n, L)
    S = (xdt * to_end[..., None]).transpose(-1, -2) @ Bc  # (B, G, Hg, n, P, N)
    # 3. pass the state across chunks
    from_start = torch.exp(a.cumsum(-1))  # (B, G, Hg, n, L): exp(a_first + ... + a_t)
    whole = from_start[..., -1]  # (B, G, Hg, n): the decay over a whole chunk
    h = x.new_zeros(Bsz, G, Hg, P, N) if h0 is None else h0.unflatten(1, (G, Hg))  # (B, G, Hg, P, N)
    starts = []
    for c in range(n):  # a Python loop over chunks, not steps
        starts.append(h)
        h = whole[..., c, None, None] * h + S[..., c, :, :]  # (B, G, Hg, P, N)
    h_in = torch.stack(starts, -3)  # (B, G, Hg, n, P, N): the state entering each chunk
    # 4. the entering state's contribution: exp(a_first + ... + a_t) C_t h_in
    y = y + (Cc @ h_in.transpose(-1, -2)) * from_start[..., None]  # (B, G, Hg, n, L, P)
    return from_chunks(y.flatten(1, 2), T), h.flatten(1, 2)  # (B, T, H, P), (B, H, P, N)


def ssd_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One step. x (B, H, P); dt (B, H); A (H,); B, C (B, N) or (B, G, N) (as in ssd_chunked); h (B, H, P, N) or
    None -> y (B, H, P), h."""
    if B.dim() == 3 and B.shape[1] > 1:  # groups: each group's B, C to its H/G heads
        B, C = (t.repeat_interleave(x.shape[1] // t.shape[1], 1) for t in (B, C))  # (B, H, N)
    else:
        B, C = B.reshape(B.shape[0], 1, B.shape[-1]), C.reshape(C.shape[0], 1, C.shape[-1])  # (B, 1, N)
    dBx = (x * dt[..., None])[..., None] * B[:, :, None, :]  # (B, H, P, N)
    h = dBx if h is None else torch.exp(dt * A)[..., None, None] * h + dBx  # (B, H, P, N)
    y = (h @ C[..., None])[..., 0]  # (B, H, P)
    return y, h


def ssd_chunked_auto(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h0: Tensor | None = None,
    chunk: int = CHUNK,
    backend: str | None = None,
) -> tuple[Tensor, Tensor]:
    """ssd_chunked's contract, by device (models/kernels.py): mamba_ssm's mamba_chunk_scan_combined for CUDA tensors
    when it imports (chunk: its chunk_size), ssd_chunked otherwise. backend: auto (None), torch, cpu_fused or cuda."""
    if kernels.resolve(backend, x.device, "ssd") == "cuda":
        return kernels.cuda_ssd(x, dt, A, B, C, h0, chunk)
    return ssd_chunked(x, dt, A, B, C, h0, chunk)


def ssd_step_auto(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor | None, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """ssd_step's contract, by device: mamba_ssm's selective_state_update for CUDA tensors when it imports and no
    gradient is wanted, ssd_step otherwise."""
    if kernels.resolve(backend, x.device, "ssd_step") == "cuda":
        out = kernels.cuda_ssd_step(x, dt, A, B, C, h)
        if out is not None:
            return out
    return ssd_step(x, dt, A, B, C, h)


# ----------------------------------------------------------------------------------------------------------
# modules


class GatedRMSNorm(nn.Module):
    """RMSNorm(x * silu(z)) * weight: Mamba-2's output norm (gate before the norm), over the last dim, or over each
    of its n_groups equal slices (as many as the B, C groups: mamba_ssm's and transformers' group_size)."""

    def __init__(self, d: int, eps: float = 1e-5, n_groups: int = 1):
        super().__init__()
        self.eps, self.n_groups = eps, n_groups
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # (..., d) x2 -> (..., d)
        x = x * F.silu(z)
        if self.n_groups > 1:
            x = x.unflatten(-1, (self.n_groups, -1))  # (..., G, d/G)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x.flatten(-2) * self.weight if self.n_groups > 1 else x * self.weight


class Mamba2Mixer(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int,
        head_dim: int,
        expand: int,
        d_conv: int,
        chunk: int = CHUNK,
        n_groups: int = 1,
        eps: float = 1e-5,
        bias: bool = False,
        dt_limit: tuple[float, float] | None = None,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        backend: str | None = None,
    ):
        super().__init__()
        self.backend = None if backend is None else kernels.check(backend)  # None: auto (models/kernels.py)
        self.d_inner = d_inner = expand * d_model
        if d_inner % head_dim:
            raise ValueError(f"d_inner = expand * d_model = {d_inner} is not a multiple of head_dim={head_dim}")
        self.n_heads = n_heads = d_inner // head_dim
        if n_heads % n_groups:
            raise ValueError(f"the {n_heads} heads (expand * d_model / head_dim) do not split into {n_groups} groups")
        self.head_dim, self.n_groups = head_dim, n_groups
        self.d_state, self.d_conv, self.chunk = d_state, d_conv, chunk
        self.dt_limit = None if dt_limit is None else (float(dt_limit[0]), float(dt_limit[1]))
        self.conv_dim = conv_dim = d_inner + 2 * n_groups * d_state

        self.in_proj = nn.Linear(d_model, d_inner + conv_dim + n_heads, bias=bias)  # z, xBC, dt
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim)  # unpadded: the state gives the past
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm = GatedRMSNorm(d_inner, eps, n_groups)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

        with torch.no_grad():  # as mamba_ssm's Mamba2
            # dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
            dt = torch.exp(torch.rand(n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)  # (H,)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            self.A_log.copy_(torch.log(torch.empty(n_heads).uniform_(*A_init_range)))  # A in -[1, 16]

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # (..., 2Di + 2N + H)
        return zxbcdt.split([self.d_inner, self.conv_dim, self.n_heads], -1)  # (..., Di), (..., Dc), (..., H)

    def _ssm_inputs(self, xBC: Tensor, dt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """xBC (..., Dc) after the conv; dt (..., H) raw -> x (..., H, P), dt (..., H), A (H,), B, C (..., N) with
        one group, else (..., G, N)."""
        GN = self.n_groups * self.d_state
        x, B, C = xBC.split([self.d_inner, GN, GN], -1)  # (..., Di), (..., G N) x2
        x = x.unflatten(-1, (self.n_heads, self.head_dim))  # (..., H, P)
        if self.n_groups > 1:
            B, C = B.unflatten(-1, (self.n_groups, self.d_state)), C.unflatten(-1, (self.n_groups, self.d_state))
        dt = F.softplus(dt + self.dt_bias)  # (..., H)
        if self.dt_limit is not None:  # transformers' and mamba_ssm's time_step_limit / dt_limit
            dt = dt.clamp(*self.dt_limit)
        return x, dt, -torch.exp(self.A_log), B, C  # ..., (..., H), (H,), ...

    def forward(self, u: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, T, d_model); conv (B, Dc, d_conv-1) or None; h (B, H, P, N) or None -> out, conv, h."""
        z, xBC, dt = self._split(self.in_proj(u))  # (B, T, Di), (B, T, Dc), (B, T, H)
        # silu(causal conv); conv: the last d_conv-1 inputs (B, Dc, K-1)
        xBC, conv = kernels.causal_conv1d(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, conv, self.backend)
        x, dt, A, B, C = self._ssm_inputs(xBC, dt)  # (B, T, H, P), (B, T, H), (H,), (B, T, N) x2
        y, h = ssd_chunked_auto(x, dt, A, B, C, h, self.chunk, self.backend)  # (B, T, H, P), (B, H, P, N)
        y = (y + self.D[:, None] * x).flatten(2)  # (B, T, Di)
        return self.out_proj(self.norm(y, z)), conv, h  # (B, T, d_model)

    def step(self, u: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, d_model); conv (B, Dc, d_conv-1) or None; h (B, H, P, N) or None -> out, conv, h."""
        z, xBC, dt = self._split(self.in_proj(u))  # (B, Di), (B, Dc), (B, H)
        xBC, conv = kernels.causal_conv1d_step(xBC, self.conv1d.weight[:, 0], self.conv1d.bias, conv, self.backend)
        x, dt, A, B, C = self._ssm_inputs(xBC, dt)  # (B, H, P), (B, H), (H,), (B, N) x2
        y, h = ssd_step_auto(x, dt, A, B, C, h, self.backend)  # (B, H, P), (B, H, P, N)
        y = (y + self.D[:, None] * x).flatten(1)  # (B, Di)
        return self.out_proj(self.norm(y, z)), conv, h  # (B, d_model)


class Block(nn.Module):
    """x + mixer(norm(x)), then, if d_ff is set, x + mlp(norm2(x)) (mamba_ssm's Block names)."""

    def __init__(self, d_model: int, d_ff: int | None, eps: float = 1e-5, **mixer_kwargs):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = Mamba2Mixer(d_model, eps=eps, **mixer_kwargs)
        self.norm2 = None if d_ff is None else RMSNorm(d_model, eps)
        self.mlp = None if d_ff is None else MLP(d_model, d_ff)

    def _mlp(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., d_model)
        return x if self.mlp is None else x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.mixer(self.norm(x), conv, h)  # (B, T, d_model)
        return self._mlp(x + y), conv, h

    def step(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.mixer.step(self.norm(x), conv, h)  # (B, d_model)
        return self._mlp(x + y), conv, h


@register("mamba2", PRESETS)
class Mamba2(RecurrentLM):
    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        d_state: int = 128,
        head_dim: int = 64,
        expand: int = 2,
        d_conv: int = 4,
        d_ff: int | None = None,
        chunk: int = CHUNK,
        tie_embeddings: bool = True,
        n_groups: int = 1,
        eps: float = 1e-5,
        bias: bool = False,
        dt_limit: tuple[float, float] | None = None,
        backend: str | None = None,
    ):
        """n_groups: B, C groups (each shared by n_heads / n_groups heads; the gated norm per group too); eps: the
        RMSNorms' epsilon; bias: in_proj and out_proj biases; dt_limit: clamp dt (after the softplus) to
        [lo, hi], in the forward and in step alike. These four exist for loading Hugging Face checkpoints
        (models/hf.py); the defaults are this package's Mamba-2. backend: which kernels run (models/kernels.py;
        default auto)."""
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        mixer = {"d_state": d_state, "head_dim": head_dim, "expand": expand, "d_conv": d_conv, "chunk": chunk,
                 "n_groups": n_groups, "bias": bias, "dt_limit": dt_limit, "backend": backend}  # fmt: skip
        self.layers = nn.ModuleList(Block(d_model, d_ff, eps, **mixer) for _ in range(n_layers))
        self.norm_f = RMSNorm(d_model, eps)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        with torch.no_grad():
            # mamba_ssm: scale each residual branch's output by 1/sqrt(residuals per layer * n_layers)
            s = math.sqrt((1 if d_ff is None else 2) * n_layers)
            for layer in self.layers:
                layer.mixer.out_proj.weight /= s
                if layer.mlp is not None:
                    layer.mlp.down_proj.weight /= s
