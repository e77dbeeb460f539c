"""Load a Hugging Face checkpoint folder (Mamba, Mamba-2, GPT-NeoX/Pythia, Mistral) into this package's models.

    model, arch, kwargs = load_hf("path/to/state-spaces--mamba-1.4b-hf")
    model, arch, kwargs = load_hf("state-spaces/mamba-130m-hf")   # a Hub id: huggingface_hub's cache (`hub_folder`)

The folder is what ``save_pretrained`` writes: ``config.json`` and the weights, one of

    model.safetensors | model.safetensors.index.json + its shards
    pytorch_model.bin | pytorch_model.bin.index.json + its shards

(``.bin`` files are read with ``torch.load(weights_only=True)``). Nothing here imports ``transformers``: the
config is plain JSON and the weights plain tensors. ``config["model_type"]`` picks a converter, which maps the
Hugging Face config to our constructor's keyword arguments (raising a one-line ValueError for a setting our
model does not implement) and renames the weights; they are then loaded with ``strict=True``.

The returned ``arch`` and ``kwargs`` rebuild the same model with ``build_model(arch, vocab_size, kwargs)``
(vocab_size = the checkpoint's embedding rows), so a fine-tuning run can start from the weights and
``save_checkpoint(..., arch=arch, model_kwargs=kwargs, ...)`` them like any other model. The model is fp32
whatever the checkpoint's dtype, on ``device``, in eval mode.

Adding an architecture is one more entry in ``CONVERTERS``: a function from the HF config to (arch, kwargs) and
one that renames the HF weight names to ours, by its ``RENAMES`` table (which `toolssm.export` reads backwards).

Fine-tuning on a task (``toolssm train --init-from FOLDER``) needs the model in *our* vocabulary (specials,
then the task's pieces, then tool tokens), not the checkpoint's ids: `load_hf_remapped` loads the checkpoint and
`remap_vocab` re-indexes its vocabulary rows by spelling, with the folder's ``tokenizer.json`` naming the rows:

    our token t, a piece of the checkpoint's tokenizer with id i  ->  row i of the pretrained matrix
    our token t, unknown to the checkpoint ([PAD] [BOS] [EOS] [ANS], [bash] [/bash] [ERR], a task symbol)
                                                                  ->  the mean of the rows the tokenizer names

Every vocabulary-indexed tensor is re-indexed the same way: the embedding, an untied LM head (and its bias, if
any); a tied head is the embedding, so it follows. Which tensors those are is not a per-architecture list: see
`vocab_dims`. The mean is transformers' ``resize_token_embeddings(mean_resizing=True)`` choice, without its
noise: a new token's embedding is an average input, and (untied head) its logit the average logit, so it starts
neither dominant nor impossible. The shared pieces keep exactly the pretrained function: on a sequence of them
our logits equal the checkpoint's, column for column (tests/test_hf_finetune.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from toolssm.models.base import SequenceModel, build_model

_DROPOUTS = ("attention_dropout", "hidden_dropout")  # GPT-NeoX dropout rates: only 0 is supported


@dataclass(frozen=True)
class Converter:
    config: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
    """HF config.json -> (our arch, our kwargs without vocab_size); ValueError if unsupported"""
    weights: Callable[[dict[str, Tensor], dict[str, Any]], dict[str, Tensor]]
    """HF state dict, our kwargs -> our state dict"""


# ----------------------------------------------------------------------------------------------------------
# helpers


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present (and not None) in cfg, else default."""
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _require(cfg: dict[str, Any], key: str, want: Any, why: str) -> None:
    got = cfg.get(key, want)
    if got != want:
        raise ValueError(f"unsupported {cfg['model_type']} config: {key}={got!r} ({why}; supported: {want!r})")


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


#: Hugging Face weight-name prefixes -> ours, per model_type: the one table both directions use (loading here,
#: `toolssm.export` the other way). A name takes the rule with the longest matching prefix; in reverse, among
#: rules of equal length the first listed wins (so an older spelling listed later is only ever read, not written).
RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "mamba": (("backbone.embeddings.", "embed."), ("backbone.embedding.", "embed."), ("backbone.", ""),
              ("lm_head.", "head.")),  # fmt: skip
    "gpt_neox": (("gpt_neox.", ""), ("embed_out.", "embed_out."), ("lm_head.", "embed_out.")),
    "mistral": (("model.", ""), ("lm_head.", "lm_head.")),
}
RENAMES["mamba2"] = RENAMES["mamba"]  # the same weight names as Mamba-1's


