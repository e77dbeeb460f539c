"""Batched, tool-in-the-loop greedy decoding.

Each episode in the batch has its own `Episode` (and tool). At every step each live episode feeds the
model one token: the next *forced* token if it has one queued (its input, or the observation its last
command produced), else the token the model just predicted, which goes to the episode and may queue an
observation. Episodes end on their own: ``[EOS]`` is *terminated*, running out of budget is *truncated*.
Finished episodes leave the batch, so the step cost follows the live batch.

Memory does not grow with the episode: the model's state is fixed-size (for a GSSM) and the rollout keeps
counters, not the trajectory, unless ``record=True``. What grows is the tool's own memory of the context.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from toolssm.models import SequenceModel, select_state
from toolssm.protocol import Episode, Trajectory, Vocab


ENGINES = ("auto", "compiled", "torch")


@dataclass
class EpisodeResult:
    output: list[str]
    terminated: bool
    truncated: bool
    n_generated: int
    n_tokens: int
    #: whether every token, forced or generated, equals the reference trajectory's (None: no reference)
    trajectory_match: bool | None
    trajectory: Trajectory | None


@torch.no_grad()
def rollout(
    model: SequenceModel,
    vocab: Vocab,
    episodes: Sequence[Episode],
    *,
    references: Sequence[Sequence[int]] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "decode",
    engine: str = "auto",
) -> list[EpisodeResult]:
    """Greedy-decode every episode to its end. ``references`` (token ids of expert trajectories) let the
    rollout check, token by token, whether the model reproduced the whole trajectory.

    ``engine``: ``"torch"`` runs the loop below (the reference definition of decoding); ``"compiled"`` runs
    the same decoding in one compiled loop (toolssm.engine, docs/engine.md), an error where it has no kernel
    for the model or the tool; ``"auto"`` (default) the compiled loop where it applies, else the loop below."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (choose from: {', '.join(ENGINES)})")
    model.eval()
    n = len(episodes)
    if n == 0:
        return []
    if engine != "torch":
        from toolssm import engine as compiled

        why = compiled.unsupported(model, episodes, device)
        if why is None:
            fed = compiled.decode(model, vocab, episodes, references, progress=progress, desc=desc)
            return [
                EpisodeResult(
                    list(ep.output), ep.terminated, ep.truncated, ep.n_generated, n_tok,
                    None if m is None else bool(m and n_tok == len(references[i])),  # type: ignore[index]
                    ep.trajectory,
                )  # fmt: skip
                for i, (ep, (n_tok, m)) in enumerate(zip(episodes, fed))
            ]
        if engine == "compiled":
            raise ValueError(f"engine='compiled': {why}")
    tok2id, id2tok = {t: i for i, t in enumerate(vocab.tokens)}, vocab.tokens
    queues = [deque(tok2id[t] for t in ep.reset()) for ep in episodes]
    n_tokens = [0] * n
    match = [True] * n if references is not None else None
    results: list[EpisodeResult | None] = [None] * n

    def feed(i: int, tok: int) -> None:
        if match is not None and match[i]:
            ref = references[i]  # type: ignore[index]
            match[i] = n_tokens[i] < len(ref) and ref[n_tokens[i]] == tok
        n_tokens[i] += 1

    def finish(i: int) -> None:
        ep = episodes[i]
        m = None
        if match is not None:
            m = bool(match[i] and n_tokens[i] == len(references[i]))  # type: ignore[index]
        results[i] = EpisodeResult(
            list(ep.output), ep.terminated, ep.truncated, ep.n_generated, n_tokens[i], m, ep.trajectory
        )

    active = list(range(n))
    current = []
    for i in active:
        tok = queues[i].popleft()
        feed(i, tok)
        current.append(tok)
    state = None
    bar = tqdm(disable=not progress, desc=desc, unit="tok", dynamic_ncols=True, leave=False)
    while active:
        logits, state = model.step(torch.tensor(current, device=device), state)
        preds = logits.argmax(-1).tolist()
        keep: list[int] = []
        nxt: list[int] = []
        for j, i in enumerate(active):
            q = queues[i]
            if q:  # forced: input or observation
                tok = q.popleft()
            else:
                tok = preds[j]
                ep = episodes[i]
                st = ep.step(id2tok[tok])
                if st.terminated or st.truncated:
                    feed(i, tok)
                    finish(i)
                    continue
                q.extend(tok2id[t] for t in st.observation)
            feed(i, tok)
            keep.append(j)
            nxt.append(tok)
        if len(keep) < len(active):
            if keep:
                state = select_state(state, torch.tensor(keep, device=device))
            active = [active[j] for j in keep]
        current = nxt
        bar.update(1)
    bar.close()
    return results  # type: ignore[return-value]
