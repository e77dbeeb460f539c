"""The one model interface every architecture implements.

    forward(tokens (B, T), state=None) -> logits (B, T, V), state      parallel over time (training, prefill)
    step(tokens (B,), state)           -> logits (B, V), state         one token (decoding)

``state`` is ``None`` (the initial state) or a tuple of tensors whose first dimension is the batch, so the
rollout can drop finished episodes with `select_state` without knowing the architecture. For a GSSM (LSTM,
GRU, Mamba, a sliding-window Transformer) the state has a fixed size; a full-attention Transformer's state
(its KV cache) grows with the context, which is exactly the difference the paper is about.

A model knows nothing of tasks: it sees token ids and a vocabulary size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from toolssm.choices import choice
from toolssm.registry import Registry
from toolssm.registry import where as registry_where

State = tuple[Tensor, ...]


class SequenceModel(nn.Module):
    layered = False
    """whether forward runs a stack of layers through `call_layer`, so that activation checkpointing applies"""
    grad_checkpoint = False
    """recompute each layer's activations in the backward instead of keeping them (`set_grad_checkpoint`)"""
    trains_by_counting = False
    """True for a table learner (kgram): training counts batches (``fit_counts``), with no gradient"""

    def call_layer(self, layer: nn.Module, *args: Any) -> Any:
        """layer(*args). With grad_checkpoint on and a gradient wanted, only the layer's inputs are kept and its
        activations are recomputed in the backward: activation memory of one layer instead of all of them, for
        about one more forward's compute. Results and gradients are unchanged."""
        if self.grad_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Default: a length-1 forward. Architectures with a cheaper recurrence override this."""
        logits, state = self.forward(tokens[:, None], state)
        return logits[:, 0], state

    @property
    def fixed_state(self) -> bool:
        """True for a GSSM: the state does not grow with the context."""
        return True


def set_grad_checkpoint(model: SequenceModel, on: bool) -> SequenceModel:
    """Turn activation checkpointing on or off for model's layers; a one-line error for a model whose layers run
    in one call (LSTM, GRU: cuDNN runs the whole stack). Not a hyperparameter: checkpoints do not record it."""
    if on and not model.layered:
        raise ValueError(f"{type(model).__name__} has no layer stack to checkpoint (its layers run in one call)")
    model.grad_checkpoint = on
    return model


def select_state(state: State | None, index: Tensor) -> State | None:
    """Keep the batch rows in ``index`` of every state tensor."""
    if state is None:
        return None
    return tuple(s.index_select(0, index) for s in state)


@dataclass
class ModelConfig:
    """Which architecture, at which preset; any field left unset comes from the preset."""

    arch: Annotated[str, choice(model_names, aliases=("--model",))] = "lstm"
    """architecture: one of the registered models (lstm, gru, ...)"""
    preset: Annotated[str, choice(preset_names)] = "cpu"
    """cpu (trains in minutes on 2 cores) or paper (the paper's size)"""
    d_model: int | None = None
    """width (hidden size); default from the preset"""
    n_layers: int | None = None
    """depth; default from the preset"""
    d_state: int | None = None
    """SSM state size per channel (mamba); default from the preset"""
    d_conv: int | None = None
    """causal convolution width (mamba); default from the preset"""
    expand: int | None = None
    """inner width = expand * d_model (mamba); default from the preset"""
    n_heads: int | None = None
    """attention heads (pythia, mistral); default from the preset"""
    n_kv_heads: int | None = None
    """key/value heads for grouped-query attention (mistral); default: n_heads"""
    d_ff: int | None = None
    """MLP hidden width (pythia, mistral); default from the preset"""
    window: int | None = None
    """sliding-window length: a token sees itself and the window-1 before it (mistral); default from the preset"""
    pos: str | None = None
    """position encoding, rope or nope (pythia, mistral); default from the preset"""
    head_dim: int | None = None
    """width of one head: SSM head (mamba2), key head (gated_deltanet); default from the preset"""
    chunk: int | None = None
    """chunk length of the chunked parallel form (mamba2, gated_deltanet); default from the preset"""
    attn_every: int | None = None
    """every attn_every-th layer, counted from the top, is attention, the rest Mamba (hybrid); default: preset"""
    segment: int | None = None
    """tokens per segment (rmt); default from the preset"""
    n_mem: int | None = None
    """memory vectors carried between segments (rmt); default from the preset"""
    tie_embeddings: bool | None = None
    """the head reuses the embedding matrix (lstm, gru: default off; the models that take it otherwise: their default)"""


@dataclass(frozen=True)
class ModelSpec:
    cls: Callable[..., SequenceModel]
    presets: dict[str, dict[str, Any]]


#: every model by name: the built-in architectures, and the plugins of the ``toolssm.models`` entry-point group
MODELS: Registry[ModelSpec] = Registry("model", "toolssm.models")


def register(name: str, presets: dict[str, dict[str, Any]]):
    """Class decorator: add the architecture under ``name`` with its presets (at least ``cpu``). A name
    already taken is a one-line error naming both places."""

    def deco(cls):
        MODELS.add(name, ModelSpec(cls, presets), place=registry_where(cls))
        return cls

    return deco


def model_names() -> list[str]:
    return MODELS.names()


def preset_names() -> list[str]:
    """Every preset name of any registered model (cpu, paper, ...)."""
    return sorted({p for n in model_names() for p in MODELS.get(n).presets})


def gradient_model_names() -> list[str]:
    """The models trained by gradient descent: every one but the table learners (``trains_by_counting``)."""
    return [n for n in model_names() if not getattr(MODELS.get(n).cls, "trains_by_counting", False)]


def resolve(cfg: ModelConfig) -> dict[str, Any]:
    """The full keyword arguments for the architecture: its preset, overridden by the set fields."""
    spec = MODELS.get(cfg.arch)
    if cfg.preset not in spec.presets:
        raise ValueError(f"unknown preset {cfg.preset!r} for {cfg.arch} (choose from: {', '.join(spec.presets)})")
    kwargs = dict(spec.presets[cfg.preset])
    accepted = set(kwargs) | _keywords(spec.cls)  # the preset's settings, and the constructor's optional ones
    for k, v in asdict(cfg).items():
        if k in ("arch", "preset") or v is None:
            continue
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError(f"bad model setting {k}={v}: must be positive")
        if k not in accepted:
            raise ValueError(f"model {cfg.arch} has no setting {k} (it has: {', '.join(sorted(accepted))})")
        kwargs[k] = v
    return kwargs


def _keywords(cls) -> set[str]:
    """The keyword arguments a model's constructor takes besides the vocabulary size."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return set()
    return {k for k, p in params.items() if k != "vocab_size" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_model(arch: str, vocab_size: int, kwargs: dict[str, Any]) -> SequenceModel:
    return MODELS.get(arch).cls(vocab_size=vocab_size, **kwargs)


def has_fixed_state(cfg: ModelConfig) -> bool:
    """Whether the configured model is a GSSM (its state does not grow with the context), without building
    its weights: the model is built on the meta device."""
    with torch.device("meta"):
        return build_model(cfg.arch, 8, resolve(cfg)).fixed_state


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


