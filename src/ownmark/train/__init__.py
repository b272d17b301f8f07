"""Training loops on Lightning Fabric."""

from ownmark.train.loop import (
    Engine,
    TrainConfig,
    TrainResult,
    accuracy,
    fit,
    key_seed,
    lr_at,
    make_optimizer,
    predict_logits,
)

__all__ = [
    "Engine",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "fit",
    "key_seed",
    "lr_at",
    "make_optimizer",
    "predict_logits",
]
