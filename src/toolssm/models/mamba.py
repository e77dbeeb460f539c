"""Mamba-1 (Gu & Dao, 2023) in pure PyTorch: a selective state-space model, the paper's main GSSM.

Layout follows alxndrTL/mamba.py (MIT): one file, each module has a parallel ``forward`` and an O(1) ``step``.
The initializations follow state-spaces/mamba (Apache-2.0). The code here is written anew for this package.

    tokens -> embedding -> n_layers x [x + MambaBlock(RMSNorm(x))] -> RMSNorm -> LM head (tied to the embedding)

(the shell around the blocks, embedding, layer loop, final norm and head, is layers.py's RecurrentLM)

MambaBlock, per token (d_inner = expand * d_model, N = d_state):

    x, z   = in_proj(u)                          two (d_inner,) halves
    x      = silu(causal depthwise conv(x))      kernel d_conv, its last d_conv-1 inputs are state
    dt,B,C = x_proj(x)                           dt low rank (dt_rank = ceil(d_model/16)), B, C: (N,)
    dt     = softplus(dt_proj(dt))               (d_inner,), one step size per channel
    h      = exp(dt * A) * h + (dt * x) B        h: (d_inner, N); A = -exp(A_log) < 0
    y      = h C + D * x
    out    = out_proj(y * silu(z))

The parallel scan. Mamba-1's decay exp(dt * A) differs for every (channel, state) pair, so the chunked
"masked segment-sum" form of Mamba-2 would need an (L, L, d_inner, N) tensor per chunk: L times the work of
the recurrence. Instead the linear recurrence h_t = a_t h_{t-1} + b_t is solved by an associative scan on
(a, b) pairs, chunked:

    1. cut time into chunks of CHUNK steps (the last one may be shorter);
    2. inside a chunk, a Hillis-Steele scan: log2(CHUNK) doubling rounds, each a multiply-add over the whole
       chunk, giving each step's state from a zero start and the decay accumulated since the chunk's start;
    3. a Python loop over chunks (not steps) carries the state across: h = local + decay * h_in.

Work is O(T log CHUNK), with no Python loop over time steps. Only products of decays in (0, 1] are formed,
never a division or an exp of a positive number, so it is as stable in fp32 as the sequential recurrence.

Memory. The (B, T, d_inner, N) tensors of decays and states are never built for the whole sequence: the scan
is one autograd function that works chunk by chunk, keeps the inputs (x, dt, B, C: (B, T, d_inner) or
(B, T, N)) and one state per chunk, and in backward recomputes each chunk's states and runs the adjoint
recurrence g_t = dL/dh_t + a_{t+1} g_{t+1} through it, the same scan backwards in time. A chunk's tensors
stay in the CPU cache, so a short chunk is fastest here: a training step of the cpu preset took about a
quarter of the time of one scan over the whole sequence at once. On a GPU a longer chunk would mean fewer
kernel launches (untested; pass ``chunk``).

Which scan runs (toolssm.models.kernels has the rule for every op). `selective_scan` below is the reference. For
CPU float32 tensors the blocks use instead the fused numba kernel of toolssm.models.scan_cpu: the same results up
to fp32 rounding, no (B, T, d_inner, N) tensor at all, and a training step of the cpu preset (B=32, T=240, 1
thread) about 3x faster. On CUDA tensors, when mamba_ssm imports, its selective_scan_fn (and for `step` its
selective_state_update; causal_conv1d's kernels for the convolution). Anything else (float64, no numba, no
package) uses the reference. ``SCAN = "torch"`` here, or ``Mamba(..., backend="torch")``, forces the reference;
``"cpu_fused"`` (or its old name ``"fused"``) insists on the CPU kernel, ``"cuda"`` on the GPU packages. On CPU,
decoding (`step`) is the same in both: selective_step below (a fused numba step was no faster: its call overhead
is as large as the few tensor operations it would replace).

State (batch first, fixed size): conv (B, n_layers, d_inner, d_conv-1), ssm (B, n_layers, d_inner, d_state).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolssm.models import kernels
from toolssm.models.base import register
from toolssm.models.layers import RecurrentLM, RMSNorm

PRESETS = {
    "cpu": {"d_model": 64, "n_layers": 2, "d_state": 16, "d_conv": 4, "expand": 2},
    "paper": {"d_model": 768, "n_layers": 24, "d_state": 16, "d_conv": 4, "expand": 2},  # Mamba-130M
}

CHUNK = 8  # scan chunk length: on 1 CPU thread (B=32, T=240) 4 to 8 is fastest, 16 +20%, 64 +150%

SCAN = "auto"  # the blocks' default backend: auto, torch, cpu_fused (old name: fused) or cuda (models/kernels.py)
SCANS = (*kernels.BACKENDS, "fused")


# ----------------------------------------------------------------------------------------------------------
# the scan


def _scan_(a: Tensor, b: Tensor, reverse: bool = False) -> None:
    """In place, along dim 1 from a zero start: b_t <- all of h_t = a_t h_{t-1} + b_t, a_t <- a_t a_{t-1} ... a_0.

    reverse: h_t = a_t h_{t+1} + b_t, and a_t <- a_t a_{t+1} ... a_{l-1}. a, b: (B, l, ...).
    Hillis-Steele: after the round with offset k, position t has combined the 2k steps ending (starting) at t.
    """
    k, n = 1, a.shape[1]
    while k < n:
        if reverse:
            b[:, :-k] += a[:, :-k] * b[:, k:]  # (B, l-k, ...); the product is built before the write
            a[:, :-k] = a[:, :-k] * a[:, k:]  # (B, l-k, ...)
        else:
            b[:, k:] += a[:, k:] * b[:, :-k]  # (B, l-k, ...)
            a[:, k:] = a[:, k:] * a[:, :-k]  # (B, l-k, ...)
        k *= 2


def _chunk_states(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk's decays and states. x, dt: (B, l, Di); A: (Di, N); B: (B, l, N); h: state before (B, Di, N).

    -> dA (B, l, Di, N) the decays, dBx (B, l, Di, N) the inputs, H (B, l, Di, N) the state after each step.
    """
    dA = torch.exp(dt[..., None] * A)  # (B, l, Di, N), in (0, 1]
    dBx = (dt * x)[..., None] * B[:, :, None, :]  # (B, l, Di, N)
    cum, H = dA.clone(), dBx.clone()  # (B, l, Di, N) x2
    _scan_(cum, H)  # H: states from a zero start; cum: decay since the chunk's start
    H += cum * h[:, None]  # (B, l, Di, N)
    return dA, dBx, H


