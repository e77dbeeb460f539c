"""Optional GPU kernels (models/kernels.py): chosen by the tensors' device, never on CPU, never imported on CPU, the
adapters' layouts against the packages' documented contracts, and, on a GPU, each kernel against the PyTorch path."""

import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from toolssm.models import ModelConfig, build_model, gradient_model_names, kernels, resolve
from toolssm.models.gated_deltanet import chunk_gated_delta_rule, chunk_gated_delta_rule_auto
from toolssm.models.mamba import selective_scan, selective_scan_auto
from toolssm.models.mamba2 import ssd_chunked_auto

SSMS = ["mamba", "mamba2", "gated_deltanet", "hybrid"]  # the models with kernels to choose
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def tiny(arch, **kw):
    torch.manual_seed(0)
    return build_model(arch, 23, {**resolve(ModelConfig(arch=arch)), "d_model": 16, "n_layers": 2, **kw})


def run(model, x, cut=11, grad=True):
    """Logits of a parallel forward, of a prefill of x[:, :cut] + steps, the final state, and the gradients."""
    model.zero_grad()
    full, _ = model(x)
    grads = None
    if grad:
        full.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        pre, state = model(x[:, :cut])
        rest = []
        for t in range(cut, x.shape[1]):
            logits, state = model.step(x[:, t], state)
            rest.append(logits)
    return full.detach(), torch.cat([pre, torch.stack(rest, 1)], 1), state, grads


def install(monkeypatch, functions):
    """Put modules named like the GPU packages into sys.modules, with functions[op] as each op's kernel."""
    for op, (module, name) in kernels.KERNELS.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if not isinstance(sys.modules.get(prefix), types.ModuleType) or not getattr(
                sys.modules[prefix], "_toolssm_fake", False
            ):
                fake = types.ModuleType(prefix)
                fake._toolssm_fake = True
                monkeypatch.setitem(sys.modules, prefix, fake)
        setattr(sys.modules[module], name, functions[op])
    kernels.kernel.cache_clear()


_KERNEL = kernels.kernel  # the cached loader itself (a test below patches kernels.kernel with a spy)


@pytest.fixture(autouse=True)
def _fresh_kernel_cache():
    _KERNEL.cache_clear()
    yield
    _KERNEL.cache_clear()


@pytest.fixture
def exploding_packages(monkeypatch):
    """mamba_ssm, causal_conv1d and fla 'installed', every kernel raising if called."""

    def boom(op):
        def kernel(*args, **kwargs):
            raise AssertionError(f"the {op} GPU kernel was called")

        return kernel

    install(monkeypatch, {op: boom(op) for op in kernels.KERNELS})


# ----------------------------------------------------------------------------------------------------------
# CPU: the packages are never picked, never imported, and their presence changes nothing


@pytest.mark.parametrize("arch", gradient_model_names())
def test_present_packages_change_nothing_on_cpu(arch, monkeypatch):
    x = torch.randint(0, 23, (2, 19))
    ref = run(tiny(arch), x)
    install(monkeypatch, {op: _raises for op in kernels.KERNELS})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU in the machine: the tensors still decide
    for backend in ("auto", "torch", "cpu_fused"):
        model = tiny(arch)
        kernels.set_backend(model, backend)
        got = run(model, x)
        if backend != "torch":  # torch and cpu_fused differ only by the Mamba scan's rounding, checked elsewhere
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
            assert all(torch.equal(a, b) for a, b in zip(got[2], ref[2], strict=True))
            assert all(torch.equal(a, b) for a, b in zip(got[3], ref[3], strict=True))
    assert kernels.kernel.cache_info().currsize == 0  # the packages were not even looked up


def _raises(*args, **kwargs):
    raise AssertionError("a GPU kernel was called on CPU")


