"""The fused CPU scan (numba) against the pure-PyTorch reference scan: values, gradients, the model, dispatch."""

import os
import subprocess
import sys

import pytest
import torch

from toolssm.models import ModelConfig, build_model, resolve
from toolssm.models import mamba as mamba_mod
from toolssm.models import scan_cpu
from toolssm.models.mamba import selective_scan, selective_scan_auto

pytest.importorskip("numba")

ATOL = RTOL = 1e-5  # fp32


def assert_close(name, a, b):
    """ATOL/RTOL; dA, a sum over every batch row and step (hundreds of terms, some large, of both signs), is
    compared at fp32 resolution of its largest entry instead: both scans are that far from a float64 run."""
    atol = max(ATOL, 1e-6 * b.abs().max().item()) if name == "dA" else ATOL
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def random_ssm(Bsz, T, Di=8, N=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bsz, T, Di, generator=g, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(Bsz, T, Di, generator=g, dtype=dtype))  # up to a few
    A = -torch.exp(torch.randn(Di, N, generator=g, dtype=dtype))
    B = torch.randn(Bsz, T, N, generator=g, dtype=dtype)
    C = torch.randn(Bsz, T, N, generator=g, dtype=dtype)
    D = torch.randn(Di, generator=g, dtype=dtype)
    return [x, dt, A, B, C, D]


def run(fn, inputs, h0, **kw):
    """y, h and the gradients of every input of a loss that weighs each output differently."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    h0 = None if h0 is None else h0.detach().clone().requires_grad_()
    y, h = fn(*leaves, h0, **kw)
    wy = torch.sin(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
    wh = torch.cos(torch.arange(h.numel(), dtype=h.dtype)).reshape(h.shape)
    ((y * wy).sum() + (h * wh).sum()).backward()
    return [y.detach(), h.detach()] + [t.grad for t in leaves] + ([] if h0 is None else [h0.grad])


NAMES = ["y", "h", "dx", "ddt", "dA", "dB", "dC", "dD", "dh0"]


@pytest.mark.parametrize("T", [1, 7, 64, 257])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("Bsz,N", [(3, 16), (1, 5)])  # N=5: the non-multiple-of-the-vector-width tails
def test_matches_reference(T, with_h0, Bsz, N):
    inputs = random_ssm(Bsz, T, N=N, seed=T)
    h0 = torch.randn(Bsz, 8, N, generator=torch.Generator().manual_seed(1)) if with_h0 else None
    got = run(scan_cpu.selective_scan_cpu, inputs, h0)
    ref = run(selective_scan, inputs, h0)
    for name, a, b in zip(NAMES, got, ref):
        assert_close(name, a, b)


def test_as_accurate_as_the_reference():
    """Against a float64 run of the reference: the kernel's fp32 error is of the reference's fp32 error's size."""
    inputs, h0 = random_ssm(2, 257), torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1))
    got = run(scan_cpu.selective_scan_cpu, inputs, h0)
    ref32 = run(selective_scan, inputs, h0)
    ref64 = run(selective_scan, [t.double() for t in inputs], h0.double())
    for name, a, b, c in zip(NAMES, got, ref32, ref64):
        scale = c.abs().max().item()
        err, err_ref = (a.double() - c).abs().max().item(), (b.double() - c).abs().max().item()
        assert err <= 4 * err_ref + 1e-6 * scale, f"{name}: {err:.2e} vs the fp32 reference's {err_ref:.2e}"


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunk_changes_nothing(chunk):
    inputs, h0 = random_ssm(2, 100), torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1))
    got = run(scan_cpu.selective_scan_cpu, inputs, h0, chunk=chunk)
    ref = run(scan_cpu.selective_scan_cpu, inputs, h0, chunk=16)
    for name, a, b in zip(NAMES, got, ref):  # only the order of the fp32 additions over chunks differs
        atol = 1e-6 * max(1, b.abs().max().item())
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-6, msg=lambda m: f"{name}: {m}")


def test_no_grad_forward_and_strided_inputs():
    x, dt, A, B, C, D = random_ssm(2, 33)
    BC = torch.cat([B, C], -1)  # B, C as the model makes them: views into one x_proj output
    Bv, Cv = BC.split(16, -1)
    h0 = torch.randn(8, 2, 16).transpose(0, 1)  # non-contiguous, as a layer's slice of the model state is
    y_ref, h_ref = selective_scan(x, dt, A, Bv, Cv, D, h0)
    with torch.no_grad():
        y, h = scan_cpu.selective_scan_cpu(x, dt, A, Bv, Cv, D, h0)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(h, h_ref, atol=ATOL, rtol=RTOL)


def test_gradient_through_the_final_state_alone():
    inputs = [t.requires_grad_() for t in random_ssm(2, 20)]
    _, h = scan_cpu.selective_scan_cpu(*inputs)
    h.sum().backward()
    got = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    _, h = selective_scan(*inputs)
    h.sum().backward()
    for a, t in zip(got, inputs):
        torch.testing.assert_close(a, t.grad, atol=ATOL, rtol=RTOL)


