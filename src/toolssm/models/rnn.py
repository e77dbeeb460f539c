"""LSTM and GRU (paper App. C: 4 layers, hidden 1536). Token embedding -> stacked RNN -> linear head.

The state is the stacked hidden (and cell) vectors, batch first: fixed size, a GSSM in the paper's sense.
``tie_embeddings=True`` makes the head the embedding matrix (no bias), as Mamba's is by default: copying a token
then needs only its own embedding carried in the state (docs/tasks/logic_graph.md, the LSTM and GRU recipes).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from toolssm.models.base import SequenceModel, State, register

PRESETS = {
    "cpu": {"d_model": 96, "n_layers": 2},
    "paper": {"d_model": 1536, "n_layers": 4},
}


class _RNN(SequenceModel):
    rnn_cls: type[nn.RNNBase]

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, tie_embeddings: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.rnn = self.rnn_cls(d_model, d_model, n_layers, batch_first=True)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size)

    def head_weights(self) -> tuple[Tensor, Tensor | None]:
        """The output layer's (V, D) matrix and its bias: the embedding and no bias when tied."""
        if self.head is None:
            return self.embed.weight, None
        return self.head.weight, self.head.bias

    def _unpack(self, state: State | None):
        raise NotImplementedError

    def _pack(self, hidden) -> State:
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self.embed(tokens)  # (B, T, D)
        y, hidden = self.rnn(x, self._unpack(state))  # (B, T, D)
        return F.linear(y, *self.head_weights()), self._pack(hidden)  # (B, T, V)


@register("lstm", PRESETS)
class LSTM(_RNN):
    rnn_cls = nn.LSTM

    def _unpack(self, state):  # ((B, L, D), (B, L, D)) -> ((L, B, D), (L, B, D))
        if state is None:
            return None
        h, c = state
        return h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()

    def _pack(self, hidden) -> State:
        h, c = hidden
        return h.transpose(0, 1), c.transpose(0, 1)


@register("gru", PRESETS)
class GRU(_RNN):
    rnn_cls = nn.GRU

    def _unpack(self, state):  # ((B, L, D),) -> (L, B, D)
        return None if state is None else state[0].transpose(0, 1).contiguous()

    def _pack(self, hidden) -> State:
        return (hidden.transpose(0, 1),)