def rename(name: str, table: Sequence[tuple[str, str]], *, reverse: bool = False) -> str:
    """``name`` with its prefix renamed by ``table`` (HF -> ours; ``reverse``: ours -> HF); unchanged if none
    matches."""
    pairs = [(b, a) for a, b in table] if reverse else list(table)
    best = max(pairs, key=lambda p: len(p[0]) if name.startswith(p[0]) else -1)
    return best[1] + name[len(best[0]) :] if name.startswith(best[0]) else name


# ----------------------------------------------------------------------------------------------------------
# Mamba-1 (transformers' MambaForCausalLM)


def _mamba_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    d_model = cfg["hidden_size"]
    expand = cfg.get("expand", 2)
    if int(expand) != expand:
        raise ValueError(f"unsupported mamba config: expand={expand!r} (our d_inner is an integer multiple)")
    inner = cfg.get("intermediate_size", int(expand * d_model))
    if inner != int(expand) * d_model:
        raise ValueError(f"unsupported mamba config: intermediate_size={inner} != expand * hidden_size")
    _require(cfg, "hidden_act", "silu", "the convolution's activation is SiLU")
    rank = cfg.get("time_step_rank", "auto")
    kwargs = {
        "d_model": d_model,
        "n_layers": cfg["num_hidden_layers"],
        "d_state": cfg.get("state_size", 16),
        "d_conv": cfg.get("conv_kernel", 4),
        "expand": int(expand),
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", True)),
        "eps": float(cfg.get("layer_norm_epsilon", 1e-5)),
        "dt_rank": None if rank == "auto" else int(rank),
        "bias": bool(cfg.get("use_bias", False)),
    }
    # residual_in_fp32: a no-op for our fp32 model; time_step_*, initializer_range, rescale_prenorm_residual:
    # initialization only; use_mambapy, use_associative_scan: which scan code path, same result.
    return "mamba", kwargs


def _mamba_weights(hf: dict[str, Tensor], kwargs: dict[str, Any]) -> dict[str, Tensor]:
    out = {}
    for k, v in hf.items():
        if k == "lm_head.weight" and kwargs["tie_embeddings"]:
            continue  # tied: the head is the embedding; HF may still have written a copy
        out[rename(k, RENAMES["mamba"])] = v  # layers.{i}.norm.weight, layers.{i}.mixer.*, norm_f: as ours
    for i in range(kwargs["n_layers"]):
        bias, weight = f"layers.{i}.mixer.conv1d.bias", f"layers.{i}.mixer.conv1d.weight"
        if bias not in out and weight in out:
            # use_conv_bias=False: our convolution always has a bias; a zero one computes the same
            out[bias] = torch.zeros(out[weight].shape[0], dtype=out[weight].dtype)
    return out


# ----------------------------------------------------------------------------------------------------------
# Mamba-2 (transformers' Mamba2ForCausalLM)


def _json_float(v: Any) -> float:
    """A number from config.json: transformers >= 5 writes infinity as {"__float__": "Infinity"}, older versions
    as the bare token Infinity (which json reads as inf)."""
    if isinstance(v, dict) and set(v) == {"__float__"}:
        v = v["__float__"]
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"not a number: {v!r}")
    return float(v)