def test_never_saves_a_state_per_step():
    """What the kernel keeps for backward: the inputs and one state per chunk, nothing of size B*T*Di*N."""
    Bsz, T, Di, N = 2, 300, 64, 16
    saved = []
    inputs = [t.requires_grad_() for t in random_ssm(Bsz, T, Di, N)]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y, _ = scan_cpu.selective_scan_cpu(*inputs)
    largest_input = max(t.numel() for t in inputs)
    assert saved and max(saved) <= max(largest_input, Bsz * Di * N * -(-T // scan_cpu.CHUNK))
    assert sum(saved) < Bsz * T * Di * N / 4


# ----------------------------------------------------------------------------------------------------------
# the model, dispatch


def test_mamba_with_kernel_equals_mamba_with_reference():
    torch.manual_seed(0)
    kwargs = resolve(ModelConfig(arch="mamba"))  # the cpu preset
    fused = build_model("mamba", 23, {**kwargs, "scan": "fused"})
    ref = build_model("mamba", 23, {**kwargs, "scan": "torch"})
    ref.load_state_dict(fused.state_dict())
    x = torch.randint(0, 23, (4, 50))
    out = {}
    for name, model in [("fused", fused), ("ref", ref)]:
        logits, state = model(x[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, 23), x[:, 1:].reshape(-1)).backward()
        out[name] = logits.detach(), state, {k: p.grad for k, p in model.named_parameters()}
    (lf, sf, gf), (lr, sr, gr) = out["fused"], out["ref"]
    torch.testing.assert_close(lf, lr, atol=ATOL, rtol=RTOL)
    for a, b in zip(sf, sr):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    for k in gf:
        torch.testing.assert_close(gf[k], gr[k], atol=ATOL, rtol=1e-4, msg=lambda m: f"{k}: {m}")


def scan_used(x, dt, A, B, C, D, **kw):
    y, _ = selective_scan_auto(*[t.requires_grad_() for t in (x, dt, A, B, C, D)], **kw)
    return type(y.grad_fn).__name__


def test_dispatch_by_device_dtype_and_option(monkeypatch):
    inputs = random_ssm(2, 5)
    assert "CPU" in scan_used(*inputs)  # CPU float32: the kernel
    assert "CPU" not in scan_used(*[t.double() for t in inputs])  # float64: the reference
    assert "CPU" not in scan_used(*inputs, impl="torch")
    monkeypatch.setattr(mamba_mod, "SCAN", "torch")
    assert "CPU" not in scan_used(*inputs)
    with pytest.raises(RuntimeError):
        scan_used(*[t.double() for t in inputs], impl="fused")
    with pytest.raises(ValueError):
        scan_used(*inputs, impl="nope")
    with pytest.raises(ValueError):
        build_model("mamba", 23, {**resolve(ModelConfig(arch="mamba")), "scan": "nope"})


def test_falls_back_to_the_reference_without_numba(monkeypatch):
    monkeypatch.setattr(scan_cpu, "_KERNELS", False)  # what _build leaves when numba does not import
    assert not scan_cpu.available()
    inputs = random_ssm(2, 5)
    assert "CPU" not in scan_used(*inputs)
    model = build_model("mamba", 23, resolve(ModelConfig(arch="mamba")))
    logits, _ = model(torch.randint(0, 23, (2, 9)))
    logits.sum().backward()


def test_importing_toolssm_does_not_import_numba():
    code = "import sys, toolssm, toolssm.models, toolssm.models.scan_cpu; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_runs_after_torch_used_its_threads():
    """torch's OpenMP pool first, then the kernel on 2 numba threads (numba's threading layer), in one process.
    The reference it is checked against computes exp on 2 threads: before toolssm.models resolved oneMKL's vector
    math on import (toolssm.runtime), that first exp was wrong by 1e-4 in about 1 run in 17 (bench/vml_race.py)."""
    code = """
import torch, numba
from toolssm.models.scan_cpu import selective_scan_cpu
from toolssm.models.mamba import selective_scan
torch.set_num_threads(2)
a = torch.randn(300, 300); (a @ a).sum()  # torch's thread pool is up
g = torch.Generator().manual_seed(0)
x, dt, B, C = (torch.randn(4, 50, n, generator=g) for n in (8, 8, 16, 16))
dt, A, D = dt.sigmoid(), -torch.rand(8, 16, generator=g) - 0.5, torch.randn(8, generator=g)
y, h = selective_scan_cpu(x, dt, A, B, C, D)
y_ref, h_ref = selective_scan(x, dt, A, B, C, D)
torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS), numba.get_num_threads()
torch.set_num_threads(1)
y1, _ = selective_scan_cpu(x, dt, A, B, C, D)  # the serial build
torch.testing.assert_close(y1, y_ref, atol=1e-5, rtol=1e-5)
print(numba.threading_layer())
"""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_one_thread_never_starts_numbas_spinning_worker_pool():
    """On one torch thread the serial build runs and numba's thread pool is never started: its workers spin-wait,
    and stole the CPU from other 1-thread processes (two trainings on 2 cores ran 3-4x slower each)."""
    code = """
import torch
import numba.np.ufunc.parallel as pool
from toolssm.models.scan_cpu import selective_scan_cpu
from toolssm.models.mamba import selective_scan
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x, dt, B, C = (torch.randn(4, 50, n, generator=g).requires_grad_() for n in (8, 8, 16, 16))
A, D = -torch.rand(8, 16, generator=g) - 0.5, torch.randn(8, generator=g)
y, h = selective_scan_cpu(x, dt.sigmoid(), A, B, C, D)
(y.sum() + h.sum()).backward()
y_ref, _ = selective_scan(x, dt.sigmoid(), A, B, C, D)
torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
assert x.grad is not None and not pool._is_initialized, "numba's worker pool was started on one thread"
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
