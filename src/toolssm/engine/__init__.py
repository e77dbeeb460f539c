"""A compiled tool-in-the-loop decoder: `toolssm.rollout.rollout`'s greedy decoding with no Python per token.

`rollout` (the readable reference) calls `decode` here when ``engine`` is ``"compiled"``, or ``"auto"`` and
`unsupported` finds nothing against it. The model step, the argmax, the episode's role logic and the tool all
run in one numba loop (loop.py), batched, each episode with its own state, observation queue and memory.

Which kernels run is a lookup in two tables:

    MODELS  model class -> ModelKernel(step, pack)    (rnn.py: LSTM, GRU; mamba.py: Mamba, Mamba-2)
    TOOLS   tool class  -> tool kernel class          (tools.py: pointer memory, the tape; and no tool)

A new architecture adds one ModelKernel (a jitted step over a float32 state row, and ``pack``, which reads
the torch module's weights); a new tool adds one kernel class. docs/engine.md has the contracts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from toolssm.protocol import EOS, Episode, Role, Vocab


@dataclass(frozen=True)
class ModelKernel:
    name: str  # names the compiled loop of each (model, tool) pair
    step: Any  # a numba-jitted model_step (loop.py)
    pack: Callable  # model -> (params tuple, state width S, scratch(B) -> tuple of work arrays)


def _tables() -> tuple[dict, dict]:
    from toolssm.engine import mamba as mk
    from toolssm.engine import rnn as rk
    from toolssm.engine import tools as tk
    from toolssm.models.mamba import Mamba
    from toolssm.models.rnn import GRU, LSTM
    from toolssm.tools.pointer import PointerMemory
    from toolssm.tools.tape import TapeMemory

    models = {
        LSTM: ModelKernel("lstm", rk.lstm_step, rk.lstm_pack),
        GRU: ModelKernel("gru", rk.gru_step, rk.gru_pack),
        Mamba: ModelKernel("mamba", mk.mamba_step, mk.mamba_pack),
    }
    tools = {PointerMemory: tk.PointerKernel, TapeMemory: tk.TapeKernel, type(None): tk.NoToolKernel}
    return models, tools


def unsupported(model: torch.nn.Module, episodes: Sequence[Episode], device: Any = "cpu") -> str | None:
    """Why the compiled engine cannot decode this (model, episodes) pair, or None when it can."""
    try:
        models, tools = _tables()
    except ImportError as e:  # pragma: no cover - numba is a dependency
        return f"the compiled engine needs numba ({e})"
    if type(model) not in models:
        return f"no compiled kernel for {type(model).__name__} (have: {', '.join(c.__name__ for c in models)})"
    if torch.device(device).type != "cpu" or any(p.device.type != "cpu" for p in model.parameters()):
        return "the compiled engine runs on the CPU; the model is on another device"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "the compiled engine reads float32 weights"
    kinds = {type(ep.tool) for ep in episodes}
    if len(kinds) > 1:
        return "the episodes use different tools"
    (kind,) = kinds
    if kind not in tools:
        return f"no compiled kernel for the tool {kind.__name__}"
    first = episodes[0].tool
    if first is not None and any(tuple(ep.tool.tokens) != tuple(first.tokens) for ep in episodes[1:]):
        return "the episodes' tools are configured differently (one command table serves the batch)"
    return None


def _accepts(episodes: Sequence[Episode], vocab: Vocab) -> np.ndarray:
    tool = episodes[0].tool
    if tool is None:
        return np.zeros(len(vocab), np.bool_)
    return np.array([tool.accepts(t) for t in vocab.tokens], np.bool_)


def _flat(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length rows as one array and offsets: row i is flat[off[i]:off[i + 1]]."""
    off = np.zeros(len(rows) + 1, np.int64)
    off[1:] = np.cumsum([len(r) for r in rows])
    flat = np.zeros(max(1, int(off[-1])), np.int64)
    for i, r in enumerate(rows):
        flat[off[i] : off[i + 1]] = r
    return flat, off


def _wider(a: np.ndarray) -> np.ndarray:
    """a with twice the columns, the new ones zero."""
    new = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    new[:, : a.shape[1]] = a
    return new


