"""A fused CPU selective scan for Mamba-1 (numba), with a hand-written backward.

The same recurrence as `toolssm.models.mamba.selective_scan`, the pure-PyTorch reference:

    h_t = exp(dt_t A) * h_{t-1} + (dt_t x_t) B_t        h: (d_inner, N) per batch row
    y_t = h_t C_t + D x_t

but it never builds a (batch, length, d_inner, N) tensor, not even one chunk of it. One numba task owns a
(batch row, channel) pair (the backward: a batch row and a group of channels) and walks time with that
channel's N-vector state in a small buffer on the stack; each step's decay exp(dt A) is computed where it is
used. What goes to memory is only what the caller sees, (B, T, d_inner) and (B, T, N) tensors, plus, when a
gradient is wanted, the state at the start of every `chunk` steps ((B, d_inner, T/chunk, N)). The loops over
the N state entries are vectorized by LLVM (16 lanes with AVX-512); the tasks run in parallel (prange).

The backward is the one mamba-ssm's CUDA kernel uses: for each chunk, last chunk first, recompute the chunk's
states from its saved start into a local (chunk+1, N) buffer, then run the adjoint recurrence

    g_t = dL/dh_t = gy_t C_t + exp(dt_{t+1} A) g_{t+1}           (g after the last step: the final state's grad)

backwards through it, accumulating every input's gradient on the way. The gradients are exact: they differ
from the reference's by fp32 rounding alone (the order of the additions, and the exp below). The wrapper hands
the kernels time-contiguous copies of x, dt and dL/dy ((B, d_inner, T)), so that a task reads its channel's
steps in order.

Floating point. Everything is float32, compiled without fastmath, except two things. (1) The decay uses a
float32 exp written here (Cephes' expf: range reduction, then a degree-6 polynomial; relative error below
8e-8, about 1 ulp, measured over [-87, 5]) because numba's `math.exp` is a scalar libm call that does not
vectorize and would cost more than the rest of the scan. exp of an argument below -87.34 is taken as 0 (the
true value is below 1.2e-38); above 88.3 (never in Mamba, where dt > 0 and A < 0) it saturates at exp(88.3).
(2) The sums over the N state entries (y = h C, and two sums per step in the backward) may be reassociated
(fastmath "reassoc" on those two tiny functions only), which lets them vectorize as tree sums. Sums over time
(dL/dA, dL/dD) are carried in float64. Against a float64 run the kernel's errors are those of the fp32
reference scan (tests/test_scan_cpu.py).

numba is imported only when the kernel is first used, never when toolssm is imported. Without numba,
`available()` is False and Mamba uses the PyTorch scan. Threads: each call runs on
min(torch.get_num_threads(), numba's thread pool) threads (numba's threading layer; here its OpenMP layer,
which loads the system's libgomp beside the copy torch bundles: two OpenMP runtimes, two thread pools, taking
turns; tests/test_scan_cpu.py runs the kernel after torch's own threads). On 2 idle cores a Mamba training step
(batch 64) took 0.20 s on 2 threads against 0.36 s on 1, and 0.22 s with numba's workqueue layer instead.
Compiled kernels are cached on disk (numba's ``cache=True``, in ``__pycache__`` next to this file), so only
the first use in a fresh install pays the compilation (about 6 s).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CHUNK = 64  # backward recompute chunk: the forward saves the state every CHUNK steps (fewer if d_state is large)
MAX_STATE = 256  # d_state up to this: the kernel's per-task buffers live on the stack; larger, the reference
_BUF = 4096  # floats in each per-task chunk buffer ((chunk+1) x N)


def chunk_length(n_state: int) -> int:
    """The recompute chunk for d_state n_state: CHUNK, or shorter so that (chunk+1) x N fits a buffer."""
    return max(1, min(CHUNK, _BUF // n_state - 1))


# float32 constants for the exp below; numba freezes module globals as typed constants, so these stay fp32
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_LO = np.float32(-87.33654)  # ln(2^-126): below it exp is subnormal; taken as 0
_EXP_HI = np.float32(88.3)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)

# numba objects the kernel bodies below use as globals; set by _build, when numba is first imported
prange = range  # numba.prange
carray = None  # numba.carray
_bits_to_f32 = None  # an intrinsic: int32 -> float32 bit cast
_stack_f32 = None  # an intrinsic: a fixed-size float32 buffer on the stack (a pointer)
_exp32 = None
_dot_row = None
_vsum = None


# ----------------------------------------------------------------------------------------------------------
# kernel bodies: plain Python here, compiled by numba in _build
#
# Every buffer written in an inner loop over the N state entries is on the stack (_stack_f32), never a heap
# array: LLVM then knows it cannot overlap the input arrays and vectorizes the loop without run-time overlap
# checks. (With heap buffers it adds such checks, and for a loop walking time backwards, as the adjoint
# does, the checks it hoists out of the time loop always fail, which silently selects the scalar loop.)


def _exp32_py(x):
    """exp(x) for float32 x (Cephes expf). Vectorizes: only arithmetic, floor, selects and a bit cast."""
    xc = _EXP_HI if x > _EXP_HI else x
    xc = _EXP_LO if xc < _EXP_LO else xc
    k = np.floor(xc * _LOG2E + _HALF)  # float32; xc = k ln2 + r, |r| <= ln2 / 2
    r = xc - k * _LN2_HI
    r = r - k * _LN2_LO
    p = _P0 * r + _P1
    p = p * r + _P2
    p = p * r + _P3
    p = p * r + _P4
    p = p * r + _P5
    p = p * (r * r) + r + _ONE
    scale = _bits_to_f32((np.int32(k) + np.int32(127)) << np.int32(23))  # 2^k, k in [-126, 127]
    return _ZERO if x < _EXP_LO else p * scale


def _dot_row_py(v, M, b, t):
    """sum_n v[n] M[b, t, n]. Compiled with reassociation allowed (only here), so it vectorizes: a tree sum."""
    acc = _ZERO
    for n in range(v.shape[0]):
        acc += v[n] * M[b, t, n]
    return acc


def _vsum_py(v):
    """sum_n v[n], as _dot_row_py."""
    acc = _ZERO
    for n in range(v.shape[0]):
        acc += v[n]
    return acc


def _fwd_py(x, dt, A, Bm, Cm, D, h0, y, hT, starts, chunk, save):
    """x, dt: (B, Di, T); A: (Di, N); Bm, Cm: (B, T, N); D: (Di,); h0: (B, Di, N).
    Writes y (B, Di, T), hT (B, Di, N) and, if save, starts (B, Di, n_chunks, N): the state before each chunk."""
    Bsz, Di, T = x.shape
    N = A.shape[1]
    for i in prange(Bsz * Di):
        b = i // Di
        d = i % Di
        h = carray(_stack_f32(MAX_STATE), N)
        a = carray(_stack_f32(MAX_STATE), N)
        for n in range(N):
            h[n] = h0[b, d, n]
            a[n] = A[d, n]
        Dd = D[d]
        for s in range(0, T, chunk):
            if save:
                c = s // chunk
                for n in range(N):
                    starts[b, d, c, n] = h[n]
            for t in range(s, min(s + chunk, T)):
                dtv = dt[b, d, t]
                xv = x[b, d, t]
                u = dtv * xv
                for n in range(N):
                    h[n] = _exp32(dtv * a[n]) * h[n] + u * Bm[b, t, n]
                y[b, d, t] = _dot_row(h, Cm, b, t) + Dd * xv
        for n in range(N):
            hT[b, d, n] = h[n]


def _bwd_py(x, dt, A, Bm, Cm, D, starts, gy, gh, chunk, groups, gx, gdt, gA, gB, gC, gD, gh0):
    """The adjoint. Inputs as _fwd_py, starts from it; gy (B, Di, T), gh (B, Di, N) the output grads.
    Writes gx, gdt (B, Di, T); gA (B, Di, N) and gD (B, Di) per batch row (summed by the caller); gB, gC
    (B, groups, T, N) per channel group (summed by the caller); gh0 (B, Di, N).

    One task: a batch row b and a group of channels. Per chunk of steps, last chunk first, per channel d:
    recompute the chunk's states H and decays dA from its saved start, then walk it backwards with
    g = dL/dh_t = gy_t C_t + dA_{t+1} g_{t+1}, and, with w = dL/d(dt A) = g dA_t h_{t-1} (all per n):
    dL/dx_t = dt_t sum_n g B_t + D gy_t;   dL/ddt_t = sum_n w A + x_t sum_n g B_t;   dL/dA += w dt_t;
    dL/dB_t += (dt_t x_t) g;   dL/dC_t += gy_t h_t;   dL/dD += gy_t x_t;   dL/dh0 = the final g."""
    Bsz, Di, T = x.shape
    N = A.shape[1]
    n_chunks = starts.shape[2]
    per = (Di + groups - 1) // groups
    for j in prange(Bsz * groups):
        b = j // groups
        grp = j % groups
        d0 = grp * per
        d1 = min(Di, d0 + per)
        H = carray(_stack_f32(_BUF), (chunk + 1, N))  # one chunk's states: H[k] before step s+k
        dA = carray(_stack_f32(_BUF), (chunk, N))  # its decays
        gBc = carray(_stack_f32(_BUF), (chunk, N))  # its dL/dB, dL/dC, summed over the group's channels
        gCc = carray(_stack_f32(_BUF), (chunk, N))
        g = carray(_stack_f32(MAX_STATE), N)  # dL/dh of one channel
        gAc = carray(_stack_f32(MAX_STATE), N)  # its dL/dA over one chunk
        a = carray(_stack_f32(MAX_STATE), N)
        w = carray(_stack_f32(MAX_STATE), N)  # dL/d(dt A) A, one step
        v = carray(_stack_f32(MAX_STATE), N)  # g B, one step
        g_all = np.empty((d1 - d0, N), np.float32)  # dL/dh of each channel of the group, between chunks
        gA_all = np.zeros((d1 - d0, N), np.float64)  # dL/dA ... summed over chunks in float64
        gD_all = np.zeros(d1 - d0, np.float64)
        for d in range(d0, d1):
            for n in range(N):
                g_all[d - d0, n] = gh[b, d, n]
        for c in range(n_chunks - 1, -1, -1):  # chunks, last first; in each, every channel of the group
            s = c * chunk
            ln = min(chunk, T - s)
            for k in range(ln):
                for n in range(N):
                    gBc[k, n] = _ZERO
                    gCc[k, n] = _ZERO
            for d in range(d0, d1):
                for n in range(N):
                    g[n] = g_all[d - d0, n]
                    a[n] = A[d, n]
                    H[0, n] = starts[b, d, c, n]
                    gAc[n] = _ZERO
                Dd = D[d]
                for k in range(ln):  # recompute the chunk's states
                    t = s + k
                    dtv = dt[b, d, t]
                    u = dtv * x[b, d, t]
                    for n in range(N):
                        e = _exp32(dtv * a[n])
                        dA[k, n] = e
                        H[k + 1, n] = e * H[k, n] + u * Bm[b, t, n]
                gDc = _ZERO
                for k in range(ln - 1, -1, -1):  # the adjoint, backwards in time
                    t = s + k
                    dtv = dt[b, d, t]
                    xv = x[b, d, t]
                    gyv = gy[b, d, t]
                    u = dtv * xv
                    for n in range(N):
                        gn = g[n] + gyv * Cm[b, t, n]  # dL/dh_t
                        gCc[k, n] += gyv * H[k + 1, n]
                        gBc[k, n] += gn * u
                        wn = gn * dA[k, n] * H[k, n]  # dL/d(dt A) at (t, n)
                        gAc[n] += wn * dtv
                        w[n] = wn * a[n]
                        v[n] = gn * Bm[b, t, n]
                        g[n] = gn * dA[k, n]  # dL/dh_{t-1} through h_t
                    gu = _vsum(v)  # dL/d(dt x)
                    gdt[b, d, t] = _vsum(w) + gu * xv
                    gx[b, d, t] = gu * dtv + gyv * Dd
                    gDc += gyv * xv
                for n in range(N):
                    g_all[d - d0, n] = g[n]
                    gA_all[d - d0, n] += np.float64(gAc[n])
                gD_all[d - d0] += np.float64(gDc)
            for k in range(ln):
                for n in range(N):
                    gB[b, grp, s + k, n] = gBc[k, n]
                for n in range(N):
                    gC[b, grp, s + k, n] = gCc[k, n]
        for d in range(d0, d1):
            for n in range(N):
                gh0[b, d, n] = g_all[d - d0, n]
                gA[b, d, n] = np.float32(gA_all[d - d0, n])
            gD[b, d] = np.float32(gD_all[d - d0])


# ----------------------------------------------------------------------------------------------------------
# building, threads

_KERNELS = None  # (fwd, bwd) once built; False if numba is missing


def _build():
    global _KERNELS, prange, carray, _bits_to_f32, _stack_f32, _exp32, _dot_row, _vsum
    if _KERNELS is not None:
        return _KERNELS
    try:
        import numba
        from llvmlite import ir
        from numba.core import cgutils, types
        from numba.extending import intrinsic
    except ImportError:
        _KERNELS = False
        return _KERNELS

    @intrinsic
    def bits_to_f32(typingctx, i):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @intrinsic
    def stack_f32(typingctx, size):
        if not isinstance(size, types.IntegerLiteral):
            return None  # the size must be a constant: the buffer is allocated once, at function entry

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, ir.FloatType(), size=size.literal_value)

        return types.CPointer(types.float32)(size), codegen

    prange, carray, _bits_to_f32, _stack_f32 = numba.prange, numba.carray, bits_to_f32, stack_f32
    opts = dict(cache=True, fastmath=False, nogil=True)
    _exp32 = numba.njit(**opts, inline="always")(_exp32_py)
    # the sums over the N state entries: reassociation allowed (a tree sum), nothing else (no approximations,
    # NaNs and infinities kept). Separate small functions, so the flag reaches nothing but these sums.
    reassoc = dict(cache=True, nogil=True, fastmath={"reassoc"})
    _dot_row = numba.njit(**reassoc)(_dot_row_py)
    _vsum = numba.njit(**reassoc)(_vsum_py)
    # Two builds of each kernel: parallel (prange over threads) and serial, for one thread. The serial one is
    # not a nicety: numba's worker threads, once started, spin-wait, so with one torch thread the parallel build
    # stole the CPU from other processes (two 1-thread trainings on 2 cores ran 3-4x slower each). On one thread
    # the serial build runs and numba's pool is never started.
    _KERNELS = {
        par: (numba.njit(**opts, parallel=par)(_named(_fwd_py, "_fwd" + sfx)),
              numba.njit(**opts, parallel=par)(_named(_bwd_py, "_bwd" + sfx)))
        for par, sfx in ((True, "_parallel"), (False, "_serial"))
    }  # fmt: skip
    return _KERNELS


def _named(fn, name: str):
    """A copy of fn under another name: numba's on-disk cache is per (qualified) name, one per build."""
    import types as pytypes

    f = pytypes.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    f.__qualname__ = name
    return f


