"""The compiled decode engine (toolssm.engine) against the reference rollout (engine="torch"): identical results.

Models are randomly initialised, their weights scaled by 3 so that greedy decoding wanders over the whole
vocabulary (commands, reads past the edge, [ANS], [EOS], thoughts, outputs) for up to 2,000 generated tokens.
Where a token differs, the failure names the position and torch's logit margin (top-1 minus top-2) there: a
near-tie would show as a tiny margin, a bug as a large one. The trained-checkpoint comparison at scale is
bench/decode_engine.py --check.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from toolssm.engine import tools as tk
from toolssm.models.base import ModelConfig, build_model, resolve
from toolssm.protocol import Vocab
from toolssm.rollout import rollout
from toolssm.tasks import get_task
from toolssm.tools.pointer import EDGE, PointerMemory, command
from toolssm.tools.tape import LEFT, READ, RIGHT, TapeMemory, write


def _model(arch: str, vocab: Vocab, scale: float = 3.0, seed: int = 0, **settings):
    torch.manual_seed(seed)
    model = build_model(arch, len(vocab), resolve(ModelConfig(arch=arch, **settings)))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def _margin(model, tokens: list[int], k: int) -> float:
    """torch's top-1 minus top-2 logit when predicting position k of a trajectory from tokens[:k]."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokens[:k]]))
    top = logits[0, -1].topk(2).values
    return float(top[0] - top[1])


