"""Models: one file per architecture, one interface (`SequenceModel`)."""

from toolssm.models import mamba, rnn  # noqa: F401  (registers mamba, lstm, gru)
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