def test_importing_and_running_the_models_never_imports_the_packages(tmp_path):
    """Importable fake packages on the path; the models run on CPU; none of the packages is in sys.modules."""
    for package in kernels.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    code = f"""
import sys, torch
import toolssm, toolssm.models
from toolssm.models import ModelConfig, build_model, gradient_model_names, mamba, resolve
torch.set_num_threads(1)
mamba.SCAN = "torch"  # skip loading the numba kernel: the in-process test above runs the default path
for arch in gradient_model_names():
    model = build_model(arch, 23, {{**resolve(ModelConfig(arch=arch)), "d_model": 16, "n_layers": 2}})
    logits, state = model(torch.randint(0, 23, (2, 9)))
    logits.sum().backward()
    with torch.no_grad():
        model.step(torch.randint(0, 23, (2,)), state)
imported = [m for m in sys.modules if m.split(".")[0] in {kernels.PACKAGES!r}]
assert not imported, imported
import mamba_ssm, causal_conv1d, fla  # the fakes were importable all along
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ----------------------------------------------------------------------------------------------------------
# backend resolution


@pytest.mark.parametrize("op", list(kernels.KERNELS))
def test_resolution_by_device_and_option(op, exploding_packages):
    fused = op == "selective_scan"
    assert kernels.resolve("auto", CPU, op, cpu_fused=fused) == ("cpu_fused" if fused else "torch")
    assert kernels.resolve(None, CPU, op) == "torch"
    assert kernels.resolve("cpu_fused", CPU, op, cpu_fused=fused) == ("cpu_fused" if fused else "torch")
    assert kernels.resolve("torch", CPU, op, cpu_fused=fused) == "torch"
    assert kernels.resolve("torch", CUDA, op) == "torch"
    assert kernels.kernel.cache_info().currsize == 0  # nothing was imported to decide any of that
    assert kernels.resolve("auto", CUDA, op) == "cuda"  # CUDA tensors and the package imports
    assert kernels.resolve("cuda", CUDA, op) == "cuda"
    for backend, device in [("cuda", CPU), ("cpu_fused", CUDA), ("fused", CUDA), ("nope", CPU)]:
        with pytest.raises(ValueError) as err:
            kernels.resolve(backend, device, op)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("op", list(kernels.KERNELS))
def test_without_the_package_cuda_falls_back_or_explains(op, monkeypatch):
    module = kernels.KERNELS[op][0]
    for name in {module.split(".")[0], module}:  # an import of either now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    assert kernels.resolve("auto", CUDA, op) == "torch"
    with pytest.raises(ValueError, match="toolssm\\[gpu\\]"):
        kernels.resolve("cuda", CUDA, op)


def test_backend_names():
    assert kernels.check("fused") == "cpu_fused"  # Mamba's scan option, before there were GPU kernels
    assert [kernels.check(b) for b in kernels.BACKENDS] == list(kernels.BACKENDS)
    for arch in SSMS:
        with pytest.raises(ValueError):
            tiny(arch, backend="nope")
        with pytest.raises(ValueError, match="CUDA"):  # explicitly asking for the GPU kernels on CPU: one line
            tiny(arch, backend="cuda")(torch.randint(0, 23, (1, 5)))
    model = kernels.set_backend(tiny("hybrid"), "torch")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"torch"}
    assert tiny("mamba", scan="fused").layers[0].mixer.backend == "cpu_fused"  # the old option name


# ----------------------------------------------------------------------------------------------------------
# the adapters, on CPU, against fakes that implement each package's documented contract in PyTorch (their
# reference functions: selective_scan_ref, selective_state_update_ref, causal_conv1d_ref, causal_conv1d_update_ref,
# the SSD recurrence, fla's naive recurrence), including the layout checks the real kernels make


def contract_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                               return_last_state=False):  # fmt: skip
    b, d, L = u.shape
    assert delta.shape == u.shape and A.shape[0] == d and B.shape == C.shape == (b, A.shape[1], L)
    assert A.dtype == torch.float32 and (D is None or D.dtype == torch.float32)
    assert z is None and delta_bias is None and not delta_softplus
    h, ys = u.new_zeros(b, d, A.shape[1]), []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, 2) + (0 if D is None else u * D[:, None])  # (b, d, L)
    return (y, h) if return_last_state else y


def contract_selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    heads = state.dim() == 4
    if not heads:  # (b, d, n): one head
        state_, x, dt, A, B, C = state[:, None], x[:, None], dt[:, None], A[None], B[:, None], C[:, None]
        D = None if D is None else D[None]
        dt_bias = None if dt_bias is None else dt_bias[None]
    else:
        state_ = state
    b, h, p, n = state_.shape
    assert x.shape == dt.shape == (b, h, p) and A.shape == (h, p, n) and B.shape == C.shape and B.shape[0] == b
    assert z is None and not dt_softplus
    assert D is None or D.shape == (h, p)
    if dt_bias is not None:  # the package adds it before the (here absent) softplus
        assert dt_bias.shape == (h, p)
        dt = dt + dt_bias
    Bh, Ch = (t.repeat_interleave(h // t.shape[1], 1) for t in (B, C))  # (b, h, n)
    state_.copy_(torch.exp(dt[..., None] * A) * state_ + (dt * x)[..., None] * Bh[:, :, None])  # in place
    out = (state_ * Ch[:, :, None]).sum(-1) + (0 if D is None else x * D)
    return out if heads else out[:, 0]


def contract_mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,
                                       initial_states=None, seq_idx=None, dt_softplus=False,
                                       dt_limit=(0.0, float("inf")), return_final_states=False):  # fmt: skip
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    assert dt.shape == (b, L, H) and A.shape == (H,) and B.shape == C.shape == (b, L, G, N) and chunk_size >= 1
    assert D is None and z is None and dt_bias is None and not dt_softplus
    h = x.new_zeros(b, H, P, N) if initial_states is None else initial_states
    Bh, Ch = (t.repeat_interleave(H // G, 2) for t in (B, C))  # (b, L, H, N)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None]
        ys.append((h * Ch[:, t, :, None]).sum(-1))
    y = torch.stack(ys, 1)
    return (y, h) if return_final_states else y


def contract_causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                              final_states_out=None, activation=None):  # fmt: skip
    dim, width = weight.shape
    assert 2 <= width <= 4 and activation == "silu"
    if initial_states is not None:  # the kernel takes an initial state only channel-last
        assert x.stride(1) == 1 and x.stride(2) > 1 and initial_states.stride(1) == 1 and dim % 8 == 0
        xs = torch.cat([initial_states, x], -1)
    else:
        xs = F.pad(x, (width - 1, 0))
    return F.silu(F.conv1d(xs, weight[:, None], bias, groups=dim))


def contract_causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
    dim, width = weight.shape
    assert conv_state.shape[:2] == x.shape and conv_state.shape[2] >= width - 1 and activation == "silu"
    xs = torch.cat([conv_state, x[:, :, None]], -1)  # (b, d, S+1)
    conv_state.copy_(xs[:, :, -conv_state.shape[2] :])  # in place
    return F.silu(F.conv1d(xs[:, :, -width:], weight[:, None], bias, groups=dim)[:, :, 0])


def contract_gated_delta(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunked=True):
    b, T, H, K = q.shape
    if chunked:
        assert q.dtype != torch.float32  # fla's chunked kernel refuses float32
    scale, v_dtype = K**-0.5 if scale is None else scale, v.dtype
    f = [t.float() for t in (q, k, v, g, beta)]
    q, k, v, g, beta = f
    S = q.new_zeros(b, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    os_ = []
    for t in range(T):
        S = torch.exp(g[:, t])[..., None, None] * S
        u = beta[:, t, :, None] * (v[:, t] - (S * k[:, t, :, :, None]).sum(-2))
        S = S + k[:, t, :, :, None] * u[:, :, None, :]
        os_.append((S * (q[:, t] * scale)[..., None]).sum(-2))
    return torch.stack(os_, 1).to(v_dtype), (S if output_final_state else None)  # o in the inputs' dtype


CONTRACTS = {
    "selective_scan": contract_selective_scan_fn,
    "selective_step": contract_selective_state_update,
    "ssd": contract_mamba_chunk_scan_combined,
    "ssd_step": contract_selective_state_update,
    "conv": contract_causal_conv1d_fn,
    "conv_step": contract_causal_conv1d_update,
    "gated_delta": contract_gated_delta,
    "gated_delta_step": lambda *a, **kw: contract_gated_delta(*a, **kw, chunked=False),
}


@pytest.fixture
def contract_packages(monkeypatch):
    """The fakes above as the packages, the CPU treated as a CUDA device; returns the ops called."""
    called = []

    def spy(op):
        def kernel(*args, **kwargs):
            called.append(kernels.KERNELS[op][1])  # the function's name (two ops share selective_state_update)
            return CONTRACTS[op](*args, **kwargs)

        return kernel

    install(monkeypatch, {op: spy(op) for op in kernels.KERNELS})
    real = kernels.resolve
    monkeypatch.setattr(kernels, "resolve", lambda backend, device, op, cpu_fused=False: real(backend, CUDA, op))
    return called


@pytest.mark.parametrize("arch", SSMS)
def test_adapters_match_the_torch_path(arch, contract_packages):
    x = torch.randint(0, 23, (2, 19))
    ref = run(kernels.set_backend(tiny(arch), "torch"), x, grad=False)
    got = run(kernels.set_backend(tiny(arch), "cuda"), x, grad=False)
    for a, b in zip(got[:2], ref[:2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(got[2], ref[2], strict=True):  # the state after prefill + steps
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    conv = {"causal_conv1d_fn", "causal_conv1d_update"}
    expected = {
        "mamba": {"selective_scan_fn", "selective_state_update"},
        "hybrid": {"selective_scan_fn", "selective_state_update"},
        "mamba2": {"mamba_chunk_scan_combined", "selective_state_update"},
        "gated_deltanet": {"fused_recurrent_gated_delta_rule"},  # float32: fla's chunked kernel is skipped
    }[arch]
    assert set(contract_packages) == conv | expected


def test_step_adapters_leave_the_callers_state_alone(contract_packages):
    model = kernels.set_backend(tiny("mamba2"), "cuda")
    with torch.no_grad():
        _, state = model(torch.randint(0, 23, (2, 7)))
        kept = [s.clone() for s in state]
        model.step(torch.randint(0, 23, (2,)), state)
    assert all(torch.equal(a, b) for a, b in zip(state, kept, strict=True))
    assert {"selective_state_update", "causal_conv1d_update"} <= set(contract_packages)


def test_step_adapters_step_aside_for_gradients(contract_packages):
    model = kernels.set_backend(tiny("mamba"), "cuda")
    _, state = model(torch.randint(0, 23, (2, 7)))
    contract_packages.clear()
    logits, _ = model.step(torch.randint(0, 23, (2,)), state)  # gradients wanted: the PyTorch step
    logits.sum().backward()
    assert contract_packages == []


def test_scan_with_an_initial_state_takes_the_torch_path(contract_packages):
    x, dt, B, C = (torch.randn(2, 9, n) for n in (8, 8, 4, 4))
    dt, A, D, h0 = dt.sigmoid(), -torch.rand(8, 4) - 0.5, torch.randn(8), torch.randn(2, 8, 4)
    y, h = selective_scan_auto(x, dt, A, B, C, D, h0, impl="cuda")  # selective_scan_fn has no initial state
    y_ref, h_ref = selective_scan(x, dt, A, B, C, D, h0)
    assert contract_packages == [] and torch.equal(y, y_ref) and torch.equal(h, h_ref)


def test_fla_chunk_adapter_in_bfloat16(contract_packages):
    q, k = (F.normalize(torch.randn(2, 13, 3, 8), dim=-1).bfloat16() for _ in range(2))
    q = q * 8**-0.5
    v, g, beta = torch.randn(2, 13, 3, 16).bfloat16(), -torch.rand(2, 13, 3).bfloat16(), torch.rand(2, 13, 3).bfloat16()
    h0 = torch.randn(2, 3, 8, 16).bfloat16()
    o, h = chunk_gated_delta_rule_auto(q, k, v, g, beta, h0, backend="cuda")
    assert contract_packages == ["chunk_gated_delta_rule"] and o.dtype == h.dtype == torch.bfloat16
    o_ref, h_ref = chunk_gated_delta_rule(*(t.float() for t in (q, k, v, g, beta, h0)))
    torch.testing.assert_close(o.float(), o_ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(h.float(), h_ref, atol=3e-2, rtol=3e-2)


# ----------------------------------------------------------------------------------------------------------
# GPU: each CUDA kernel against the PyTorch path on the same weights (run where a GPU is; skipped elsewhere).
# Tolerances (fp32): the CUDA selective scan and the convolutions differ from PyTorch by rounding (1e-4); the Triton
# kernels (mamba_chunk_scan_combined, fla) may multiply in TF32, hence 1e-2 for Mamba-2 and for fla's chunk in bf16.

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TOL = {"mamba": 1e-4, "hybrid": 1e-4, "mamba2": 1e-2, "gated_deltanet": 1e-4}
PACKAGE_OF = {
    "mamba": "selective_scan",
    "hybrid": "selective_scan",
    "mamba2": "ssd",
    "gated_deltanet": "gated_delta_step",
}
STEP_OF = {"mamba": "selective_step", "hybrid": "selective_step", "mamba2": "ssd_step", "gated_deltanet": "gated_delta_step"}


@pytest.fixture
def no_tf32(monkeypatch):
    """PyTorch's own CUDA path in full fp32 (cuDNN's convolutions may use TF32 by default)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def needs(op):
    return pytest.mark.skipif(
        not torch.cuda.is_available() or kernels.kernel(op) is None, reason=f"needs CUDA and {kernels.KERNELS[op][0]}"
    )