def decode(
    model: torch.nn.Module,
    vocab: Vocab,
    episodes: Sequence[Episode],
    references: Sequence[Sequence[int]] | None = None,
    *,
    progress: bool = False,
    desc: str = "decode",
    chunk: int = 1 << 16,
) -> list[tuple[int, bool | None]]:
    """Decode every episode to its end, as `rollout` would, and leave each `Episode` as its own ``step`` would
    have (output, n_generated, answering, terminated, truncated, trajectory, and its tool's final state).
    Returns each episode's (tokens fed, whether they matched its reference so far or None)."""
    from tqdm.auto import tqdm

    from toolssm.engine import loop as L

    models, tools = _tables()
    mk = models[type(model)]
    mp, S, scratch_fn = mk.pack(model)
    n, V = len(episodes), len(vocab)
    firsts = [ep.reset() for ep in episodes]
    tk = tools[type(episodes[0].tool)]([ep.tool for ep in episodes], vocab)
    accepts = _accepts(episodes, vocab)
    for ep in episodes[1:]:  # tools of one class with different commands (e.g. n_pointers): one table each
        if ep.tool is not None and not all(ep.tool.accepts(t) == a for t, a in zip(vocab.tokens, accepts)):
            raise ValueError("the compiled engine needs episodes whose tools accept the same commands")

    E = np.zeros((n, L.N_FIELDS), np.int64)
    pre_flat, pre_off = _flat([vocab.ids(f) for f in firsts])
    ref_flat, ref_off = _flat(references if references is not None else [[] for _ in episodes])
    E[:, L.MATCH] = 1 if references is not None else -1
    for i, ep in enumerate(episodes):
        E[i, L.MAX_TOK] = -1 if ep.max_tokens is None else ep.max_tokens
        E[i, L.ANS_ID] = vocab.id(ep.answer_token) if ep.answer_token in vocab else -1
        E[i, L.RECORD] = ep.trajectory is not None
        E[i, L.HAS_TOOL] = ep.tool is not None
    dt = np.uint8 if V <= 256 else np.int32
    outs = np.zeros((n, 64), dt)
    rec = any(ep.trajectory is not None for ep in episodes)
    traj_tok, traj_role = np.zeros((n, 64 if rec else 1), dt), np.zeros((n, 64 if rec else 1), np.int8)
    queue = np.zeros((n, L.Q_CAP), np.int64)
    state = np.zeros((n, S), np.float32)  # the initial state (torch's None) is zeros for every kernel here
    scratch = scratch_fn(n)
    logits = np.zeros((n, V), np.float32)
    active = np.arange(n, dtype=np.int64)
    current = np.zeros(n, np.int64)
    for i in range(n):  # rollout feeds each episode's first token before the loop
        tok = int(pre_flat[pre_off[i]])
        E[i, L.PRE_POS] = 1
        if E[i, L.MATCH] == 1:
            E[i, L.MATCH] = int(ref_off[i + 1] > ref_off[i] and ref_flat[ref_off[i]] == tok)
        E[i, L.N_TOK] = 1
        current[i] = tok
    ctl = np.array([n, 0, -1, 0], np.int64)
    eos = vocab.id(EOS)
    # the tool's functions from its class: through the instance they would be bound methods, a new one each call
    # (numba's dispatcher binds like a function), so make_loop's key would miss and reload the loop every call
    kc = type(tk)
    run = L.make_loop(f"{mk.name}_{kc.name}", mk.step, kc.step, kc.record, kc.ready)
    bar = tqdm(disable=not progress, desc=desc, unit="tok", dynamic_ncols=True, leave=False)
    done = 0
    while True:
        code = run(
            mp, tk.tp, state, scratch, logits,
            active, current, ctl, E, pre_flat, pre_off, ref_flat, ref_off, queue, outs, traj_tok, traj_role,
            accepts, tk.ts, tk.mems, eos, chunk,
        )  # fmt: skip
        bar.update(int(ctl[L.STEPS]) - done)
        done = int(ctl[L.STEPS])
        if code == L.FINISHED:
            break
        if code == L.FULL:
            i, kind = int(ctl[L.FULL_EP]), int(ctl[L.FULL_KIND])
            if kind == L.FULL_TOOL:
                tk.grow(i)
            elif kind == L.FULL_OUT:
                outs = _wider(outs)
            else:
                traj_tok, traj_role = _wider(traj_tok), _wider(traj_role)
    bar.close()
    decode.last_tool_bytes = tk.nbytes()  # type: ignore[attr-defined]  # for bench/infinity.py
    tk.write_back([ep.tool for ep in episodes], vocab)

    toks = vocab.tokens
    out = []
    for i, ep in enumerate(episodes):
        ep.n_generated = int(E[i, L.N_GEN])
        ep.answering = bool(E[i, L.ANSWERING])
        ep.terminated, ep.truncated = bool(E[i, L.DONE] == 1), bool(E[i, L.DONE] == 2)
        ep.output = [toks[t] for t in outs[i, : E[i, L.OUT_LEN]].tolist()]
        if ep.trajectory is not None:
            m = int(E[i, L.TRAJ_LEN])
            ep.trajectory.tokens.extend(toks[t] for t in traj_tok[i, :m].tolist())
            ep.trajectory.roles.extend(Role(r) for r in traj_role[i, :m].tolist())
        out.append((int(E[i, L.N_TOK]), None if E[i, L.MATCH] < 0 else bool(E[i, L.MATCH])))
    return out
