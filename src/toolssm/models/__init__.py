"""Models: one file per architecture, one interface (`SequenceModel`)."""

from toolssm.models import gated_deltanet, hybrid, kgram, mamba, mamba2, mistral, pythia, rmt, rnn  # noqa: F401  (registers them)
from toolssm.models.base import (
    ModelConfig,
    SequenceModel,
    State,
    build_model,
    gradient_model_names,
    has_fixed_state,
    model_names,
    n_params,
    resolve,
    select_state,
    set_grad_checkpoint,
)
from toolssm.runtime import resolve_vector_math

resolve_vector_math()  # before any model's ops run on several threads: oneMKL's first-call race (toolssm.runtime)

__all__ = [
    "ModelConfig",
    "SequenceModel",
    "State",
    "build_model",
    "gradient_model_names",
    "has_fixed_state",
    "model_names",
    "n_params",
    "resolve",
    "select_state",
    "set_grad_checkpoint",
]