@gpu
@pytest.mark.parametrize("arch", gradient_model_names())
def test_torch_path_on_gpu_matches_cpu(arch, no_tf32):
    """No package needed: the PyTorch path runs on CUDA tensors and agrees with the CPU."""
    x = torch.randint(0, 23, (2, 19))
    cpu = run(kernels.set_backend(tiny(arch), "torch"), x)
    cuda = run(kernels.set_backend(tiny(arch), "torch").cuda(), x.cuda())
    for a, b in zip(cuda[:2], cpu[:2], strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)
    for a, b in zip(cuda[3], cpu[3], strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-3)


@gpu
@pytest.mark.parametrize("arch", SSMS)
def test_gpu_kernels_match_the_torch_path(arch, monkeypatch, no_tf32):
    if kernels.kernel(PACKAGE_OF[arch]) is None:
        pytest.skip("needs the GPU packages (pip install 'toolssm[gpu]')")
    expected = {PACKAGE_OF[arch], STEP_OF[arch]} | ({"conv", "conv_step"} if kernels.kernel("conv") else set())
    used, real = [], kernels.kernel

    def spy(op):
        used.append(op)
        return real(op)

    monkeypatch.setattr(kernels, "kernel", spy)
    x = torch.randint(0, 23, (2, 150), device="cuda")  # several chunks of every kernel
    ref = run(kernels.set_backend(tiny(arch).cuda(), "torch"), x, cut=97)
    assert used == []
    got = run(kernels.set_backend(tiny(arch).cuda(), "auto"), x, cut=97)
    assert expected <= set(used)  # each kernel that imports ran (causal_conv1d is tested here only if it does)
    tol = TOL[arch]
    for a, b in zip(got[:2], ref[:2], strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    for a, b in zip(got[2], ref[2], strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    for a, b in zip(got[3], ref[3], strict=True):  # the parameters' gradients
        torch.testing.assert_close(a, b, atol=10 * tol, rtol=10 * tol)


@needs("selective_scan")
def test_gpu_selective_scan_values_and_gradients(no_tf32):
    g = torch.Generator(device="cuda").manual_seed(0)
    Bsz, T, Di, N = 2, 300, 64, 16
    x, dt, B, C = (torch.randn(Bsz, T, n, device="cuda", generator=g) for n in (Di, Di, N, N))
    dt = F.softplus(dt - 2)
    A, D = -torch.rand(Di, N, device="cuda", generator=g) - 0.5, torch.randn(Di, device="cuda", generator=g)
    w = torch.randn(Bsz, T, Di, device="cuda", generator=g)
    out = {}
    for impl in ("cuda", "torch"):
        inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
        y, h = selective_scan_auto(*inputs, impl=impl)
        (y * w).sum().backward()  # not through h: mamba_ssm does not backpropagate into the final state
        out[impl] = (y.detach(), h.detach(), [t.grad for t in inputs])
    (y, h, grads), (y_ref, h_ref, grads_ref) = out["cuda"], out["torch"]
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)
    for name, a, b in zip(["x", "dt", "A", "B", "C", "D"], grads, grads_ref, strict=True):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, atol=1e-4 * max(1.0, scale), rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


@needs("ssd")
def test_gpu_ssd_values_and_gradients(no_tf32):
    g = torch.Generator(device="cuda").manual_seed(0)
    Bsz, T, H, P, N = 2, 200, 4, 16, 16
    x = torch.randn(Bsz, T, H, P, device="cuda", generator=g)
    dt = F.softplus(torch.randn(Bsz, T, H, device="cuda", generator=g) - 2)
    A = -torch.rand(H, device="cuda", generator=g) - 0.5
    B, C = (torch.randn(Bsz, T, N, device="cuda", generator=g) for _ in range(2))
    h0 = torch.randn(Bsz, H, P, N, device="cuda", generator=g)
    out = {}
    for backend in ("cuda", "torch"):
        inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, h0)]
        *ins, h_in = inputs
        y, h = ssd_chunked_auto(*ins, h_in, chunk=64, backend=backend)
        (y.square().mean() + h.square().mean()).backward()
        out[backend] = (y.detach(), h.detach(), [t.grad for t in inputs])
    (y, h, grads), (y_ref, h_ref, grads_ref) = out["cuda"], out["torch"]
    torch.testing.assert_close(y, y_ref, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(h, h_ref, atol=1e-2, rtol=1e-2)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-2 * max(1.0, b.abs().max().item()), rtol=1e-2)


