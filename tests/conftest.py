import pytest
import torch

# On a shared 2-core box, two intra-op threads make small ops stall for milliseconds.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def stop_training_at(monkeypatch):
    """``run = stop_training_at(k)`` makes training raise KeyboardInterrupt when it asks for step k's batch
    (as a Ctrl-C there would), until ``run()`` is called, which puts the real batch maker back."""
    import toolssm.train as train_mod

    real = train_mod.make_batch

    def arm(k: int):
        def crash(task, vocab, cfg, step, *rest):
            if step == k:
                raise KeyboardInterrupt
            return real(task, vocab, cfg, step, *rest)

        monkeypatch.setattr(train_mod, "make_batch", crash)
        return lambda: monkeypatch.setattr(train_mod, "make_batch", real)

    return arm


def skip_if_transformers_binds_gpu_kernels(model):
    """transformers (5.x) binds its Mamba and Mamba-2 modules to causal_conv1d and mamba_ssm when they import, on CPU
    tensors too, and those kernels refuse CPU tensors ("Expected x.is_cuda() to be true", seen on the H200 with the
    gpu extra installed). Our models never import them on CPU (models/kernels.py), but such a transformers model
    cannot be the CPU reference there: skip, and check the parity where the gpu extra is absent (as in CI)."""
    import importlib.util

    kind = getattr(getattr(model, "config", None), "model_type", "")
    present = [p for p in ("causal_conv1d", "mamba_ssm") if importlib.util.find_spec(p) is not None]
    if kind in ("mamba", "mamba2") and present:
        pytest.skip(f"transformers' {kind} runs {', '.join(present)} on CPU tensors, which fails there")
    return model
