"""Which implementation runs an SSM op: the pure-PyTorch reference, the fused CPU kernel, or an optional GPU package.

Every recurrent op of the SSMs has a pure-PyTorch reference next to its model (mamba.selective_scan, mamba2.ssd_chunked,
gated_deltanet.chunk_gated_delta_rule and their one-step forms; the short causal convolution is here). Some also have a
faster implementation elsewhere:

    op                         CPU (float32)                      CUDA, when the package imports ("cuda")
    Mamba-1 scan               scan_cpu.selective_scan_cpu        mamba_ssm  selective_scan_fn
    Mamba-1 step               -                                  mamba_ssm  selective_state_update
    Mamba-2 SSD (chunked)      -                                  mamba_ssm  mamba_chunk_scan_combined
    Mamba-2 step               -                                  mamba_ssm  selective_state_update (heads)
    causal conv + silu         -                                  causal_conv1d  causal_conv1d_fn
    causal conv step           -                                  causal_conv1d  causal_conv1d_update
    gated delta rule (chunk)   -                                  fla  chunk_gated_delta_rule (fp16/bf16 only)
    gated delta rule step      -                                  fla  fused_recurrent_gated_delta_rule

The rule (`resolve`): the backend follows the **device of the tensors** and an explicit option, never the mere fact
that a package imports.

    backend     CPU tensors                         CUDA tensors
    auto        the fused CPU kernel if the op      the package's kernel if it imports, else PyTorch
                has one, else PyTorch
    torch       PyTorch                             PyTorch
    cpu_fused   as auto                             ValueError
    cuda        ValueError                          the package's kernel; ValueError if it does not import

``fused`` is accepted as the old name of ``cpu_fused`` (Mamba's ``scan`` option). On CPU the GPU packages are never
imported, so their presence cannot change or break CPU use (fla, for one, patches transformers' GatedDeltaNet so that
its PyTorch path fails on CPU). A package is imported lazily, inside the first call that resolves to it on a CUDA
tensor, and the import is remembered (`kernel`).

Where a resolved kernel cannot take a particular call, that call runs on PyTorch, silently (`auto` and `cuda` alike):
mamba_ssm's selective_scan_fn has no initial state (a prefill that continues a state), causal_conv1d takes widths 2
to 4 and, with an incoming state, channel counts divisible by 8, fla's chunked kernel refuses float32, and the step
kernels (no autograd) are used only when no gradient is wanted. Two more caveats of the packages themselves:
selective_scan_fn does not backpropagate into the returned final state (training never uses it), and the Triton
kernels (mamba_chunk_scan_combined, fla) may use TF32 matmuls, so float32 results differ from PyTorch's by more than
rounding (tests/test_kernels.py gives the tolerances).

The adapters below were written against these signatures (mamba-ssm 2.x, causal-conv1d 1.4+, fla 0.2+):

    selective_scan_fn(u (B,D,L), delta (B,D,L), A (D,N), B (B,N,L), C (B,N,L), D (D,) fp32, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False) -> out (B,D,L)[, last_state (B,D,N) fp32]
    selective_state_update(state (B,D,N) | (B,H,P,N), x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False) -> out; updates state in place
    mamba_chunk_scan_combined(x (B,L,H,P), dt (B,L,H), A (H,), B (B,L,G,N), C (B,L,G,N), chunk_size, D=None, z=None,
                              dt_bias=None, initial_states (B,H,P,N)=None, ..., dt_softplus=False,
                              return_final_states=False) -> out (B,L,H,P)[, final_states (B,H,P,N)]
    causal_conv1d_fn(x (B,D,L), weight (D,W), bias (D,)=None, seq_idx=None, initial_states (B,D,W-1)=None,
                     return_final_states=False, final_states_out=None, activation=None) -> (B,D,L)
    causal_conv1d_update(x (B,D), conv_state (B,D,S>=W-1), weight (D,W), bias=None, activation=None) -> (B,D);
                         updates conv_state in place
    chunk_gated_delta_rule / fused_recurrent_gated_delta_rule(q, k (B,T,H,K), v (B,T,H,V), g (B,T,H) log-decay,
                         beta (B,T,H), scale=None (K^-0.5), initial_state (B,H,K,V)=None, output_final_state=False)
                         -> o (B,T,H,V), final_state (B,H,K,V)

Our q is already l2-normalized and scaled, so fla gets scale=1.0; our dt is already softplus'd (and clamped), so the
mamba_ssm kernels get no dt_bias and dt_softplus=False; our D skip is added by the models (Mamba-2) or passed (Mamba-1).
Kernels that update a state in place get a copy: a model's state is a value the rollout may keep. mamba-ssm 2.3.2's
selective_state_update fails at its Triton launch when dt_bias or D is None (seen on an H200), so the step adapters
pass zeros for them, which changes nothing.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "torch", "cpu_fused", "cuda")
_ALIASES = {"fused": "cpu_fused"}  # Mamba's scan option before there were GPU kernels

# op -> (module, function) of the optional GPU package that implements it on CUDA
KERNELS: dict[str, tuple[str, str]] = {
    "selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "selective_step": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
    "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
    "ssd_step": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
    "conv": ("causal_conv1d", "causal_conv1d_fn"),
    "conv_step": ("causal_conv1d", "causal_conv1d_update"),
    "gated_delta": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule"),
    "gated_delta_step": ("fla.ops.gated_delta_rule", "fused_recurrent_gated_delta_rule"),
}
PACKAGES = ("mamba_ssm", "causal_conv1d", "fla")  # the optional extra "gpu"; never imported on CPU


def check(backend: str) -> str:
    """The backend's canonical name; a one-line ValueError for an unknown one."""
    backend = _ALIASES.get(backend, backend)
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r} (choose from: {', '.join(BACKENDS)})")
    return backend