@needs("conv")
def test_gpu_conv_values_gradients_and_step(no_tf32):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 37, 64, device="cuda", generator=g)
    w, b = torch.randn(64, 4, device="cuda", generator=g), torch.randn(64, device="cuda", generator=g)
    state = torch.randn(2, 64, 3, device="cuda", generator=g)
    out = {}
    for backend in ("cuda", "torch"):
        inputs = [t.clone().requires_grad_() for t in (x, w, b)]
        y, s = kernels.causal_conv1d(*inputs, state, backend)
        y.square().sum().backward()
        with torch.no_grad():
            ys, st = [], state
            for t in range(5):
                yt, st = kernels.causal_conv1d_step(x[:, t], w, b, st, backend)
                ys.append(yt)
        out[backend] = (y.detach(), s.detach(), [t.grad for t in inputs], torch.stack(ys, 1), st)
    for a, r in zip(out["cuda"], out["torch"], strict=True):
        for u, v in zip(a if isinstance(a, list) else [a], r if isinstance(r, list) else [r], strict=True):
            torch.testing.assert_close(u, v, atol=1e-4 * max(1.0, v.abs().max().item()), rtol=1e-4)


@needs("gated_delta")
def test_gpu_fla_chunk_in_bfloat16(no_tf32):
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T, H, K, V = 2, 150, 4, 32, 64
    q, k = (F.normalize(torch.randn(B, T, H, K, device="cuda", generator=g), dim=-1) for _ in range(2))
    q = q * K**-0.5
    v = torch.randn(B, T, H, V, device="cuda", generator=g)
    gate = -F.softplus(torch.randn(B, T, H, device="cuda", generator=g))
    beta = torch.rand(B, T, H, device="cuda", generator=g)
    h0 = torch.randn(B, H, K, V, device="cuda", generator=g)
    low = [t.bfloat16() for t in (q, k, v, gate, beta)]
    o, h = chunk_gated_delta_rule_auto(*low, h0, backend="cuda")
    o_ref, h_ref = chunk_gated_delta_rule(*(t.float() for t in low), h0)
    assert o.dtype == torch.bfloat16
    torch.testing.assert_close(o.float(), o_ref, atol=3e-2 * max(1.0, o_ref.abs().max().item()), rtol=3e-2)
    torch.testing.assert_close(h.float(), h_ref, atol=3e-2 * max(1.0, h_ref.abs().max().item()), rtol=3e-2)
