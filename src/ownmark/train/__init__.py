"""Training loops on Lightning Fabric."""

from ownmark.train.loop import (
    DeviceCopies,
    Engine,
    TrainConfig,
    TrainResult,
    accuracy,
    cpu_seeded,
    fit,
    key_seed,
    label_hook,
    lr_at,
    make_optimizer,
    predict_logits,
)

__all__ = [
    "DeviceCopies",
    "Engine",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "cpu_seeded",
    "fit",
    "key_seed",
    "label_hook",
    "lr_at",
    "make_optimizer",
    "predict_logits",
]


from ownmark._callable import callable_module  # noqa: E402

callable_module(__name__, "train")  # ``om.train(arch, data, ...)`` (ownmark.api.train) once this is imported
