"""Models: one file per architecture, one interface (`SequenceModel`)."""

from toolssm.models import mamba, mistral, pythia, rnn  # noqa: F401  (registers mamba, mistral, pythia, lstm, gru)
from toolssm.models.base import (
    ModelConfig,
    SequenceModel,
    State,
    build_model,
    model_names,
    n_params,
    resolve,
    select_state,
)

__all__ = [
    "ModelConfig",
    "SequenceModel",
    "State",
    "build_model",
    "model_names",
    "n_params",
    "resolve",
    "select_state",
]