def _chunk_states_fwd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, h: Tensor) -> Tensor:
    """_chunk_states' H alone, without keeping dA and dBx (two copies fewer)."""
    cum = torch.exp(dt[..., None] * A)  # (B, l, Di, N)
    H = (dt * x)[..., None] * B[:, :, None, :]  # (B, l, Di, N)
    _scan_(cum, H)
    H += cum * h[:, None]  # (B, l, Di, N)
    return H


class _SelectiveScan(torch.autograd.Function):
    """y, h_T of the selective SSM, chunk by chunk; see selective_scan. Saves the inputs and one state per chunk;
    the backward recomputes each chunk's states and runs the adjoint recurrence backwards through it."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, chunk):
        Bsz, T, Di = x.shape
        h = x.new_zeros(Bsz, Di, A.shape[1]) if h0 is None else h0  # (B, Di, N)
        ys, starts = [], []
        for s in range(0, T, chunk):  # a Python loop over chunks, not steps
            e = min(s + chunk, T)
            starts.append(h)
            H = _chunk_states_fwd(x[:, s:e], dt[:, s:e], A, B[:, s:e], h)  # (B, l, Di, N)
            ys.append((H * C[:, s:e, None, :]).sum(-1))  # (B, l, Di): sum_n H C
            h = H[:, -1].clone()  # (B, Di, N)
        y = torch.cat(ys, 1) + D * x  # (B, T, Di)
        ctx.chunk, ctx.has_h0 = chunk, h0 is not None
        ctx.save_for_backward(x, dt, A, B, C, D, torch.stack(starts, 1))  # ..., (B, n_chunks, Di, N)
        return y, h

    @staticmethod
    def backward(ctx, gy, gh):
        x, dt, A, B, C, D, starts = ctx.saved_tensors
        Bsz, T, Di = x.shape
        gy = torch.zeros_like(x) if gy is None else gy  # (B, T, Di)
        gx, gdt = torch.empty_like(x), torch.empty_like(x)  # (B, T, Di)
        gB, gC = torch.empty_like(B), torch.empty_like(C)  # (B, T, N)
        gA = torch.zeros_like(A)  # (Di, N)
        carry = torch.zeros_like(starts[:, 0]) if gh is None else gh  # (B, Di, N): dL/d(state at chunk end)
        for c in reversed(range(starts.shape[1])):
            s, e = c * ctx.chunk, min((c + 1) * ctx.chunk, T)
            xc, dtc, Bc, Cc, gyc = x[:, s:e], dt[:, s:e], B[:, s:e], C[:, s:e], gy[:, s:e]  # (B, l, .)
            h_in = starts[:, c]  # (B, Di, N)
            dA, dBx, H = _chunk_states(xc, dtc, A, Bc, h_in)  # (B, l, Di, N) x3
            gC[:, s:e] = (H * gyc[..., None]).sum(-2)  # (B, l, N)
            # adjoint: g_t = dL/dh_t in total = gy_t C_t + dA_{t+1} g_{t+1}; the carry enters at the chunk end
            g = gyc[..., None] * Cc[:, :, None, :]  # (B, l, Di, N)
            a_next = torch.cat([dA[:, 1:], torch.ones_like(dA[:, :1])], 1)  # (B, l, Di, N)
            _scan_(a_next, g, reverse=True)
            g += a_next * carry[:, None]  # (B, l, Di, N) = dL/d(dBx)
            g_dtA = g * (H - dBx)  # (B, l, Di, N): dL/d(dt A) = g_t dA_t h_{t-1}, and dA_t h_{t-1} = h_t - dBx_t
            gBx = (g * Bc[:, :, None, :]).sum(-1)  # (B, l, Di): sum_n g B
            gdt[:, s:e] = (g_dtA * A).sum(-1) + gBx * xc  # (B, l, Di)
            gx[:, s:e] = gBx * dtc + gyc * D  # (B, l, Di)
            gB[:, s:e] = (g * (dtc * xc)[..., None]).sum(-2)  # (B, l, N)
            gA += (g_dtA * dtc[..., None]).sum((0, 1))  # (Di, N)
            carry = dA[:, 0] * g[:, 0]  # (B, Di, N): dL/dh_in
        gD = (gy * x).sum((0, 1))  # (Di,)
        return gx, gdt, gA, gB, gC, gD, carry if ctx.has_h0 else None, None


def selective_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None, chunk: int = CHUNK
) -> tuple[Tensor, Tensor]:
    """The selective SSM over a sequence, in parallel.

    x, dt: (B, T, Di); A: (Di, N); B, C: (B, T, N); D: (Di,); h0: (B, Di, N) or None (zeros)
    -> y (B, T, Di), the state after the last step (B, Di, N).
    """
    return _SelectiveScan.apply(x, dt, A, B, C, D, h0, max(1, chunk))


def selective_scan_auto(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
    chunk: int = CHUNK, impl: str | None = None,
) -> tuple[Tensor, Tensor]:
    """selective_scan's contract, by device (models/kernels.py): the fused CPU kernel (toolssm.models.scan_cpu) for
    CPU float32 tensors, mamba_ssm's kernel for CUDA tensors when it imports, the PyTorch reference otherwise.
    impl: the backend, auto (default: the module's SCAN), torch (the reference always), cpu_fused or its old name
    fused (the CPU kernel, an error if it cannot run) or cuda. chunk: the reference's chunk length."""
    impl = SCAN if impl is None else impl
    backend = kernels.resolve(impl, x.device, "selective_scan", cpu_fused=True)
    if backend == "cuda":
        out = kernels.cuda_selective_scan(x, dt, A, B, C, D, h0)
        if out is not None:
            return out
    elif backend == "cpu_fused":
        from toolssm.models import scan_cpu  # numba itself is imported there on first use

        if scan_cpu.supports(x, dt, A, B, C, D, h0):
            return scan_cpu.selective_scan_cpu(x, dt, A, B, C, D, h0)
        if kernels.check(impl) == "cpu_fused":
            raise RuntimeError(
                f"the fused scan needs numba installed, CPU float32 tensors and d_state <= {scan_cpu.MAX_STATE}"
            )
    return selective_scan(x, dt, A, B, C, D, h0, chunk)


def selective_step_auto(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h: Tensor | None, impl: str | None = None
) -> tuple[Tensor, Tensor]:
    """selective_step's contract, by device: mamba_ssm's selective_state_update for CUDA tensors when it imports and
    no gradient is wanted, selective_step otherwise. impl: the backend, as in selective_scan_auto."""
    if kernels.resolve(SCAN if impl is None else impl, x.device, "selective_step") == "cuda":
        out = kernels.cuda_selective_step(x, dt, A, B, C, D, h)
        if out is not None:
            return out
    return selective_step(x, dt, A, B, C, D, h)


def selective_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One step of the selective SSM. x, dt: (B, Di); A: (Di, N); B, C: (B, N); D: (Di,); h: (B, Di, N)."""
    dA = torch.exp(dt[..., None] * A)  # (B, Di, N)
    dBx = (dt * x)[..., None] * B[:, None, :]  # (B, Di, N)
    h = dBx if h is None else dA * h + dBx  # (B, Di, N)
    y = (h * C[:, None, :]).sum(-1) + D * x  # (B, Di)
    return y, h


# ----------------------------------------------------------------------------------------------------------
# modules


class MambaBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: int,
        n_layers: int,
        chunk: int = CHUNK,
        backend: str | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        dt_rank: int | None = None,
        bias: bool = False,
    ):
        super().__init__()
        self.d_inner = d_inner = expand * d_model
        self.d_state, self.d_conv, self.chunk = d_state, d_conv, chunk
        self.backend = None if backend is None else kernels.check(backend)  # None: the module's SCAN at call time
        self.dt_rank = dt_rank = dt_rank or math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner)  # unpadded: the state gives the past
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

        with torch.no_grad():
            # dt_proj: weights U(+-dt_rank^-0.5); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
            s = dt_rank**-0.5
            self.dt_proj.weight.uniform_(-s, s)
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)  # (Di,)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            # GPT-2 style: scale the residual branch's output by 1/sqrt(n_layers)
            self.out_proj.weight /= math.sqrt(n_layers)
            if bias:
                self.in_proj.bias.zero_()
                self.out_proj.bias.zero_()

    def _ssm_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # x (..., Di)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], -1)  # (..., R), (..., N) x2
        return F.softplus(self.dt_proj(dt)), B, C  # (..., Di), (..., N), (..., N)

    def forward(self, u: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, T, d_model); conv (B, Di, d_conv-1) or None; h (B, Di, N) or None -> out, conv, h."""
        backend = SCAN if self.backend is None else self.backend
        x, z = self.in_proj(u).chunk(2, -1)  # (B, T, Di) x2
        # silu(causal conv); conv: the last d_conv-1 inputs (B, Di, K-1)
        x, conv = kernels.causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, conv, backend)  # (B, T, Di)
        dt, B, C = self._ssm_params(x)  # (B, T, Di), (B, T, N), (B, T, N)
        A = -torch.exp(self.A_log)  # (Di, N)
        y, h = selective_scan_auto(x, dt, A, B, C, self.D, h, self.chunk, backend)  # (B, T, Di), (B, Di, N)
        return self.out_proj(y * F.silu(z)), conv, h  # (B, T, d_model)

    def step(self, u: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """u (B, d_model); conv (B, Di, d_conv-1) or None; h (B, Di, N) or None -> out, conv, h."""
        backend = SCAN if self.backend is None else self.backend
        x, z = self.in_proj(u).chunk(2, -1)  # (B, Di) x2
        x, conv = kernels.causal_conv1d_step(x, self.conv1d.weight[:, 0], self.conv1d.bias, conv, backend)  # (B, Di)
        dt, B, C = self._ssm_params(x)  # (B, Di), (B, N), (B, N)
        A = -torch.exp(self.A_log)  # (Di, N)
        y, h = selective_step_auto(x, dt, A, B, C, self.D, h, backend)  # (B, Di), (B, Di, N)
        return self.out_proj(y * F.silu(z)), conv, h  # (B, d_model)


class ResidualBlock(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5, **block_kwargs):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = MambaBlock(d_model, **block_kwargs)

    def forward(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.mixer(self.norm(x), conv, h)  # (B, T, d_model)
        return x + y, conv, h

    def step(self, x: Tensor, conv: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, conv, h = self.mixer.step(self.norm(x), conv, h)  # (B, d_model)
        return x + y, conv, h


@register("mamba", PRESETS)
class Mamba(RecurrentLM):  # the shell and the layer loop: layers.py
    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        tie_embeddings: bool = True,
        chunk: int = CHUNK,
        eps: float = 1e-5,
        dt_rank: int | None = None,
        bias: bool = False,
        backend: str | None = None,
        scan: str | None = None,
    ):
        """eps: the RMSNorms' epsilon; dt_rank: default ceil(d_model/16); bias: in_proj and out_proj biases
        (Hugging Face's use_bias). These three exist for loading other checkpoints (models/hf.py).
        backend: which kernels run (models/kernels.py; default: the module's SCAN, auto); scan: its old name."""
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        backend = scan if backend is None else backend
        block = dict(d_state=d_state, d_conv=d_conv, expand=expand, n_layers=n_layers, chunk=chunk, backend=backend)
        self.layers = nn.ModuleList(
            ResidualBlock(d_model, eps, dt_rank=dt_rank, bias=bias, **block) for _ in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model, eps)
        # tied: the head reuses the embedding matrix, not a shared Parameter (safetensors refuses shared tensors)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
