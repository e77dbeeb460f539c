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
