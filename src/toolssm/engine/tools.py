"""Tool kernels for the compiled decode loop: pointer memory, the tape, and no tool.

A tool kernel is three jitted functions (see loop.py for their contracts) and a Python class that turns the
episodes' tools, just after ``Episode.reset()``, into arrays: ``tp`` (constants, from the vocabulary), ``ts``
(int64, one row of scalars per episode) and ``mems`` (a 2-D token-id array, one row per episode, all of one
capacity). ``grow`` doubles the capacity when ``ready`` says an episode's row is full; ``write_back`` hands the
final state to the Python tools at the end. (Rows rather than a numba
typed List of arrays: a typed List costs seconds of compilation on first use in every process.) The kernels
return the same observations as the Python tools (toolssm.tools.pointer, toolssm.tools.tape), token for token.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from toolssm.protocol import EOS, Vocab


def id_dtype(vocab_size: int):
    """The smallest unsigned integer type that holds every token id (memory: 1 byte a token up to 256)."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


# -- pointer memory: ts[i] = [length, pos_1 .. pos_P, created_1 .. created_P] ------------------------------
P_INIT, P_LEFT, P_RIGHT, P_READ = 0, 1, 2, 3


@nb.njit(cache=True, nogil=True)
def pointer_step(tp, ts, mems, i, tok, obs):
    op_of, ptr_of, edge, err = tp
    op, k = op_of[tok], ptr_of[tok]
    P = (ts.shape[1] - 1) // 2
    if op < 0:
        obs[0] = err
        return 1
    if op == P_INIT:
        ts[i, 1 + k] = 0
        ts[i, 1 + P + k] = 1
        return 0
    if ts[i, 1 + P + k] == 0:
        obs[0] = err
        return 1
    if op == P_LEFT:
        ts[i, 1 + k] -= 1
        return 0
    if op == P_RIGHT:
        ts[i, 1 + k] += 1
        return 0
    pos = ts[i, 1 + k]
    obs[0] = mems[i, pos] if 0 <= pos < ts[i, 0] else edge
    return 1


@nb.njit(cache=True, nogil=True)
def pointer_record(tp, ts, mems, i, tok):
    mems[i, ts[i, 0]] = tok
    ts[i, 0] += 1


@nb.njit(cache=True, nogil=True)
def pointer_ready(tp, ts, mems, i):
    return ts[i, 0] < mems.shape[1]


@nb.njit(cache=True, nogil=True)
def intern_ids(ids, V):
    """(the distinct ids in order of first sight, each id's index in that order), as PointerMemory interns its
    symbols: one pass, no sort, the indices in ids' own dtype (fewer than V of them), so handing a 36-million-token
    memory back costs one more copy of it and no int64 temporaries."""
    where = np.full(V, -1, np.int64)
    order = np.empty(V, np.int64)
    index = np.empty_like(ids)
    m = 0
    for t in range(ids.shape[0]):
        v = ids[t]
        if where[v] < 0:
            where[v] = m
            order[m] = v
            m += 1
        index[t] = where[v]
    return order[:m], index


class PointerKernel:
    name = "pointer"
    step, record, ready = pointer_step, pointer_record, pointer_ready

    def __init__(self, tools, vocab: Vocab):
        from toolssm.tools.base import ERR
        from toolssm.tools.pointer import EDGE, command

        P = max(t.n_pointers for t in tools)
        V = len(vocab)
        op_of, ptr_of = np.full(V, -1, np.int64), np.zeros(V, np.int64)
        for k in range(1, P + 1):
            for op, name in enumerate(("init", "left", "right", "read")):
                tok = command(k, name)
                if tok in vocab:
                    op_of[vocab.id(tok)], ptr_of[vocab.id(tok)] = op, k - 1
        err = vocab.id(ERR) if ERR in vocab else 0
        self.tp = (op_of, ptr_of, vocab.id(EDGE) if EDGE in vocab else 0, err)
        dt = id_dtype(V)
        self.ts = np.zeros((len(tools), 1 + 2 * P), np.int64)
        ids = [np.asarray(t.memory_ids(vocab), np.int64) for t in tools]
        self.mems = np.zeros((len(tools), max(64, 2 * max(len(m) for m in ids))), dt)
        for i, t in enumerate(tools):
            self.mems[i, : len(ids[i])] = ids[i]
            self.ts[i, 0] = len(ids[i])
            for k, pos in t.positions.items():
                self.ts[i, k], self.ts[i, 1 + P + k - 1] = pos, 1

    def grow(self, i: int) -> None:
        old = self.mems
        self.mems = np.zeros((old.shape[0], 2 * old.shape[1]), old.dtype)
        self.mems[:, : old.shape[1]] = old

    def nbytes(self) -> int:
        return int(self.mems.nbytes)

    def write_back(self, tools, vocab: Vocab) -> None:
        """Leave each Python tool as its own steps would have: the memory and the pointers."""
        P = (self.ts.shape[1] - 1) // 2
        for i, t in enumerate(tools):
            symbols, index = intern_ids(self.mems[i, : self.ts[i, 0]], len(vocab))
            index = index.astype(np.uint8 if len(symbols) <= 256 else np.uint32, copy=False)
            created = [k for k in range(P) if self.ts[i, 1 + P + k]]
            t.load([vocab.tokens[u] for u in symbols], index.tobytes(),
                   {k + 1: int(self.ts[i, 1 + k]) for k in created})  # fmt: skip