def _mamba2_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    d_model = cfg["hidden_size"]
    expand = cfg.get("expand", 2)
    if int(expand) != expand:
        raise ValueError(f"unsupported mamba2 config: expand={expand!r} (our d_inner is an integer multiple)")
    d_inner = int(expand) * d_model
    head_dim = cfg.get("head_dim", 64)
    n_heads = cfg.get("num_heads", d_inner // head_dim)
    if n_heads * head_dim != d_inner:
        raise ValueError(
            f"bad mamba2 config: num_heads * head_dim = {n_heads} * {head_dim} != expand * hidden_size = {d_inner}"
        )
    n_groups = cfg.get("n_groups", 8)
    if n_groups < 1 or n_heads % n_groups:
        raise ValueError(f"unsupported mamba2 config: n_groups={n_groups} does not divide num_heads={n_heads}")
    _require(cfg, "hidden_act", "silu", "the convolution's activation is SiLU")
    # mamba_ssm's own settings, which transformers' config does not have (and its Mamba2 ignores): refuse the
    # values that would need another computation than transformers' (an RMSNorm, applied after the gate)
    _require(cfg, "rms_norm", True, "the gated output norm is an RMSNorm")
    _require(cfg, "norm_before_gate", False, "the output norm is applied to y * silu(z)")
    _require(cfg, "D_has_hdim", False, "D is one number per head")
    limit = cfg.get("time_step_limit", (0.0, float("inf")))
    try:
        lo, hi = (_json_float(v) for v in limit)
    except (TypeError, ValueError):
        raise ValueError(f"bad mamba2 config: time_step_limit={limit!r}") from None
    if not 0.0 <= lo <= hi:
        raise ValueError(f"bad mamba2 config: time_step_limit=({lo}, {hi}) (want 0 <= low <= high)")
    kwargs = {
        "d_model": d_model,
        "n_layers": cfg["num_hidden_layers"],
        "d_state": cfg.get("state_size", 128),
        "head_dim": head_dim,
        "expand": int(expand),
        "d_conv": cfg.get("conv_kernel", 4),
        "d_ff": None,  # transformers' Mamba2 has no MLP after the mixer
        "chunk": int(cfg.get("chunk_size", 256)),
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "n_groups": n_groups,
        "eps": float(cfg.get("layer_norm_epsilon", 1e-5)),
        "bias": bool(cfg.get("use_bias", False)),
        # dt > 0 after the softplus: a limit of (0, inf) clamps nothing
        "dt_limit": None if lo == 0.0 and hi == float("inf") else [lo, hi],
    }
    # residual_in_fp32: a no-op for our fp32 model; time_step_rank: unused by Mamba-2; time_step_min/max/floor,
    # initializer_range, rescale_prenorm_residual: initialization only; chunk_size: the same result at any size.
    # transformers' own decode (one cached token) does not apply time_step_limit, its forward does; our step
    # applies it too, so that decoding continues the forward.
    return "mamba2", kwargs


# ----------------------------------------------------------------------------------------------------------
# GPT-NeoX / Pythia (transformers' GPTNeoXForCausalLM)


def _single(name: str, values: list[Any], default: Any) -> Any:
    """The one value a setting has across the places a config may spell it; ValueError if they disagree."""
    present = [v for v in values if v is not None]
    if any(v != present[0] for v in present):
        raise ValueError(f"inconsistent gpt_neox config: {name} is given as {present}")
    return present[0] if present else default


def _gpt_neox_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    d_model, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if d_model % n_heads:
        raise ValueError(f"bad gpt_neox config: hidden_size={d_model} is not a multiple of heads={n_heads}")
    d_head = d_model // n_heads
    if cfg.get("head_dim") not in (None, d_head):
        raise ValueError(f"unsupported gpt_neox config: head_dim={cfg['head_dim']} != hidden_size / heads")
    _require(cfg, "hidden_act", "gelu", "our MLP uses the exact GELU")
    for key in _DROPOUTS:
        if cfg.get(key, 0.0):
            raise ValueError(f"unsupported gpt_neox config: {key}={cfg[key]} (our model has no dropout)")
    # RoPE: transformers >= 5 writes rope_parameters; older versions rotary_pct / rotary_emb_base (and some
    # partial_rotary_factor / rope_theta too) with rope_scaling for non-default RoPE
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"unsupported gpt_neox config: rope type {kind!r} (only the default RoPE)")
    pct = _single(
        "the rotary fraction",
        [rope.get("partial_rotary_factor"), cfg.get("partial_rotary_factor"), cfg.get("rotary_pct")],
        0.25,
    )
    base = _single(
        "the rotary base", [rope.get("rope_theta"), cfg.get("rope_theta"), cfg.get("rotary_emb_base")], 10000.0
    )
    rot = int(d_head * pct)  # transformers' rotary_ndims; it rounds an odd count up, ours down
    if rot % 2:
        raise ValueError(f"unsupported gpt_neox config: rotary dims per head int({d_head} * {pct}) = {rot} is odd")
    kwargs = {
        "d_model": d_model,
        "n_layers": cfg["num_hidden_layers"],
        "n_heads": n_heads,
        "d_ff": cfg["intermediate_size"],
        "pos": "rope",
        "rotary_pct": float(pct),
        "rotary_base": float(base),
        "eps": float(cfg.get("layer_norm_eps", 1e-5)),
        "parallel_residual": bool(cfg.get("use_parallel_residual", True)),
        "attention_bias": bool(cfg.get("attention_bias", True)),
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }
    # max_position_embeddings: transformers does not enforce it for GPT-NeoX (RoPE is computed for any position)
    return "pythia", kwargs


