"""The compiled decode loop: `toolssm.rollout.rollout`'s greedy decoding, token for token, in one numba function.

The loop knows neither the architecture nor the tool. It is generic over three jitted kernels passed in as
first-class functions (numba compiles one specialization per distinct triple and keeps it for the process):

    model_step(mp, toks (n,), state (B, S), scratch, logits (B, V), n)
        feed row j's token toks[j] to the model state in row j, for j < n; write row j's logits.
    tool_step(tp, ts (E, K), mems, i, tok, obs (Q,)) -> number of observation tokens written to obs
        episode i's tool runs command token tok (the vocabulary's ``accepts`` table said it is one).
    tool_record(tp, ts, mems, i, tok)
        episode i generated the thought or output token tok (pointer memory appends it).
    tool_ready(tp, ts, mems, i) -> bool
        the tool has room for whatever one more step may need (else the loop returns and Python grows it).

Everything an episode carries between tokens lives in arrays (`E`, the queues, the buffers), so the loop can
stop at the top of any step and be called again: after ``max_steps`` steps (the caller's progress bar) or when
a growable buffer is full (the caller doubles it). The role logic is `protocol.Episode.step`'s, line for line.
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import numba as nb

# per-episode integer fields, E[i, field]
PRE_POS, Q_HEAD, Q_LEN, N_TOK, MATCH, N_GEN, ANSWERING, DONE, OUT_LEN, TRAJ_LEN, MAX_TOK, ANS_ID, RECORD, HAS_TOOL = (
    range(14)
)
N_FIELDS = 14
# ctl: [0] live rows n, [1] steps run in this call, [2] the episode whose buffer is full, [3] its kind
LIVE, STEPS, FULL_EP, FULL_KIND = range(4)
# return codes
FINISHED, PAUSED, FULL = 0, 1, 2
FULL_OUT, FULL_TRAJ, FULL_TOOL = 1, 2, 3
# roles, as protocol.Role
R_THOUGHT, R_COMMAND, R_OBSERVATION, R_OUTPUT = 1, 2, 3, 4
Q_CAP = 16  # observation queue per episode: the longest observation a tool may return in one step


@nb.njit(cache=True, nogil=True)
def _feed(E, ref_flat, ref_off, i, tok):
    """Count a token fed to episode i and compare it with its reference (rollout's ``feed``)."""
    if E[i, MATCH] == 1:
        n = E[i, N_TOK]
        if not (n < ref_off[i + 1] - ref_off[i] and ref_flat[ref_off[i] + n] == tok):
            E[i, MATCH] = 0
    E[i, N_TOK] += 1


def _decode_loop(
    mp, tp, state, scratch, logits,
    active, current, ctl, E, pre_flat, pre_off, ref_flat, ref_off, queue, outs, traj_tok, traj_role,
    accepts, ts, mems, eos_id, max_steps,
):  # fmt: skip
    """Run up to ``max_steps`` batched steps (model_step and the tool's functions are globals, see make_loop).
    Returns FINISHED (no live episode left), PAUSED (max_steps run) or FULL (ctl[FULL_EP]'s buffer of kind
    ctl[FULL_KIND] needs to grow; nothing of this step was done)."""
    steps = 0
    while ctl[LIVE] > 0:
        n = ctl[LIVE]
        if steps >= max_steps:
            return PAUSED
        # room for one more step in every growable buffer, checked before anything of the step is done
        for j in range(n):
            i = active[j]
            if E[i, OUT_LEN] >= outs.shape[1]:
                ctl[FULL_EP], ctl[FULL_KIND] = i, FULL_OUT
                return FULL
            if E[i, RECORD] == 1 and E[i, TRAJ_LEN] + 1 + Q_CAP > traj_tok.shape[1]:
                ctl[FULL_EP], ctl[FULL_KIND] = i, FULL_TRAJ
                return FULL
            if E[i, HAS_TOOL] == 1 and not tool_ready(tp, ts, mems, i):
                ctl[FULL_EP], ctl[FULL_KIND] = i, FULL_TOOL
                return FULL
        model_step(mp, current, state, scratch, logits, n)
        w = 0  # rows kept, compacted in order (rollout's ``keep``)
        for j in range(n):
            i = active[j]
            finished = False
            if E[i, PRE_POS] < pre_off[i + 1] - pre_off[i]:  # forced: the input
                tok = pre_flat[pre_off[i] + E[i, PRE_POS]]
                E[i, PRE_POS] += 1
            elif E[i, Q_LEN] > 0:  # forced: an observation
                tok = queue[i, E[i, Q_HEAD]]
                E[i, Q_HEAD] += 1
                E[i, Q_LEN] -= 1
            else:  # generated: argmax (the first of equal maxima, as torch.argmax), then Episode.step
                row = logits[j]
                tok = 0
                best = row[0]
                for v in range(1, row.shape[0]):
                    if row[v] > best:
                        best = row[v]
                        tok = v
                E[i, N_GEN] += 1
                n_obs = 0
                if tok == eos_id:
                    role = R_OUTPUT
                    E[i, DONE] = 1
                elif E[i, HAS_TOOL] == 1 and accepts[tok]:
                    role = R_COMMAND
                    n_obs = tool_step(tp, ts, mems, i, tok, queue[i])
                else:
                    role = R_OUTPUT if E[i, ANSWERING] == 1 else R_THOUGHT
                    if tok == E[i, ANS_ID]:
                        E[i, ANSWERING] = 1
                    elif role == R_OUTPUT:
                        outs[i, E[i, OUT_LEN]] = tok
                        E[i, OUT_LEN] += 1
                    if E[i, HAS_TOOL] == 1:
                        tool_record(tp, ts, mems, i, tok)
                if E[i, RECORD] == 1:
                    t = E[i, TRAJ_LEN]
                    traj_tok[i, t] = tok
                    traj_role[i, t] = role
                    for k in range(n_obs):
                        traj_tok[i, t + 1 + k] = queue[i, k]
                        traj_role[i, t + 1 + k] = R_OBSERVATION
                    E[i, TRAJ_LEN] = t + 1 + n_obs
                if E[i, DONE] == 0 and E[i, MAX_TOK] >= 0 and E[i, N_GEN] >= E[i, MAX_TOK]:
                    E[i, DONE] = 2
                if E[i, DONE] != 0:
                    finished = True
                else:
                    E[i, Q_HEAD] = 0
                    E[i, Q_LEN] = n_obs
            _feed(E, ref_flat, ref_off, i, tok)
            if finished:
                continue
            if w != j:
                active[w] = i
                state[w, :] = state[j, :]
            current[w] = tok
            w += 1
        ctl[LIVE] = w
        steps += 1
        ctl[STEPS] += 1
    return FINISHED


_LOOPS: dict[tuple, object] = {}


def make_loop(name: str, model_step, tool_step, tool_record, tool_ready):
    """The decode loop compiled for one (model kernel, tool kernel) pair, named ``name``.

    The kernels are bound as the loop's globals (numba inlines them), not passed as first-class function
    arguments: a function that takes a dispatcher as an argument is not cached on disk by numba, and compiling
    the loop takes about half a minute. Each pair gets its own qualified name, so its on-disk cache entry is its
    own (same source file, loop.py); a process compiles or loads each pair once. Stale entries of earlier sources
    stay in the cache directory, unused."""
    key = (name, model_step, tool_step, tool_record, tool_ready)
    if key not in _LOOPS:
        # numba checks a cached function against its own source file only: a kernel edited in another module
        # would leave a stale loop on disk. The name carries a hash of every source the loop inlines.
        h = hashlib.sha1()
        for fn in (_decode_loop, *key[1:]):
            h.update(Path(sys.modules[fn.__module__].__file__).read_bytes())
        name = f"{name}_{h.hexdigest()[:12]}"
        g = dict(globals())
        g.update(model_step=model_step, tool_step=tool_step, tool_record=tool_record, tool_ready=tool_ready)
        qual = f"decode_loop_{name}"
        f = types.FunctionType(_decode_loop.__code__.replace(co_name=qual, co_qualname=qual), g, qual)
        f.__qualname__, f.__module__, f.__doc__ = qual, __name__, _decode_loop.__doc__
        _LOOPS[key] = nb.njit(cache=True, nogil=True)(f)
    return _LOOPS[key]
