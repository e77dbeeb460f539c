"""Export a trained checkpoint as a Hugging Face folder: ``toolssm export --to hf CHECKPOINT OUT``.

    OUT/config.json            transformers' config (MambaConfig, Mamba2Config, GPTNeoXConfig, MistralConfig)
    OUT/model.safetensors      the weights, by the names transformers' own files use
    OUT/tokenizer.json         a WordLevel tokenizer over the task's vocabulary (``tokenizers``)
    OUT/tokenizer_config.json  so that ``AutoTokenizer`` opens it as a ``PreTrainedTokenizerFast``
    OUT/toolssm.json           the checkpoint's own config.json: task, vocabulary, training, provenance

so that ``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` load it, and
``toolssm.models.hf.load_hf(OUT)`` loads it back bit for bit (checked before the export returns).

The weight names are the reverse of the import's (`toolssm.models.hf.RENAMES`, one table for both directions);
the config is the inverse of the import's converter, and a setting transformers' model cannot express (Pythia
without RoPE, a Mamba-2 with an MLP, a Mistral without RoPE) is a one-line error, as is an architecture that has
no transformers counterpart (LSTM, GRU, ...). Token ids are the checkpoint's ``Vocab`` ids: the tokenizer maps
every vocabulary token to its id, with the protocol's specials (``[PAD] [BOS] [EOS] [ANS]``) as special added
tokens and the tool's tokens as added tokens. Its pre-tokenizer splits on whitespace, so a trajectory written
as its tokens joined by spaces (`rendered`) encodes to exactly ``Vocab.ids`` (a codefix vocabulary's byte-level
pieces hold no whitespace, so this holds for text tasks too, but for the whitespace pieces a pretrained tokenizer
adds, e.g. GPT-NeoX's runs of spaces).

`HFStepModel` runs a transformers causal LM behind this package's ``SequenceModel.step`` interface, so the
exported model can drive a task's tool in `toolssm.rollout.rollout` (greedy, tool in the loop). Its state is the
token prefix and each step recomputes the forward over it: simple and exact, for checks, not speed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from toolssm.checkpoint import load_checkpoint
from toolssm.models import SequenceModel
from toolssm.models.hf import RENAMES, load_hf, rename
from toolssm.protocol import BOS, EOS, PAD, SPECIALS, Trajectory, Vocab
from toolssm.tasks import get_task

TOKENIZER_CONFIG = "tokenizer_config.json"


def _need(kwargs: dict[str, Any], key: str, want: Any, arch: str, why: str) -> None:
    got = kwargs.get(key, want)
    if got != want:
        raise ValueError(f"cannot export this {arch} to Hugging Face: {key}={got!r} ({why})")


def _mamba(kw: dict[str, Any]) -> dict[str, Any]:
    return {
        "hidden_size": kw["d_model"], "num_hidden_layers": kw["n_layers"], "state_size": kw.get("d_state", 16),
        "conv_kernel": kw.get("d_conv", 4), "expand": kw.get("expand", 2),
        "intermediate_size": kw.get("expand", 2) * kw["d_model"],
        "time_step_rank": "auto" if kw.get("dt_rank") is None else kw["dt_rank"],
        "use_bias": bool(kw.get("bias", False)), "use_conv_bias": True,  # our convolution always has a bias
        "layer_norm_epsilon": kw.get("eps", 1e-5), "tie_word_embeddings": kw.get("tie_embeddings", True),
        "hidden_act": "silu",
    }  # fmt: skip


def _mamba2(kw: dict[str, Any]) -> dict[str, Any]:
    _need(kw, "d_ff", None, "mamba2", "transformers' Mamba-2 has no MLP after the mixer")
    d_inner = kw.get("expand", 2) * kw["d_model"]
    lo, hi = kw.get("dt_limit") or (0.0, float("inf"))
    return {
        "hidden_size": kw["d_model"], "num_hidden_layers": kw["n_layers"], "state_size": kw.get("d_state", 128),
        "head_dim": kw.get("head_dim", 64), "num_heads": d_inner // kw.get("head_dim", 64),
        "expand": kw.get("expand", 2), "conv_kernel": kw.get("d_conv", 4), "chunk_size": kw.get("chunk", 64),
        "n_groups": kw.get("n_groups", 1), "use_bias": bool(kw.get("bias", False)), "use_conv_bias": True,
        "layer_norm_epsilon": kw.get("eps", 1e-5), "tie_word_embeddings": kw.get("tie_embeddings", True),
        "time_step_limit": (float(lo), float(hi)), "hidden_act": "silu",
    }  # fmt: skip


def _pythia(kw: dict[str, Any]) -> dict[str, Any]:
    _need(kw, "pos", "rope", "pythia", "GPT-NeoX always applies RoPE")
    d_head, pct = kw["d_model"] // kw["n_heads"], kw.get("rotary_pct", 0.25)
    if int(d_head * pct) % 2:
        raise ValueError(f"cannot export this pythia to Hugging Face: int({d_head} * rotary_pct {pct}) rotary dims "
                         f"is odd (transformers rounds it up, this model down)")  # fmt: skip
    return {
        "hidden_size": kw["d_model"], "num_hidden_layers": kw["n_layers"], "num_attention_heads": kw["n_heads"],
        "intermediate_size": kw["d_ff"], "rotary_pct": pct, "rotary_emb_base": kw.get("rotary_base", 10000.0),
        "layer_norm_eps": kw.get("eps", 1e-5), "use_parallel_residual": kw.get("parallel_residual", True),
        "attention_bias": kw.get("attention_bias", True), "tie_word_embeddings": kw.get("tie_embeddings", False),
        "hidden_act": "gelu", "attention_dropout": 0.0, "hidden_dropout": 0.0,
    }  # fmt: skip


def _mistral(kw: dict[str, Any]) -> dict[str, Any]:
    _need(kw, "pos", "rope", "mistral", "transformers' Mistral always applies RoPE")
    return {
        "hidden_size": kw["d_model"], "num_hidden_layers": kw["n_layers"], "num_attention_heads": kw["n_heads"],
        "num_key_value_heads": kw.get("n_kv_heads") or kw["n_heads"], "head_dim": kw["d_model"] // kw["n_heads"],
        "intermediate_size": kw["d_ff"], "sliding_window": kw.get("window"), "rope_theta": kw.get("rope_base", 1e4),
        "rms_norm_eps": kw.get("eps", 1e-5), "tie_word_embeddings": False, "hidden_act": "silu",
    }  # fmt: skip


#: our arch -> (transformers' model_type, its causal-LM class, our kwargs -> its config's kwargs)
EXPORTS: dict[str, tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "mamba": ("mamba", "MambaForCausalLM", _mamba),
    "mamba2": ("mamba2", "Mamba2ForCausalLM", _mamba2),
    "pythia": ("gpt_neox", "GPTNeoXForCausalLM", _pythia),
    "mistral": ("mistral", "MistralForCausalLM", _mistral),
}


def hf_weights(state: dict[str, Tensor], model_type: str) -> dict[str, Tensor]:
    """Our state dict -> the names transformers' files use (the import's renames, reversed)."""
    return {rename(k, RENAMES[model_type], reverse=True): v.detach().contiguous().cpu() for k, v in state.items()}


# ----------------------------------------------------------------------------------------------------------
# the tokenizer


def word_level_tokenizer(vocab: Vocab, tool_tokens: Sequence[str] = ()):
    """A ``tokenizers.Tokenizer`` mapping each vocabulary token to its id (WordLevel, split on whitespace), the
    specials and ``tool_tokens`` added tokens that match only as whole words (``single_word``)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab.tokens)}, unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([AddedToken(t, single_word=True, normalized=False, special=True) for t in SPECIALS])
    tools = [t for t in dict.fromkeys(tool_tokens) if t not in SPECIALS and t in vocab]
    tk.add_tokens([AddedToken(t, single_word=True, normalized=False, special=False) for t in tools])
    return tk