def assert_same(model, vocab, ref, got) -> None:
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        if a.trajectory is not None and a.trajectory.tokens != b.trajectory.tokens:
            ta, tb = vocab.ids(a.trajectory.tokens), vocab.ids(b.trajectory.tokens)
            k = next((j for j, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
            pytest.fail(
                f"episode {i}: first different token at position {k}: torch {a.trajectory.tokens[k:k + 1]}, "
                f"engine {b.trajectory.tokens[k:k + 1]}; torch's logit margin there: {_margin(model, ta, k):.3g}"
            )
        assert a == b, f"episode {i}: results differ"


def _run(model, task, vocab, problems, max_tokens=2000, batch=True):
    refs = [vocab.ids(task.demonstrate(p).tokens) for p in problems]
    out = {}
    for engine in ("torch", "compiled"):
        eps = [task.episode(p, max_tokens=max_tokens, record=True) for p in problems]
        if batch:
            out[engine] = rollout(model, vocab, eps, references=refs, engine=engine)
        else:
            out[engine] = [rollout(model, vocab, [e], references=[r], engine=engine)[0] for e, r in zip(eps, refs)]
    return out["torch"], out["compiled"]


@pytest.mark.parametrize("arch", ["lstm", "gru", "mamba"])
@pytest.mark.parametrize("task_name", ["addition", "hanoi", "tm-add", "addition-direct"])
def test_engine_matches_reference_on_random_models(arch, task_name):
    task = get_task(task_name)
    vocab = task.vocab()
    model = _model(arch, vocab)
    problems = [task.draw(random.Random(i), "3") for i in range(3)]
    ref, got = _run(model, task, vocab, problems)
    assert_same(model, vocab, ref, got)
    assert sum(r.n_generated for r in ref) > 40  # the comparison saw real decoding


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_engine_matches_reference_with_a_tied_head(arch):
    """A tied head (the embedding, no bias) is read by the kernels as the untied one is."""
    task = get_task("addition")
    vocab = task.vocab()
    model = _model(arch, vocab, tie_embeddings=True)
    problems = [task.draw(random.Random(i), "3") for i in range(3)]
    ref, got = _run(model, task, vocab, problems)
    assert_same(model, vocab, ref, got)
    assert sum(r.n_generated for r in ref) > 40


@pytest.mark.parametrize("arch", ["lstm", "mamba"])
def test_engine_matches_reference_one_episode_at_a_time(arch):
    task = get_task("addition")
    vocab = task.vocab()
    model = _model(arch, vocab, seed=1)
    problems = [task.draw(random.Random(10 + i), "4") for i in range(2)]
    ref, got = _run(model, task, vocab, problems, batch=False)
    assert_same(model, vocab, ref, got)


def test_engine_reproduces_the_expert_when_the_model_does():
    """A model that follows the expert (here: the reference says so) makes trajectory_match True in both."""
    task = get_task("addition")
    vocab = task.vocab()
    model = _model("lstm", vocab, scale=1.0)
    problems = [task.draw(random.Random(3), "2")]
    ref, got = _run(model, task, vocab, problems, max_tokens=50)
    assert_same(model, vocab, ref, got)
    assert got[0].trajectory_match is ref[0].trajectory_match is False  # random weights: not the expert


def test_engine_choice():
    task = get_task("addition")
    vocab = task.vocab()
    problem = task.draw(random.Random(0), "2")
    pythia = build_model("pythia", len(vocab), resolve(ModelConfig(arch="pythia")))
    (r,) = rollout(pythia, vocab, [task.episode(problem, max_tokens=20)], engine="auto")  # falls back to torch
    assert r.n_generated == 20
    with pytest.raises(ValueError, match="no compiled kernel for Pythia"):
        rollout(pythia, vocab, [task.episode(problem, max_tokens=20)], engine="compiled")
    with pytest.raises(ValueError, match="unknown engine"):
        rollout(pythia, vocab, [task.episode(problem)], engine="fast")


def test_pointer_kernel_matches_the_tool():
    """Random command streams (with records in between) through PointerKernel and PointerMemory."""
    vocab = Vocab.build(["a", "b", "c"], PointerMemory(3).tokens)
    rng = random.Random(0)
    for trial in range(20):
        tool = PointerMemory(3)
        tool.reset(rng.choices(["a", "b", "c"], k=rng.randrange(0, 5)))
        if trial % 2:  # start from a used tool: positions set, memory grown
            tool.step(command(2, "init"))
            tool.record("c")
        kern = tk.PointerKernel([tool], vocab)
        obs = np.zeros(4, np.int64)
        for _ in range(300):
            if rng.random() < 0.2:
                tok = rng.choice("abc")
                tool.record(tok)
                if not tk.pointer_ready(kern.tp, kern.ts, kern.mems, 0):
                    kern.grow(0)
                tk.pointer_record(kern.tp, kern.ts, kern.mems, 0, vocab.id(tok))
            else:
                cmd = command(rng.randrange(1, 4), rng.choice(["init", "left", "right", "read", "read"]))
                want = tool.step(cmd)
                n = tk.pointer_step(kern.tp, kern.ts, kern.mems, 0, vocab.id(cmd), obs)
                assert [vocab.token(t) for t in obs[:n]] == want
        assert [vocab.token(t) for t in kern.mems[0, : kern.ts[0, 0]]] == tool.memory


def test_tape_kernel_matches_the_tool():
    symbols = ["0", "1", "x"]
    tool = TapeMemory(symbols)
    vocab = Vocab.build(symbols, tool.tokens)
    cmds = [READ, LEFT, RIGHT, *(write(s) for s in [*symbols, "_"])]
    rng = random.Random(1)
    for _ in range(10):
        tool.reset(rng.choices(symbols, k=rng.randrange(0, 6)))
        kern = tk.TapeKernel([tool], vocab)
        obs = np.zeros(4, np.int64)
        for _ in range(400):
            cmd = rng.choice(cmds + [LEFT] * 3)  # drift left too: the tape must grow on both sides
            if not tk.tape_ready(kern.tp, kern.ts, kern.mems, 0):
                kern.grow(0)
            want = tool.step(cmd)
            n = tk.tape_step(kern.tp, kern.ts, kern.mems, 0, vocab.id(cmd), obs)
            assert [vocab.token(t) for t in obs[:n]] == want


def test_pointer_memory_is_compact():
    tool = PointerMemory(1)
    tool.reset(["7", "+", "5"])
    for t in ["1", "2"]:
        tool.record(t)
    assert tool.memory == ["7", "+", "5", "1", "2"]
    assert tool._mem.itemsize == 1  # one byte a token
    many = [f"s{i}" for i in range(300)]  # more than 256 symbols: wider ids, same memory
    for t in many:
        tool.record(t)
    assert tool.memory == ["7", "+", "5", "1", "2", *many]
    tool.step(command(1, "init"))
    for _ in range(304):
        tool.step(command(1, "right"))
    assert tool.step(command(1, "read")) == ["s299"]
    assert tool.step(command(1, "right")) == [] and tool.step(command(1, "read")) == [EDGE]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny untrained LSTM checkpoint for addition."""
    from toolssm.checkpoint import save_checkpoint, task_format

    task = get_task("addition")
    vocab = task.vocab()
    kwargs = {"d_model": 8, "n_layers": 1}
    out = tmp_path_factory.mktemp("run")
    save_checkpoint(out, build_model("lstm", len(vocab), kwargs), arch="lstm", model_kwargs=kwargs, vocab=vocab,
                    task="addition", step=0, task_format=task_format(task))  # fmt: skip
    return out


def test_solve_reads_the_problem_from_a_file_or_stdin(capsys, ckpt, tmp_path, monkeypatch):
    import io

    from toolssm.cli import main

    f = tmp_path / "p.txt"
    f.write_text("12+34\n")
    outs = []
    for argv in (["12+34", "--engine", "torch"], ["--file", str(f)], ["--file", "-"]):
        monkeypatch.setattr("sys.stdin", io.StringIO("12+34\n"))
        assert main(["solve", "--checkpoint", str(ckpt), "--max-tokens", "40", *argv]) == 0
        out = capsys.readouterr().out
        assert "tokens/s]" in out
        outs.append(out.splitlines()[0])  # the answer line: the same from every source and engine
    assert outs[0] == outs[1] == outs[2]
    for argv, needle in (
        (["1+2", "--file", str(f)], "not both"),
        (["--file", str(tmp_path / "none.txt")], "cannot read --file"),
        (["1+2", "--engine", "fast"], "unknown engine 'fast'"),
    ):
        assert main(["solve", "--checkpoint", str(ckpt), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_decode_resumes_after_pausing_every_few_steps():
    """The loop stops every `chunk` steps (the progress bar) and resumes where it was: same episodes."""
    from toolssm import engine

    task = get_task("addition")
    vocab = task.vocab()
    model = _model("lstm", vocab, seed=2)
    problems = [task.draw(random.Random(20 + i), "3") for i in range(3)]
    runs = []
    for chunk in (1 << 16, 5):
        eps = [task.episode(p, max_tokens=300, record=True) for p in problems]
        fed = engine.decode(model, vocab, eps, chunk=chunk)
        runs.append([(n, ep.output, ep.trajectory.tokens, ep.n_generated) for (n, _), ep in zip(fed, eps)])
    assert runs[0] == runs[1]
    assert sum(r[0] for r in runs[0]) > 50


def test_a_batch_of_differently_configured_tools_falls_back():
    from toolssm import engine
    from toolssm.protocol import Episode

    vocab = Vocab.build(["1", "2"], PointerMemory(6).tokens)
    model = _model("lstm", vocab)
    eps = [Episode(PointerMemory(k), ["1", "2"], max_tokens=30) for k in (3, 6)]
    assert "configured differently" in engine.unsupported(model, eps)
    ref = rollout(model, vocab, [Episode(PointerMemory(k), ["1", "2"], max_tokens=30) for k in (3, 6)], engine="torch")
    assert rollout(model, vocab, eps, engine="auto") == ref


def test_a_second_rollout_reuses_the_compiled_loop():
    """The loop of a (model, tool) pair is made once a process: the tool kernel's functions are looked up on its
    class (through an instance they are bound methods, a new key every call: the loop was reloaded from numba's
    disk cache, 60 ms, at every rollout, and kept in memory again)."""
    from toolssm.engine import loop as L

    task = get_task("addition")
    vocab = task.vocab()
    model = _model("lstm", vocab, scale=1.0)
    problem = task.draw(random.Random(0), "2")
    rollout(model, vocab, [task.episode(problem, max_tokens=20)], engine="compiled")
    n = len(L._LOOPS)
    for _ in range(3):
        rollout(model, vocab, [task.episode(problem, max_tokens=20)], engine="compiled")
    assert len(L._LOOPS) == n


@pytest.mark.parametrize("n", [1, 3, 4, 7, 20])
def test_tiled_matmul_matches_numpy(n):
    """rnn.matmul_nt's 4x4 tiles and its edges (rows of X or W past the last full tile, a column window)."""
    from toolssm.engine.rnn import matmul_nt

    rng = np.random.default_rng(n)
    W = rng.standard_normal((30, 50)).astype(np.float32)  # 30 rows: 7 tiles and 2 left over
    X = rng.standard_normal((n, 50)).astype(np.float32)
    for k0, k1 in ((0, 50), (13, 41)):
        G = np.full((n, 30), np.nan, np.float32)
        matmul_nt(W, X, k0, k1, G, n)
        want = X[:, k0:k1].astype(np.float64) @ W[:, k0:k1].T.astype(np.float64)
        np.testing.assert_allclose(G, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 20])
def test_transposed_matmul_matches_numpy(n):
    """rnn.matmul_tn's 4-row passes, its 1-row tail, a K that is not a multiple of 8, and a column offset in X."""
    from toolssm.engine.rnn import matmul_tn

    rng = np.random.default_rng(n)
    for K, x0 in ((50, 0), (27, 13), (8, 5), (3, 0)):
        WT = rng.standard_normal((K, 30)).astype(np.float32)
        X = rng.standard_normal((n, 60)).astype(np.float32)
        G = np.full((n, 30), np.nan, np.float32)
        matmul_tn(WT, X, x0, G, n)
        want = X[:, x0 : x0 + K].astype(np.float64) @ WT.astype(np.float64)
        np.testing.assert_allclose(G, want, rtol=0, atol=1e-4)


def test_softplus_and_log1p_are_accurate_to_an_ulp_or_so():
    """mamba._softplus (through the vectorizable exp64 and _log1p01) against libm's log1p(exp(v))."""
    import math

    from numba import njit

    from toolssm.engine.mamba import _log1p01, _softplus

    @njit
    def both(x, a, b):
        for i in range(x.shape[0]):
            a[i] = _softplus(x[i])
            b[i] = _log1p01(min(abs(x[i]) / 700.0, 1.0))

    x = np.concatenate([np.linspace(-700, 30, 200_001), np.random.default_rng(0).standard_normal(10_000) * 5])
    a, b = np.zeros_like(x), np.zeros_like(x)
    both(x, a, b)
    want = np.array([v if v > 20 else math.log1p(math.exp(v)) for v in x])
    assert np.abs(a / want - 1).max() < 1e-14
    y = np.minimum(np.abs(x) / 700.0, 1.0)
    ok = y > 0
    assert np.abs(b[ok] / np.log1p(y[ok]) - 1).max() < 1e-14 and np.all(b[~ok] == 0)


def test_exp64_is_accurate_to_an_ulp_or_so():
    from toolssm.engine.rnn import vexp

    x = np.concatenate([np.linspace(-700, 700, 200_001), np.random.default_rng(0).standard_normal(10_000)])
    out = np.zeros_like(x)
    vexp(x, out)
    assert np.abs(out / np.exp(x) - 1).max() < 1e-13


def test_exp32_is_accurate_to_a_few_float32_ulps():
    """The gates' float32 exp (the LSTM and GRU cells) against float64 exp of the same float32 inputs: within 3.4
    float32 ulps (2^-23 relative each; measured 2.6), over the whole range it is used on (+-87)."""
    from toolssm.engine.rnn import vexp32

    x = np.concatenate([np.linspace(-87, 87, 400_001), 10 * np.random.default_rng(0).standard_normal(100_000)])
    x = x.astype(np.float32)
    out = np.zeros_like(x)
    vexp32(x, out)
    assert out.dtype == np.float32
    assert np.abs(out / np.exp(x.astype(np.float64)) - 1).max() < 4e-7


def _trained(arch: str, task, steps: int = 40, seed: int = 0, lr: float = 2e-2):
    """A small model trained on the task's expert trajectories for a few dozen steps: decoding that follows the
    expert for a while and then goes its own way, as a trained checkpoint does past its training size."""
    from toolssm.train import TrainConfig, make_batch, masked_loss

    vocab = task.vocab()
    torch.manual_seed(seed)
    model = build_model(arch, len(vocab), resolve(ModelConfig(arch=arch, d_model=24, n_layers=2)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    cfg = TrainConfig(batch_size=8, train_size=2, seed=seed)
    losses = []
    for step in range(steps):
        tokens, mask = make_batch(task, vocab, cfg, step)
        loss = masked_loss(model, tokens, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.mark.parametrize(
    "arch,task_name",
    [("lstm", "addition"), ("lstm", "multiplication-x2"), ("lstm", "hanoi"), ("lstm", "tm-add"),
     ("gru", "multiplication-x2"), ("mamba", "tm-add")],
)  # fmt: skip
def test_engine_matches_reference_on_briefly_trained_models(arch, task_name):
    """Trained weights (not random ones): 20 problems of sizes 2 and 3 as one batch of 20, and 4 of them one at a
    time, each to its task's token budget (at most 400 generated tokens, to keep the torch side fast); identical
    trajectories, or the failure names the first difference and torch's logit margin there."""
    task = get_task(task_name)
    vocab = task.vocab()
    model, losses = _trained(arch, task)
    assert losses[-1] < 0.7 * losses[0]  # it learned something
    problems = [task.draw(random.Random(f"{task_name}:{i}"), "2" if i < 10 else "3") for i in range(20)]
    for batch in (True, False):
        todo = problems if batch else problems[::5]
        refs = [vocab.ids(task.demonstrate(p).tokens) for p in todo]
        out = {}
        for engine in ("torch", "compiled"):
            eps = [task.episode(p, max_tokens=min(400, task.token_budget(p)), record=True) for p in todo]
            if batch:
                out[engine] = rollout(model, vocab, eps, references=refs, engine=engine)
            else:
                out[engine] = [rollout(model, vocab, [e], references=[r], engine=engine)[0] for e, r in zip(eps, refs)]
        assert_same(model, vocab, out["torch"], out["compiled"])
        assert sum(r.n_generated for r in out["torch"]) > 20 * len(todo)  # real decoding, not an immediate [EOS]


@pytest.mark.parametrize("task_name", ["addition", "hanoi", "tm-add"])
def test_engine_leaves_each_tool_as_the_torch_rollout_does(task_name):
    """After a compiled decode, each episode's Python tool holds the final state (pointer memory and pointers;
    the tape's cells and head), as after the torch loop, so a task graded on the tool reads the same."""
    task = get_task(task_name)
    vocab = task.vocab()
    model = _trained("lstm", task)[0] if task_name == "tm-add" else _model("lstm", vocab, seed=3)  # random: no tape
    problems = [task.draw(random.Random(30 + i), "3") for i in range(3)]
    eps = {}
    for engine in ("torch", "compiled"):
        eps[engine] = [task.episode(p, max_tokens=min(400, task.token_budget(p))) for p in problems]
        rollout(model, vocab, eps[engine], engine=engine)
    changed = 0
    for p, a, b in zip(problems, eps["torch"], eps["compiled"]):
        if isinstance(a.tool, PointerMemory):
            assert (b.tool.memory, b.tool.positions) == (a.tool.memory, a.tool.positions)
            changed += len(a.tool.positions)
            for t in (a.tool, b.tool):  # the loaded tool goes on as the stepped one
                t.record("[EDGE]")
            assert b.tool.memory == a.tool.memory and b.tool.step(command(1, "read")) == a.tool.step(command(1, "read"))
        else:
            assert (b.tool.cells, b.tool.head) == (a.tool.cells, a.tool.head)
            start = task.episode(p)
            start.reset()
            changed += (a.tool.cells, a.tool.head) != (start.tool.cells, start.tool.head)
    assert changed > 0  # the tools were used


def test_pointer_write_back_matches_the_tool_past_256_symbols():
    """The kernel's memory handed back to a PointerMemory equals one the tool recorded itself, 1-byte indices
    and (past 256 distinct symbols) 4-byte ones."""
    symbols = [f"s{i}" for i in range(300)]
    vocab = Vocab.build(symbols, PointerMemory(2).tokens)
    rng = random.Random(5)
    for n_sym in (5, 300):
        stream = rng.choices(symbols[:n_sym], k=2000)
        ref, back = PointerMemory(2), PointerMemory(2)
        ref.reset(stream[:3])
        back.reset(stream[:3])
        kern = tk.PointerKernel([back], vocab)
        for tok in stream[3:]:
            ref.record(tok)
            if not tk.pointer_ready(kern.tp, kern.ts, kern.mems, 0):
                kern.grow(0)
            tk.pointer_record(kern.tp, kern.ts, kern.mems, 0, vocab.id(tok))
        ref.step(command(2, "init"))
        tk.pointer_step(kern.tp, kern.ts, kern.mems, 0, vocab.id(command(2, "init")), np.zeros(4, np.int64))
        kern.write_back([back], vocab)
        assert back.memory == ref.memory and back.positions == ref.positions
        assert back._mem.typecode == ref._mem.typecode == ("B" if n_sym <= 256 else "I")
