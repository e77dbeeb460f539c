"""The k-gram learner: Theorem 2.2's table learner as a model, trained by counting (no gradients).

Its state is the last k tokens (a fixed-size GSSM state); its rule, `toolssm.locality.ContextTable`, looks
the next token up by the last j tokens, j = 1..k, reading the shortest context that the counted data always
followed with one and the same token:

    fit_counts(tokens (B, T), mask (B, T))   count, at every trained position, which token followed each
                                             of its j-token contexts (hashed to 64-bit keys), j = 1..k
    forward(tokens (B, T), state (B, k))     -> logits (B, T, V): 0 for the table's token, -20 elsewhere
    step(tokens (B,), state)                 -> the same, one token (a length-1 forward)

k is ``window`` (``--model.window``); ``toolssm analyze`` reports a task's policy window, the smallest k at
which no context is followed by two different tokens, and predicts this model's row. With a smaller k some
contexts conflict and the most frequent token wins. A context the table never saw gets the stop token: the
learner emits [EOS] and fails, as Theorem 2.2's learner does on a pair outside its table. The stop token is
the one every counted trajectory ends with ([EOS]); before any counting it is id 2, [EOS] in every vocabulary
`toolssm.protocol.Vocab.build` makes.

The table is the checkpoint: one int64 tensor of (j, key, next id + 1, count) rows, sorted by (j, key, next),
which safetensors saves and loads like any weights. A batch's rows are merged into it (`merge_rows`: O(table)
per batch, no re-sort), and the rule reads each j as a slice: counting at k = 64 costs about what k = 32 did
before (a window past the input's length, e.g. Oolong's 37 or a CoT without a tool's 64, is counted too). The model knows nothing of tasks: it sees token ids. ``toolssm train --model
kgram`` counts the same online batches a gradient model would train on (`toolssm.train`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from toolssm.locality import ContextTable, suffix_keys
from toolssm.models.base import SequenceModel, State, register

#: the logit of every token but the table's: a one-hot distribution, with a finite cross-entropy
MISS = -20.0


def distinct_rows(rows: np.ndarray) -> np.ndarray:
    """(j, key, next, count) rows sorted by (j, key, next), one per distinct triple, its counts summed."""
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:, :3] != rows[:-1, :3]).any(1)
    starts = np.flatnonzero(first)
    if len(starts):
        counts = np.add.reduceat(rows[:, 3], starts)
        rows = rows[starts]
        rows[:, 3] = counts
    return rows


def merge_rows(old: np.ndarray, new: np.ndarray | None) -> np.ndarray:
    """Two tables of distinct (j, key, next, count) rows, each sorted by (j, key, next), as one: counts of a
    triple in both are added, the others inserted in order. O(old + new log old): no re-sort of the whole
    table per batch (which made counting quadratic in the batches, and slow past k = 32: issue 26)."""
    if new is None or not len(new):
        return old
    if not len(old):
        return new
    pos = np.empty(len(new), dtype=np.int64)
    for j in np.unique(new[:, 0]):
        lo, hi = np.searchsorted(old[:, 0], [j, j + 1])
        nlo, nhi = np.searchsorted(new[:, 0], [j, j + 1])
        ok, on = old[lo:hi, 1], old[lo:hi, 2]
        nk, nn = new[nlo:nhi, 1], new[nlo:nhi, 2]
        p = np.searchsorted(ok, nk)  # the first row of the same key (or past it)
        while len(ok):  # past the key's rows whose next token is smaller (a key has a few rows at most)
            q = np.minimum(p, len(ok) - 1)
            step = (p < len(ok)) & (ok[q] == nk) & (on[q] < nn)
            if not step.any():
                break
            p += step
        pos[nlo:nhi] = lo + p
    q = np.minimum(pos, len(old) - 1)
    same = (pos < len(old)) & (old[q, :3] == new[:, :3]).all(1)
    at = pos[~same]  # new triples go before these old rows (in order: ``new`` is sorted)
    out = np.empty((len(old) + len(at), 4), dtype=np.int64)
    fresh = np.zeros(len(out), dtype=bool)
    fresh[at + np.arange(len(at))] = True
    out[fresh], out[~fresh] = new[~same], old
    seen = pos[same]
    out[seen + np.searchsorted(at, seen, side="right"), 3] += new[same, 3]
    return out


@register("kgram", presets={"cpu": {"window": 8}, "paper": {"window": 8}})
class KGram(SequenceModel):
    trains_by_counting = True
    """`toolssm.train` calls `fit_counts` on each batch instead of a backward pass and an optimizer step"""

    def __init__(self, vocab_size: int, window: int = 8, **unused) -> None:
        """``window``: k, the context length (the state's length). The width settings of the gradient models
        (d_model, n_layers, ...) mean nothing here and are ignored."""
        super().__init__()
        self.vocab_size, self.k = vocab_size, window
        self.register_buffer("rows", torch.zeros((0, 4), dtype=torch.long))  # (j, key, next id + 1, count)
        self.register_buffer("stop", torch.tensor(2, dtype=torch.long))
        self._table: ContextTable | None = None

    @property
    def table(self) -> ContextTable:
        if self._table is None:
            self._table = ContextTable.from_rows(self.k, self.rows.cpu().numpy())
        return self._table

    @torch.no_grad()
    def fit_counts(self, tokens: Tensor, mask: Tensor) -> float:
        """Count one batch: right-padded ids (B, T) and the loss mask (B, T), True where the token is trained
        on. Returns the batch's masked cross-entropy under the table as it was before (a held-out loss)."""
        logits, _ = self(tokens[:, :-1])
        m = mask[:, 1:]
        loss = float(torch.nn.functional.cross_entropy(logits[m], tokens[:, 1:][m])) if m.any() else 0.0
        x = tokens.cpu().numpy().astype(np.int64) + 1
        trained = mask.cpu().numpy().copy()
        trained[:, 0] = False  # the first token has nothing before it to be predicted from
        b, t = np.nonzero(trained)
        last = trained.shape[1] - 1 - np.argmax(trained[:, ::-1], axis=1)  # each row's last trained position
        ends = x[np.arange(len(x)), last][trained.any(1)]
        if len(ends) and (ends == ends[0]).all():
            self.stop.fill_(int(ends[0]) - 1)
        k = self.k
        padded = np.concatenate([np.zeros((x.shape[0], k), dtype=np.int64), x[:, :-1]], axis=1)
        parts = []
        for j, keys in enumerate(suffix_keys(padded, k, k - 1), 1):  # keys[:, t]: the j tokens before t
            parts.append(np.stack([np.full(len(b), j), keys[b, t], x[b, t], np.ones(len(b), dtype=np.int64)], 1))
        rows = merge_rows(self.rows.cpu().numpy(), distinct_rows(np.concatenate(parts)) if parts else None)
        self.rows = torch.from_numpy(rows).to(self.rows.device)
        self._table = None
        return loss

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """The table has as many rows as it counted: take them at their size."""
        extra = sorted(set(state_dict) - {"rows", "stop"})
        if strict and (extra or "rows" not in state_dict):
            raise RuntimeError(f"KGram state: unexpected keys {extra}, or no rows")
        self.rows = state_dict["rows"].to(self.rows.device, torch.long).clone()
        self.stop.fill_(int(state_dict.get("stop", self.stop)))
        self._table = None
        return torch.nn.modules.module._IncompatibleKeys([], extra)

    # -- the model interface --------------------------------------------------------------------------------
    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T = tokens.shape
        k = self.k
        past = state[0].cpu().numpy() if state is not None else np.zeros((B, k), dtype=np.int64)
        x = np.concatenate([past, tokens.cpu().numpy().astype(np.int64) + 1], axis=1)  # (B, k + T)
        nxt, _ = self.table.predict(suffix_keys(x, k, k))  # from the j tokens ending at each new position
        nxt = nxt - 1  # -1: unseen
        nxt = np.where(nxt < 0, int(self.stop), nxt)
        logits = torch.full((B, T, self.vocab_size), MISS, device=tokens.device)
        logits.scatter_(-1, torch.from_numpy(nxt).to(tokens.device)[..., None], 0.0)
        return logits, (torch.from_numpy(np.ascontiguousarray(x[:, -k:])).to(tokens.device),)