# -- the tape: ts[i] = [head, offset], cell c is mems[i][c + offset]; a blank cell holds the [EOS] id -------
T_READ, T_LEFT, T_RIGHT, T_WRITE = 0, 1, 2, 3


@nb.njit(cache=True, nogil=True)
def tape_step(tp, ts, mems, i, tok, obs):
    op_of, sym_of, eos, err = tp
    op = op_of[tok]
    head, off = ts[i, 0], ts[i, 1]
    if op == T_READ:
        c = head + off
        obs[0] = mems[i, c] if 0 <= c < mems.shape[1] else eos
        return 1
    if op == T_RIGHT:
        ts[i, 0] = head + 1
        return 0
    if op == T_LEFT:
        ts[i, 0] = head - 1
        return 0
    if op == T_WRITE:
        mems[i, head + off] = sym_of[tok]  # tape_ready made room under the head
        return 0
    obs[0] = err
    return 1


@nb.njit(cache=True, nogil=True)
def no_record(tp, ts, mems, i, tok):
    """For tools whose memory is not the context (the tape, no tool): thoughts and outputs are not recorded."""


@nb.njit(cache=True, nogil=True)
def tape_ready(tp, ts, mems, i):
    c = ts[i, 0] + ts[i, 1]
    return 0 <= c < mems.shape[1]


class TapeKernel:
    name = "tape"
    step, record, ready = tape_step, no_record, tape_ready

    def __init__(self, tools, vocab: Vocab):
        from toolssm.tools.base import ERR
        from toolssm.tools.tape import LEFT, READ, RIGHT

        V = len(vocab)
        eos = vocab.id(EOS)
        op_of, sym_of = np.full(V, -1, np.int64), np.zeros(V, np.int64)
        for tok, op in ((READ, T_READ), (LEFT, T_LEFT), (RIGHT, T_RIGHT)):
            if tok in vocab:
                op_of[vocab.id(tok)] = op
        for t in tools:
            for cmd, s in t._writes.items():
                if cmd in vocab:
                    op_of[vocab.id(cmd)] = T_WRITE
                    sym_of[vocab.id(cmd)] = eos if s is None else vocab.id(s)
        self.tp = (op_of, sym_of, eos, vocab.id(ERR) if ERR in vocab else 0)
        self.eos = eos
        self.dt = id_dtype(V)
        self.ts = np.zeros((len(tools), 2), np.int64)
        lo = min(min([0, t.head, *t.cells]) for t in tools)
        hi = max(max([0, t.head, *t.cells]) for t in tools) + 1
        pad = max(32, hi - lo)
        self.mems = np.full((len(tools), hi - lo + 2 * pad), eos, self.dt)
        for i, t in enumerate(tools):
            for c, s in t.cells.items():
                self.mems[i, c + pad - lo] = vocab.id(s)
            self.ts[i] = t.head, pad - lo

    def grow(self, i: int) -> None:
        old = self.mems
        n = old.shape[1]
        self.mems = np.full((old.shape[0], 3 * n), self.eos, old.dtype)  # room on both sides of every row
        self.mems[:, n : 2 * n] = old
        self.ts[:, 1] += n

    def nbytes(self) -> int:
        return int(self.mems.nbytes)

    def write_back(self, tools, vocab: Vocab) -> None:
        """Leave each Python tool as its own steps would have: the written cells and the head."""
        for i, t in enumerate(tools):
            row, off = self.mems[i], int(self.ts[i, 1])
            (cells,) = np.nonzero(row != self.eos)
            t.cells = {int(c) - off: vocab.tokens[row[c]] for c in cells}
            t.head = int(self.ts[i, 0])


# -- no tool: every generated token is a thought or an output ---------------------------------------------


@nb.njit(cache=True, nogil=True)
def none_step(tp, ts, mems, i, tok, obs):
    return 0


@nb.njit(cache=True, nogil=True)
def none_ready(tp, ts, mems, i):
    return True


class NoToolKernel:
    name = "none"
    step, record, ready = none_step, no_record, none_ready

    def __init__(self, tools, vocab: Vocab):
        self.tp = (np.zeros(1, np.int64),)
        self.ts = np.zeros((len(tools), 1), np.int64)
        self.mems = np.zeros((len(tools), 1), np.uint8)

    def grow(self, i: int) -> None:  # pragma: no cover - never full
        raise AssertionError("no tool has no memory to grow")

    def nbytes(self) -> int:
        return 0

    def write_back(self, tools, vocab: Vocab) -> None:
        pass
