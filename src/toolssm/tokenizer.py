"""A byte-level BPE tokenizer (Hugging Face ``tokenizers``) for tasks whose trajectories are free text.

The model's vocabulary is the protocol's specials (``[PAD] [BOS] [EOS] [ANS]``), then the BPE pieces in id
order, then the tool's tokens (e.g. ``[bash]``, ``[/bash]``). Those are never produced by BPE: text is
always split into pieces, so a piece that happened to spell ``[EOS]`` would be a collision, which
`Bpe.check_disjoint` refuses. The tokenizer is trained locally on the task's own generated text and saved
with the model (``tokenizer.json`` in the checkpoint folder).

A pretrained checkpoint's ``tokenizer.json`` (Pythia's and Mamba's: GPT-NeoX's byte-level BPE, with added
tokens such as ``<|endoftext|>``, ``<|padding|>`` and runs of spaces) loads the same way (`Bpe.load`): its
added tokens are pieces like any other (``pieces`` and ``ids`` include them), and text never contains our
``[...]`` specials, so they stay disjoint. ``train --init-from`` uses it in place of the task's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

FILE = "tokenizer.json"


class Bpe:
    def __init__(self, tokenizer: Tokenizer):
        self.tk = tokenizer
        vocab = tokenizer.get_vocab()
        self.pieces: list[str] = sorted(vocab, key=vocab.__getitem__)
        self._id = vocab

    @property
    def ids(self) -> dict[str, int]:
        """piece -> the tokenizer's own id (added tokens included): a pretrained model's embedding row."""
        return dict(self._id)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> Bpe:
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )  # fmt: skip
        tk.train_from_iterator(texts, trainer)
        return cls(tk)

    # -- text <-> pieces ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[str]:
        """The BPE pieces of ``text`` (strings, as the model's vocabulary spells them)."""
        return self.tk.encode(text, add_special_tokens=False).tokens if text else []

    def decode(self, pieces: Sequence[str]) -> str:
        """The text of a run of pieces; invalid UTF-8 (a model's half character) becomes U+FFFD."""
        ids = [self._id[p] for p in pieces if p in self._id]
        return self.tk.decode(ids, skip_special_tokens=False) if ids else ""

    def check_disjoint(self, reserved: Iterable[str]) -> None:
        clash = sorted(set(reserved) & set(self._id))
        if clash:
            raise ValueError(f"BPE pieces collide with reserved tokens: {', '.join(clash)}")

    # -- files -------------------------------------------------------------------------------------
    def to_str(self) -> str:
        return self.tk.to_str()

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        path.write_text(self.to_str())
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> Bpe:
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / FILE
        if not path.is_file():
            raise ValueError(f"no tokenizer at {path}")
        return cls(Tokenizer.from_file(str(path)))