def available() -> bool:
    """True if numba imports (the kernel can run)."""
    return bool(_build())


def _set_threads() -> None:
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def supports(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None) -> bool:
    """Whether the kernel takes these scan inputs: all on the CPU, all float32, d_state <= MAX_STATE, and
    numba installed."""
    tensors = (x, dt, A, B, C, D) if h0 is None else (x, dt, A, B, C, D, h0)
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and A.shape[-1] <= MAX_STATE
        and available()
    )


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# ----------------------------------------------------------------------------------------------------------
# the autograd function


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, chunk):
        parallel = torch.get_num_threads() > 1
        fwd, _ = _build()[parallel]
        Bsz, T, Di = x.shape
        N = A.shape[1]
        save = any(ctx.needs_input_grad[:7])
        xt, dtt = x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous()  # (B, Di, T)
        h = x.new_zeros(Bsz, Di, N) if h0 is None else h0.contiguous()
        y = x.new_empty(Bsz, Di, T)
        hT = x.new_empty(Bsz, Di, N)
        n_chunks = (T + chunk - 1) // chunk if save else 1
        starts = x.new_empty(Bsz, Di, n_chunks, N) if save else x.new_empty(1, 1, 1, N)
        if parallel:  # not on one thread: setting numba's thread count starts its (spinning) worker pool
            _set_threads()
        fwd(_np(xt), _np(dtt), _np(A), _np(B), _np(C), _np(D), _np(h), y.numpy(), hT.numpy(), starts.numpy(),
            chunk, save)  # fmt: skip
        if save:
            ctx.chunk, ctx.has_h0 = chunk, h0 is not None
            ctx.save_for_backward(xt, dtt, A, B, C, D, starts)
        return y.transpose(1, 2), hT

    @staticmethod
    def backward(ctx, gy, gh):
        parallel = torch.get_num_threads() > 1
        _, bwd = _build()[parallel]
        xt, dtt, A, B, C, D, starts = ctx.saved_tensors
        Bsz, Di, T = xt.shape
        N = A.shape[1]
        gy = xt.new_zeros(Bsz, T, Di) if gy is None else gy  # (B, T, Di)
        gh = xt.new_zeros(Bsz, Di, N) if gh is None else gh.contiguous()
        gyt = gy.transpose(1, 2).contiguous()  # (B, Di, T)
        threads = 1
        if parallel:
            import numba

            _set_threads()
            threads = numba.get_num_threads()
        groups = max(1, min(Di, -(-4 * threads // Bsz)))  # >= ~4 tasks per thread; gB, gC get one slab per group
        gx, gdt = torch.empty_like(xt), torch.empty_like(xt)  # (B, Di, T)
        gA, gh0 = xt.new_empty(Bsz, Di, N), xt.new_empty(Bsz, Di, N)
        gB, gC = xt.new_empty(Bsz, groups, T, N), xt.new_empty(Bsz, groups, T, N)
        gD = xt.new_empty(Bsz, Di)
        bwd(xt.numpy(), dtt.numpy(), _np(A), _np(B), _np(C), _np(D), starts.numpy(), gyt.numpy(), gh.numpy(),
            ctx.chunk, groups, gx.numpy(), gdt.numpy(), gA.numpy(), gB.numpy(), gC.numpy(), gD.numpy(),
            gh0.numpy())  # fmt: skip
        return (
            gx.transpose(1, 2),
            gdt.transpose(1, 2),
            gA.sum(0),
            gB.sum(1) if groups > 1 else gB[:, 0],
            gC.sum(1) if groups > 1 else gC[:, 0],
            gD.sum(0),
            gh0 if ctx.has_h0 else None,
            None,
        )


def selective_scan_cpu(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    """The selective SSM over a sequence, fused (see the module docstring). Same contract as
    `toolssm.models.mamba.selective_scan`; CPU float32 tensors only (`supports`).

    x, dt: (B, T, Di); A: (Di, N); B, C: (B, T, N); D: (Di,); h0: (B, Di, N) or None (zeros)
    -> y (B, T, Di), the state after the last step (B, Di, N).
    chunk: the backward's recompute chunk (at most chunk_length(N)); it changes the speed, not the result.
    """
    return _SelectiveScanCPU.apply(x, dt, A, B, C, D, h0, max(1, min(chunk, chunk_length(A.shape[1]))))