@functools.cache
def kernel(op: str) -> Callable | None:
    """The GPU package's function for op, imported on first use; None if it does not import. Only ever called for
    CUDA tensors (`resolve`), so a CPU process never imports the packages."""
    module, name = KERNELS[op]
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001  (ImportError, or a build against another torch or CUDA: treat as absent)
        return None


def resolve(backend: str | None, device: torch.device, op: str, cpu_fused: bool = False) -> str:
    """'torch', 'cpu_fused' or 'cuda': which implementation of op runs for tensors on device (see the header).

    backend: auto, torch, cpu_fused (or fused) or cuda; None is auto. cpu_fused: whether op has a fused CPU kernel
    (only the Mamba-1 scan). A one-line ValueError when the backend cannot run on this device."""
    backend = check("auto" if backend is None else backend)
    on_cuda = device.type == "cuda"
    if backend == "torch":
        return "torch"
    if backend == "cuda":
        if not on_cuda:
            raise ValueError(f"kernel backend 'cuda' needs CUDA tensors, got {device.type} ones (use auto or torch)")
        if kernel(op) is None:
            module, name = KERNELS[op]
            raise ValueError(
                f"kernel backend 'cuda' needs {module}.{name}, which does not import (pip install 'toolssm[gpu]')"
            )
        return "cuda"
    if backend == "cpu_fused" and device.type != "cpu":
        raise ValueError(f"kernel backend 'cpu_fused' needs CPU tensors, got {device.type} ones (use auto or torch)")
    if on_cuda:  # auto
        return "cuda" if kernel(op) is not None else "torch"
    return "cpu_fused" if cpu_fused and device.type == "cpu" else "torch"


def set_backend(model: torch.nn.Module, backend: str | None) -> torch.nn.Module:
    """Make every layer of model that has kernels to choose (Mamba, Mamba-2, Gated DeltaNet mixers) use backend from
    now on; None: each layer's default. Returns the model."""
    backend = None if backend is None else check(backend)
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = backend
    return model


