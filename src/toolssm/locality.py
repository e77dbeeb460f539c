"""A checkable form of the local-policy principle (docs/design.md).

An expert's policy is *k-local* on a set of trajectories if every generated token (thought, command,
output) is a function of the k tokens before it (of any role, observations included): no two positions
share those k tokens and differ in what comes next. A loop that has to count its iterations is not
k-local for any k below the count, so a k that stays the same from 5-digit to 500-digit problems says
the policy never counts. This is also the lookup table of the paper's Theorem 2.2 learner, with the
recent tokens standing in for the finite-state control.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def policy_window(trajectories: Iterable[Trajectory], max_k: int = 64) -> int:
    """The smallest k for which the trajectories' policy is k-local (ValueError if above ``max_k``)."""
    trajs = list(trajectories)
    lo, hi = 1, max_k  # k-locality is upward closed: search for the smallest k
    if window_conflict(trajs, hi) is not None:
        raise ValueError(f"the policy is not {max_k}-local")
    while lo < hi:
        mid = (lo + hi) // 2
        if window_conflict(trajs, mid) is None:
            hi = mid
        else:
            lo = mid + 1
    return lo