def _gpt_neox_weights(hf: dict[str, Tensor], kwargs: dict[str, Any]) -> dict[str, Tensor]:
    out = {}
    for k, v in hf.items():
        if k.endswith((".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers older transformers saved: the causal mask, its fill value, RoPE frequencies
        if k in ("embed_out.weight", "lm_head.weight") and kwargs["tie_embeddings"]:
            continue  # embed_out: transformers' files (and < 5 in memory); lm_head: >= 5 in memory
        out[rename(k, RENAMES["gpt_neox"])] = v  # embed_in, layers.{i}.*, final_layer_norm: the same names
    return out


# ----------------------------------------------------------------------------------------------------------
# Mistral (transformers' MistralForCausalLM)


def _mistral_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    d_model, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if d_model % n_heads or cfg.get("head_dim") not in (None, d_model // n_heads):
        raise ValueError(f"unsupported mistral config: head_dim={cfg.get('head_dim')} != hidden_size / heads")
    _require(cfg, "hidden_act", "silu", "the MLP is SwiGLU")
    _require(cfg, "tie_word_embeddings", False, "our Mistral's head is its own matrix")
    if cfg.get("attention_dropout", 0.0):
        raise ValueError(f"unsupported mistral config: attention_dropout={cfg['attention_dropout']} (no dropout)")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"unsupported mistral config: rope type {kind!r} (only the default RoPE)")
    kwargs = {
        "d_model": d_model,
        "n_layers": cfg["num_hidden_layers"],
        "n_heads": n_heads,
        "n_kv_heads": cfg.get("num_key_value_heads") or n_heads,
        "d_ff": cfg["intermediate_size"],
        "window": cfg.get("sliding_window"),  # None: full causal attention
        "pos": "rope",
        "rope_base": float(_get(rope, "rope_theta", default=cfg.get("rope_theta", 10000.0))),
        "eps": float(cfg.get("rms_norm_eps", 1e-6)),
    }
    return "mistral", kwargs


def _mistral_weights(hf: dict[str, Tensor], kwargs: dict[str, Any]) -> dict[str, Tensor]:
    return {rename(k, RENAMES["mistral"]): v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}


CONVERTERS: dict[str, Converter] = {
    "mamba": Converter(_mamba_config, _mamba_weights),
    "mamba2": Converter(_mamba2_config, _mamba_weights),  # the same weight names as Mamba-1's
    "gpt_neox": Converter(_gpt_neox_config, _gpt_neox_weights),
    "mistral": Converter(_mistral_config, _mistral_weights),
}


# ----------------------------------------------------------------------------------------------------------
# reading the folder


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells a repository


def _folder(path: str | Path) -> Path:
    path = Path(path) if Path(path).exists() or not _HUB_ID.match(str(path)) else hub_folder(str(path))
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        if not path.exists():
            raise FileNotFoundError(f"no Hugging Face checkpoint at {path}: the path does not exist")
        raise FileNotFoundError(f"no Hugging Face checkpoint at {path}: no config.json in {folder}")
    return folder


def local_folder(path_or_id: str | Path) -> Path:
    """The checkpoint folder a path (a folder, or a file in it) or a Hub id (``owner/name``, see `hub_folder`)
    stands for; FileNotFoundError (one line) if there is none."""
    return _folder(path_or_id)


def hub_folder(repo_id: str) -> Path:
    """The local folder of Hub repository ``repo_id`` (``owner/name``), downloaded by
    ``huggingface_hub.snapshot_download`` if not cached: config, weights and tokenizer only. It honours
    ``HF_HUB_OFFLINE=1`` and the cache (``HF_HOME``), so an offline machine loads a model fetched before."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{repo_id} is not a local folder, and loading from the Hub needs huggingface_hub: "
                         f"pip install 'toolssm[hf]'") from None  # fmt: skip
    patterns = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                "pytorch_model.bin.index.json", "tokenizer.json"]  # fmt: skip
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - offline and not cached, no such repository, no network, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FileNotFoundError(f"no Hugging Face checkpoint at {repo_id}: not a local path, and the Hub "
                                f"download failed ({type(e).__name__}: {first})") from None  # fmt: skip


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable {folder / 'config.json'}: {type(e).__name__}: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"unreadable {folder / 'config.json'}: not a JSON object")
    return cfg


def _load_one(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".safetensors":
        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)


def read_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of the checkpoint in ``folder``, by their Hugging Face names; safetensors preferred."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _load_one(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"unreadable {index}: {type(e).__name__}: {e}") from None
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(_load_one(folder / shard))
            return state
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors, pytorch_model.bin or a sharded *.index.json"
    )


def _check_keys(ours: dict[str, Tensor], model: SequenceModel, where: str) -> None:
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(ours)), sorted(set(ours) - set(want))
    wrong = [f"{k} {tuple(v.shape)} (want {tuple(want[k].shape)})" for k, v in ours.items()
             if k in want and v.shape != want[k].shape]  # fmt: skip
    problems = [
        f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        raise ValueError(f"weights in {where} do not fit its config.json: {'; '.join(problems)}")


def _converted(folder: Path) -> tuple[Converter, str, dict[str, Any], int]:
    """config.json -> (its converter, our arch, our kwargs, its vocabulary rows)."""
    cfg = _read_config(folder)
    model_type = cfg.get("model_type")
    if model_type not in CONVERTERS:
        raise ValueError(
            f"unsupported Hugging Face model_type {model_type!r} in {folder / 'config.json'} "
            f"(supported: {', '.join(sorted(CONVERTERS))})"
        )
    conv = CONVERTERS[model_type]
    try:
        arch, kwargs = conv.config(cfg)
        return conv, arch, kwargs, int(cfg["vocab_size"])
    except KeyError as e:
        raise ValueError(f"bad {model_type} config in {folder / 'config.json'}: missing {e}") from None


def read_hf_config(path_or_dir: str | Path) -> tuple[str, dict[str, Any], int]:
    """The checkpoint's (our arch, our kwargs, its vocabulary rows), from config.json alone (no weights read)."""
    return _converted(_folder(path_or_dir))[1:]


def load_hf(path_or_dir: str | Path, device: str | torch.device = "cpu") -> tuple[SequenceModel, str, dict[str, Any]]:
    """A Hugging Face checkpoint folder (or a file in it) -> (our model, its arch, its kwargs). See the module doc."""
    folder = _folder(path_or_dir)
    conv, arch, kwargs, vocab_size = _converted(folder)
    model = build_model(arch, vocab_size, kwargs)
    state = conv.weights(read_weights(folder), kwargs)
    _check_keys(state, model, str(folder))
    model.load_state_dict(state, strict=True)  # copies into our fp32 parameters, whatever the file's dtype
    return model.to(device).eval(), arch, kwargs


# ----------------------------------------------------------------------------------------------------------
# vocabulary surgery: the checkpoint's rows in our vocabulary's order


def vocab_dims(arch: str, kwargs: dict[str, Any]) -> dict[str, int]:
    """The architecture's vocabulary-indexed tensors: state-dict name -> which dimension is the vocabulary.

    Found by building the model at two vocabulary sizes (on the meta device: no memory, no initialization) and
    comparing shapes, so it holds for every SequenceModel with no list to keep: Mamba's ``embed.weight`` and,
    untied, ``head.weight``; Pythia's ``embed_in.weight`` and ``embed_out.weight``; the LSTM's head bias too."""
    sizes = (7, 11)
    with torch.device("meta"):
        small, large = (build_model(arch, n, kwargs).state_dict() for n in sizes)
    dims = {}
    for name, t in small.items():
        differ = [d for d, (a, b) in enumerate(zip(t.shape, large[name].shape)) if a != b]
        if not differ:
            continue
        if len(differ) > 1 or (t.shape[differ[0]], large[name].shape[differ[0]]) != sizes:
            raise ValueError(f"cannot remap {arch}'s vocabulary: {name} has shape {tuple(t.shape)} at vocab_size 7")
        dims[name] = differ[0]
    return dims


def remap_vocab(
    model: SequenceModel, arch: str, kwargs: dict[str, Any], their_ids: Mapping[str, int], our_tokens: Sequence[str]
) -> tuple[SequenceModel, list[str]]:
    """``model`` (of ``arch``, ``kwargs``) with its vocabulary rows re-indexed to ``our_tokens`` (a Vocab's tokens,
    in id order): our token t gets the pretrained row ``their_ids[t]``; a token absent from ``their_ids`` gets the
    mean of the rows ``their_ids`` names (all rows if it is empty). Returns a new model, which
    ``build_model(arch, len(our_tokens), kwargs)`` rebuilds (so it saves as an ordinary checkpoint), on the
    model's device and in its mode, and the tokens that got a new row. See the module doc."""
    dims = vocab_dims(arch, kwargs)
    state = model.state_dict()
    if not dims:
        raise ValueError(f"cannot remap {arch}'s vocabulary: no tensor's shape depends on vocab_size")
    rows = {state[k].shape[d] for k, d in dims.items()}
    if len(rows) != 1:
        raise ValueError(f"cannot remap {arch}'s vocabulary: its vocabulary tensors disagree on the size {rows}")
    n_rows = rows.pop()
    bad = sorted((i, t) for t, i in their_ids.items() if not 0 <= i < n_rows)
    if bad:
        raise ValueError(
            f"the tokenizer has {len(bad)} ids beyond the model's {n_rows} vocabulary rows (e.g. {bad[0][1]!r}: "
            f"{bad[0][0]})"
        )
    src = torch.tensor([their_ids.get(t, -1) for t in our_tokens], dtype=torch.long)  # (V_ours,) -1: a new row
    known = src >= 0
    named = torch.tensor(sorted(set(their_ids.values())), dtype=torch.long) if their_ids else torch.arange(n_rows)
    new_state = dict(state)
    for name, dim in dims.items():
        w = state[name].movedim(dim, 0)  # (V_theirs, ...)
        out = w[named].mean(0, keepdim=True).repeat(len(our_tokens), *([1] * (w.dim() - 1)))  # (V_ours, ...)
        out[known] = w[src[known].to(w.device)]
        new_state[name] = out.movedim(0, dim).contiguous()
    fresh = build_model(arch, len(our_tokens), kwargs)
    fresh.load_state_dict(new_state, strict=True)
    device = next(model.parameters()).device
    return fresh.to(device).train(model.training), [t for t, k in zip(our_tokens, known.tolist()) if not k]


def load_hf_remapped(
    path_or_dir: str | Path, our_tokens: Sequence[str], device: str | torch.device = "cpu"
) -> tuple[SequenceModel, str, dict[str, Any], list[str], bool]:
    """`load_hf`, then `remap_vocab` onto ``our_tokens`` with the folder's ``tokenizer.json`` naming the rows.
    -> (model, arch, kwargs, the tokens that got a new row, whether the folder has a tokenizer). Without a
    tokenizer every token gets a new row."""
    from toolssm.tokenizer import FILE, Bpe

    folder = _folder(path_or_dir)
    has_tokenizer = (folder / FILE).is_file()
    their_ids = Bpe.load(folder).ids if has_tokenizer else {}
    model, arch, kwargs = load_hf(folder)
    model, new = remap_vocab(model, arch, kwargs, their_ids, our_tokens)
    return model.to(device), arch, kwargs, new, has_tokenizer
