"""A checkable form of the local-policy principle (docs/design.md).

An expert's policy is *k-local* on a set of trajectories if every generated token (thought, command,
output) is a function of the k tokens before it (of any role, observations included): no two positions
share those k tokens and differ in what comes next. A loop that has to count its iterations is not
k-local for any k below the count, so a k that stays the same from 5-digit to 500-digit problems says
the policy never counts. This is also the lookup table of the paper's Theorem 2.2 learner, with the
recent tokens standing in for the finite-state control.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from toolssm.protocol import TRAINED_ROLES, Trajectory


def window_conflict(trajectories: Iterable[Trajectory], k: int) -> tuple[tuple[str, ...], str, str] | None:
    """A window of k tokens followed by two different generated tokens, or None if the policy is k-local."""
    table: dict[tuple[str, ...], str] = {}
    for traj in trajectories:
        toks = traj.tokens
        for i, role in enumerate(traj.roles):
            if role in TRAINED_ROLES:
                window = tuple(toks[max(0, i - k) : i])
                seen = table.setdefault(window, toks[i])
                if seen != toks[i]:
                    return window, seen, toks[i]
    return None


def smallest_window(is_local: Callable[[int], bool], max_k: int) -> int | None:
    """The smallest k <= max_k with ``is_local(k)``, or None. k-locality is upward closed (a function of the
    last k tokens is one of the last k + 1), so a binary search finds it."""
    if not is_local(max_k):
        return None
    lo, hi = 1, max_k
    while lo < hi:
        mid = (lo + hi) // 2
        if is_local(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def policy_window(trajectories: Iterable[Trajectory], max_k: int = 64) -> int:
    """The smallest k for which the trajectories' policy is k-local (ValueError if above ``max_k``)."""
    trajs = list(trajectories)
    k = smallest_window(lambda k: window_conflict(trajs, k) is None, max_k)
    if k is None:
        raise ValueError(f"the policy is not {max_k}-local")
    return k


# -- hashed windows and the shortest-suffix table: the k-gram learner's rule, shared by the learner
#    (toolssm.models.kgram) and the coverage analysis (toolssm.analysis) -----------------------------------

_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def suffix_keys(x: np.ndarray, max_k: int, start: int) -> Iterator[np.ndarray]:
    """For j = 1, ..., max_k: a 64-bit key (int64) of the j entries ending at each position p >= ``start`` of
    ``x`` (..., L), that is of ``x[..., p-j+1 : p+1]``; shape (..., L - start). Entries are token ids plus
    one, 0 standing for "before the start" (``start`` >= max_k - 1 so that every window fits).

    Each key extends the previous one by one older entry (an xor-multiply-shift step), then is finished
    with splitmix64's mixer, so all max_k lengths cost max_k passes and the keys behave like random 64-bit
    numbers: two different windows share a key with probability about 2^-64 per pair (about 3e-6 among
    10^7 distinct windows), and a shared key would only merge two contexts."""
    if start < max_k - 1:
        raise ValueError(f"start={start} leaves no room for windows of {max_k}")
    x = np.ascontiguousarray(x, dtype=np.int64).view(np.uint64)
    n = max(0, x.shape[-1] - start)
    h = np.full((*x.shape[:-1], n), 0x5851F42D4C957F2D, dtype=np.uint64)
    for j in range(1, max_k + 1):
        h ^= x[..., start - j + 1 : start - j + 1 + n]
        h *= _M1
        h ^= h >> np.uint64(29)
        out = h ^ (h >> np.uint64(30))
        out *= _M2
        out ^= out >> np.uint64(27)
        out *= _M3
        out ^= out >> np.uint64(31)
        yield out.view(np.int64)


def context_keys(ids: np.ndarray, max_k: int) -> Iterator[np.ndarray]:
    """For j = 1..max_k, the key of the j tokens before each position of one trajectory (``ids``: token ids
    plus one, (L,)): ``out[i]`` stands for ``ids[i-j : i]``, "before the start" filling what precedes 0."""
    padded = np.concatenate([np.zeros(max_k, dtype=np.int64), ids[:-1]]) if len(ids) else ids
    return suffix_keys(padded, max_k, max_k - 1)