def rendered(trajectory: Trajectory) -> str:
    """A trajectory as text the exported tokenizer reads back to its ids: its tokens joined by spaces."""
    return " ".join(trajectory.tokens)


def _tool_tokens(task_name: str, folder: Path) -> tuple[str, ...]:
    try:
        task = get_task(task_name)
        task.load_assets(folder)
        tool = task.make_tool()
    except ValueError:  # a task no longer registered, or one whose tool needs assets the folder lacks
        return ()
    tokens = tuple(getattr(tool, "tokens", ()) or ())
    if hasattr(tool, "close"):
        tool.close()
    return tokens


# ----------------------------------------------------------------------------------------------------------
# the export


def check_out_folder(out: str | Path) -> Path:
    """A one-line error for an OUT that is a file or a folder with something in it (nothing is overwritten)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder: choose another OUT (nothing was written)")
    return out


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint`` (a toolssm checkpoint or run folder) as a Hugging Face folder ``out`` (see the module
    doc); returns ``out``. transformers writes the config (the ``hf`` extra)."""
    out = check_out_folder(out)
    loaded = load_checkpoint(checkpoint)
    if loaded.arch not in EXPORTS:
        raise ValueError(f"cannot export {loaded.arch} to Hugging Face: transformers has no {loaded.arch} model "
                         f"(exportable: {', '.join(EXPORTS)})")  # fmt: skip
    model_type, hf_class, to_hf = EXPORTS[loaded.arch]
    hf_kwargs = to_hf(loaded.config["model"])  # refusals before anything is written
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ValueError("toolssm export --to hf needs transformers: pip install 'toolssm[hf]'") from None
    vocab = loaded.vocab
    config = AutoConfig.for_model(
        model_type, vocab_size=len(vocab), pad_token_id=vocab.id(PAD), bos_token_id=vocab.id(BOS),
        eos_token_id=vocab.id(EOS), **hf_kwargs,
    )  # fmt: skip
    config.architectures = [hf_class]
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    state = loaded.model.state_dict()
    save_file(hf_weights(state, model_type), out / "model.safetensors", metadata={"format": "pt"})
    tk = word_level_tokenizer(vocab, _tool_tokens(loaded.task, loaded.path))
    tk.save(str(out / "tokenizer.json"))
    tool_tokens = [t.content for t in tk.get_added_tokens_decoder().values() if not t.special]
    (out / TOKENIZER_CONFIG).write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": PAD, "bos_token": BOS, "eos_token": EOS,
        "additional_special_tokens": [s for s in SPECIALS if s not in (PAD, BOS, EOS)],
        "clean_up_tokenization_spaces": False, "model_max_length": 1_000_000_000, "tool_tokens": tool_tokens,
    }, indent=2) + "\n")  # fmt: skip
    (out / "toolssm.json").write_text(json.dumps(loaded.config, indent=2) + "\n")
    back = load_hf(out)[0].state_dict()  # the round trip, checked: the same tensors, bit for bit
    bad = [k for k in state if k not in back or not torch.equal(back[k], state[k].cpu())]
    if bad or set(back) != set(state):
        raise ValueError(f"export to {out} does not load back to the same weights ({', '.join(bad[:3])}): a bug")
    return out


# ----------------------------------------------------------------------------------------------------------
# the exported model behind our step interface


class HFStepModel(SequenceModel):
    """A transformers causal LM as a ``SequenceModel``: ``step`` appends the tokens to the state (the prefix,
    (B, T) ids) and returns the last position's logits of a full forward; every row of a batch has the same
    length, as in `toolssm.rollout.rollout`."""

    def __init__(self, hf_model: torch.nn.Module):
        super().__init__()
        self.hf = hf_model

    @property
    def fixed_state(self) -> bool:
        return False

    def forward(self, tokens: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor]]:
        prefix = tokens if state is None else torch.cat([state[0], tokens], 1)  # (B, C+T)
        logits = self.hf(input_ids=prefix, use_cache=False).logits  # (B, C+T, V)
        return logits[:, prefix.shape[1] - tokens.shape[1] :], (prefix,)  # (B, T, V)