def _no_grad(*tensors: Tensor | None) -> bool:
    """Whether no gradient flows through these tensors: the step kernels have no autograd."""
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------------------------------------
# the short causal convolution (Mamba-1, Mamba-2, Gated DeltaNet): its PyTorch form lives here


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """silu(depthwise causal conv) over a sequence, with the last K-1 inputs as the state.

    x (B, T, D); weight (D, K); bias (D,) or None; state (B, D, K-1) or None (zeros)
    -> y (B, T, D), the new state (B, D, K-1): the last K-1 inputs (state included).
    """
    Bsz, T, D = x.shape
    K = weight.shape[-1]
    if state is None:
        state = x.new_zeros(Bsz, D, K - 1)  # (B, D, K-1)
    xc = torch.cat([state, x.transpose(1, 2)], 2)  # (B, D, K-1+T)
    new_state = xc[:, :, T:]  # (B, D, K-1)
    if resolve(backend, x.device, "conv") == "cuda" and _conv_takes(x, weight, state):
        return _cuda_conv(x, weight, bias, state), new_state
    y = F.silu(F.conv1d(xc, weight[:, None], bias, groups=D))  # (B, D, T)
    return y.transpose(1, 2), new_state


def causal_conv1d_step(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """One step of causal_conv1d. x (B, D); weight (D, K); bias (D,) or None; state (B, D, K-1) or None
    -> y (B, D), the new state (B, D, K-1)."""
    if state is None:
        state = x.new_zeros(x.shape[0], x.shape[1], weight.shape[-1] - 1)  # (B, D, K-1)
    if (
        resolve(backend, x.device, "conv_step") == "cuda"
        and 2 <= weight.shape[-1] <= 4
        and weight.dtype == x.dtype
        and _no_grad(x, weight, bias, state)
    ):
        new = state.contiguous().clone()  # the kernel shifts the state in place; the caller's stays as it was
        return kernel("conv_step")(x.contiguous(), new, weight, bias, activation="silu"), new
    window = torch.cat([state, x[:, :, None]], 2)  # (B, D, K)
    y = (window * weight).sum(-1)  # (B, D)
    y = F.silu(y if bias is None else y + bias)
    return y, window[:, :, 1:]


def _conv_takes(x: Tensor, weight: Tensor, state: Tensor) -> bool:
    # widths 2..4; an incoming state only in the channel-last layout, which needs D % 8 == 0. Our state is zeros when
    # none was given, so it is always passed: a zero state and no state give the same result.
    return (
        2 <= weight.shape[-1] <= 4
        and x.shape[-1] % 8 == 0
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    )


def _cuda_conv(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor) -> Tensor:
    xt = x.contiguous().transpose(1, 2)  # (B, D, T), channel-last (stride 1 along D): the layout with initial states
    init = state.transpose(1, 2).contiguous().transpose(1, 2)  # (B, D, K-1), channel-last too
    y = kernel("conv")(xt, weight.contiguous(), bias, initial_states=init, activation="silu")  # (B, D, T)
    return y.transpose(1, 2)  # (B, T, D)


# ----------------------------------------------------------------------------------------------------------
# adapters to the GPU packages for the ops whose PyTorch forms live with their models


def cuda_selective_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """mamba_ssm's selective_scan_fn in mamba.selective_scan's layout, or None if it cannot take the call (an
    initial state). x, dt (B, T, Di); A (Di, N); B, C (B, T, N); D (Di,) -> y (B, T, Di), h (B, Di, N)."""
    if h0 is not None:
        return None
    y, h = kernel("selective_scan")(
        x.transpose(1, 2),
        dt.transpose(1, 2),
        A.float(),
        B.transpose(1, 2),
        C.transpose(1, 2),
        D.float(),
        return_last_state=True,
    )  # (B, Di, T), (B, Di, N)
    return y.transpose(1, 2), h.to(x.dtype)


def cuda_selective_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """mamba_ssm's selective_state_update for mamba.selective_step, or None (a gradient is wanted).
    x, dt (B, Di); A (Di, N); B, C (B, N); D (Di,); h (B, Di, N) or None -> y (B, Di), h."""
    if not _no_grad(x, dt, A, B, C, D, h):
        return None
    state = x.new_zeros(*x.shape, A.shape[-1]) if h is None else h.contiguous().clone()  # (B, Di, N), updated in place
    no_bias = dt.new_zeros(dt.shape[-1])  # (Di,): mamba-ssm 2.3's Triton launch fails on dt_bias=None
    return kernel("selective_step")(state, x, dt, A, B, C, D, dt_bias=no_bias), state


def cuda_ssd(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk: int
) -> tuple[Tensor, Tensor]:
    """mamba_ssm's mamba_chunk_scan_combined in mamba2.ssd_chunked's layout (y without the D skip).
    x (B, T, H, P); dt (B, T, H); A (H,); B, C (B, T, N) or (B, T, G, N); h0 (B, H, P, N) or None."""
    if B.dim() == 3:
        B, C = B[:, :, None], C[:, :, None]  # (B, T, 1, N)
    y, h = kernel("ssd")(x, dt, A, B, C, chunk, initial_states=h0, return_final_states=True)
    return y, h.to(x.dtype)  # (B, T, H, P), (B, H, P, N)


def cuda_ssd_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """selective_state_update's multi-head form for mamba2.ssd_step, or None (a gradient is wanted).
    x (B, H, P); dt (B, H); A (H,); B, C (B, N) or (B, G, N); h (B, H, P, N) or None -> y (B, H, P), h."""
    if not _no_grad(x, dt, A, B, C, h):
        return None
    Bsz, H, P = x.shape
    N = B.shape[-1]
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]  # (B, 1, N)
    state = x.new_zeros(Bsz, H, P, N) if h is None else h.contiguous().clone()  # updated in place
    dt_hp = dt[..., None].expand(Bsz, H, P)  # (B, H, P): one step size per head, as mamba_ssm's Mamba2.step
    A_hpn = A[:, None, None].expand(H, P, N)  # (H, P, N)
    zero = x.new_zeros(H, 1).expand(H, P)  # (H, P): no D skip (the model adds it), no dt bias; None fails in 2.3
    return kernel("ssd_step")(state, x, dt_hp, A_hpn, B, C, zero, dt_bias=zero), state