def best_next(keys: np.ndarray, nxt: np.ndarray, counts: np.ndarray | None = None):
    """One table from (context key, next token[, count]) rows: the sorted distinct keys, the next token for
    each (the most frequent; a tie goes to the smallest id), and whether the key was followed by more than
    one token (a conflict)."""
    if counts is None:
        order = np.lexsort((nxt, keys))
        keys, nxt = keys[order], nxt[order]
        new = np.ones(len(keys), dtype=bool)
        new[1:] = (keys[1:] != keys[:-1]) | (nxt[1:] != nxt[:-1])
        starts = np.flatnonzero(new)
        counts = np.diff(np.append(starts, len(keys)))
        keys, nxt = keys[starts], nxt[starts]
    order = np.lexsort((nxt, -counts, keys))  # by key, then the most frequent first, then the smallest id
    keys, nxt = keys[order], nxt[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    return keys[starts], nxt[starts], np.diff(np.append(starts, len(keys))) > 1


def _best_sorted(keys: np.ndarray, nxt: np.ndarray, counts: np.ndarray):
    """`best_next` of distinct (key, next, count) rows already sorted by (key, next), in one pass: per key the
    most frequent next token, the smallest id among equals (the first, as the rows are in id order)."""
    if not len(keys):
        return keys, nxt, np.zeros(0, dtype=bool)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    top = np.flatnonzero(counts == np.maximum.reduceat(counts, starts)[group])
    top = top[np.r_[True, group[top][1:] != group[top][:-1]]]  # the first of each key's most frequent rows
    return keys[starts], nxt[top], np.diff(np.append(starts, len(keys))) > 1


class ContextTable:
    """The k-gram learner's rule: Theorem 2.2's table learner, with the last k tokens standing in for its
    finite-state control.

    One table per context length j = 1..k, each mapping a hashed j-token context to the token that followed
    it in training. To predict, read the shortest context first: the first j whose context was always
    followed by one and the same token gives that token; a context never seen means *unseen*, and the
    learner emits [EOS] (as the Theorem 2.2 learner does on a pair outside its table); a context followed by
    several tokens sends the search one token further back. At j = k the most frequent token wins (a tie
    goes to the smallest id); with k at least the data's policy window no k-context has two.

    So the table keys each decision on as few tokens as the training data needed to tell it apart: for a
    Turing-machine trace that is (state, [read], symbol), the Theorem 2.2 learner's (q, s) pair.
    """

    def __init__(self, tables: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self.tables = list(tables)  # per j = 1..k: sorted keys, next (id + 1), conflicted
        self.k = len(self.tables)

    @classmethod
    def from_rows(cls, k: int, rows: np.ndarray) -> ContextTable:
        """From (j, key, next id + 1, count) rows, one per distinct (j, key, next); sorted by (j, key, next) they
        are read in one pass (each j a slice), else sorted first."""
        j, key, nxt = rows[:, 0], rows[:, 1], rows[:, 2]
        up = (j[1:] > j[:-1]) | ((j[1:] == j[:-1]) & ((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (nxt[1:] > nxt[:-1]))))
        if not up.all():
            rows = rows[np.lexsort((nxt, key, j))]
        bounds = np.searchsorted(rows[:, 0], np.arange(1, k + 2))
        return cls([_best_sorted(rows[lo:hi, 1], rows[lo:hi, 2], rows[lo:hi, 3]) for lo, hi in zip(bounds, bounds[1:])])

    def __len__(self) -> int:
        """Distinct contexts, over all lengths."""
        return sum(len(t[0]) for t in self.tables)

    def predict(self, keys: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(next id + 1, 0 where the context is unseen; the context length that decided) at each position,
        from its context keys for j = 1, 2, ..., k (`suffix_keys`)."""
        nxt = depth = todo = None
        for j, (key, (tk, tn, tc)) in enumerate(zip(keys, self.tables), 1):
            if nxt is None:
                nxt, depth = np.zeros(key.shape, dtype=np.int64), np.zeros(key.shape, dtype=np.int64)
                todo = np.ones(key.shape, dtype=bool)
            if len(tk):
                i = np.minimum(np.searchsorted(tk, key), len(tk) - 1)
                seen = tk[i] == key
                done = todo & (~seen | ~tc[i] | (j == self.k))
                nxt[done] = np.where(seen, tn[i], 0)[done]
            else:
                done = todo
            depth[done] = j
            todo &= ~done
            if not todo.any():
                break
        return nxt, depth