def cuda_gated_delta(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, h0: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """fla's chunk_gated_delta_rule for gated_deltanet.chunk_gated_delta_rule, or None (float32, which fla's chunked
    kernel refuses). q, k (B, T, H, K) normalized and scaled; v (B, T, H, V); g, beta (B, T, H); h0 (B, H, K, V)."""
    if q.dtype == torch.float32:
        return None
    o, h = kernel("gated_delta")(q=q, k=k, v=v, g=g, beta=beta, scale=1.0, initial_state=h0, output_final_state=True)
    return o, h.to(q.dtype)


def cuda_gated_delta_step(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, h: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """fla's fused_recurrent_gated_delta_rule, one step, for gated_deltanet.gated_delta_step, or None (a gradient is
    wanted). q, k (B, H, K); v (B, H, V); g, beta (B, H); h (B, H, K, V) or None -> o (B, H, V), h."""
    if not _no_grad(q, k, v, g, beta, h):
        return None
    o, h_new = kernel("gated_delta_step")(
        q=q[:, None],
        k=k[:, None],
        v=v[:, None],
        g=g[:, None],
        beta=beta[:, None],
        scale=1.0,
        initial_state=None if h is None else h.contiguous(),
        output_final_state=True,
    )  # (B, 1, H, V), (B, H, K, V)
    return o[:, 0], h_new.to(q.dtype)
