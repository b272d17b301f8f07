"""Named bench configurations: ``quick`` for this CPU in minutes, ``full`` (quick plus the further
attacks: input preprocessing, weight quantization), ``smoke`` for tests, ``paper`` for a GPU."""

from __future__ import annotations

from typing import Any

CLASSIFIER_SCHEMES = ("fcw", "content", "noise", "unrelated", "ptynet")

# The removal suite of WRT-style studies at realistic learning rates (METHODS.md).
_ATTACKS: list[dict[str, Any]] = [
    {"name": "none"},
    {"name": "ftll", "set": {"epochs": 3}},
    {"name": "ftal", "set": {"epochs": 3}, "sweep": {"lr": [0.001, 0.01, 0.05]}},
    {"name": "ftal", "label": "ftal-adam", "set": {"epochs": 3, "optimizer": "adam", "lr": 0.001}},
    {"name": "rtll", "set": {"epochs": 3}},
    {"name": "rtal", "set": {"epochs": 3}},
    {"name": "prune", "families": ["classifier", "encoder"], "sweep": {"amount": [0.1, 0.3, 0.5, 0.7, 0.9]}},
    {"name": "fineprune", "set": {"amount": 0.7, "epochs": 2}},
    {"name": "distill", "label": "distill-labels", "set": {"output": "labels", "epochs": 5}},
    {
        "name": "distill",
        "label": "distill-probs",
        "set": {"output": "probs", "epochs": 5},
        "sweep": {"budget": [300, 1500]},
    },
    {"name": "distill", "label": "distill-logits", "set": {"output": "logits", "epochs": 5}},
    # extraction with another distribution's images (scikit-image photo patches, converted to grey 28x28)
    {"name": "distill", "label": "distill-ood", "set": {"output": "probs", "epochs": 5, "source": "photos"}},
    {"name": "noise", "sweep": {"std": [0.1, 0.3, 0.5]}},
    {"name": "blur", "sweep": {"sigma": [0.5, 1.0, 2.0]}},
    {"name": "flip"},
    {"name": "jpeg", "sweep": {"quality": [90, 50, 10]}},
    # PTYNet's own threats (Wang et al. 2023): the target alone fine-tuned, the proprietary branch dropped
    {"name": "ft-target", "set": {"epochs": 3}, "schemes": ["ptynet"]},
    {"name": "strip", "schemes": ["ptynet"]},
    # encoder schemes (AWEncoder): downstream fine-tuning at three rates and continued SSL, beside pruning
    {"name": "enc-finetune", "sweep": {"lr": [0.0001, 0.001, 0.01]}},
    {"name": "enc-ssl"},
    # image-to-image schemes (deep output watermarking): surrogates of three architectures, output noise and JPEG
    {"name": "surrogate", "sweep": {"arch": ["encdec", "resnet-i2i", "unet"]}},
    {"name": "output-noise", "set": {"std": 0.02}},
    {"name": "output-jpeg", "set": {"quality": 75}},
]
# the rest of the SoK's input-preprocessing group, weight quantization (no training: verification queries
# only), fine-tuning with smoothed or noisy labels, and the model modifications (issue 17), in the `full` preset
_MORE_ATTACKS: list[dict[str, Any]] = [
    {"name": "squeeze", "sweep": {"bits": [1, 3]}},
    {"name": "median", "sweep": {"kernel_size": [3, 5]}},
    {"name": "mean", "sweep": {"kernel_size": [3]}},
    {"name": "occlusion", "sweep": {"size": [8, 14]}},
    {"name": "quantize", "families": ["classifier", "encoder"], "sweep": {"bits": [8, 4, 2]}},
    {"name": "label-smooth", "set": {"epochs": 3, "smoothing": 0.3}},
    {"name": "label-noise", "set": {"epochs": 3, "noise": 0.3}},
    {"name": "overwrite", "families": ["classifier"], "set": {"scheme": "fcw"}},  # FCW's own 10 epochs
    # the SoK's model modifications: weight shifting, regularization, PGD adversarial training
    {"name": "weight-shift", "set": {"epochs": 5}},
    {"name": "regularization", "set": {"reg_epochs": 3, "epochs": 3}},
    {"name": "adv-train", "set": {"epochs": 3}},
    {"name": "neural-cleanse", "families": ["classifier"]},
    {"name": "feature-permute", "families": ["classifier"]},  # the function unchanged: no verdict may move
    # the SoK's retraining variants: smooth retraining (answers averaged over 3 shifted copies), and
    # cross-architecture retraining (distillation into another architecture)
    {"name": "smooth-distill", "families": ["classifier"], "set": {"budget": 1500, "epochs": 5}},
    {
        "name": "distill",
        "label": "distill-cross-arch",
        "families": ["classifier"],
        "set": {"budget": 1500, "epochs": 5, "arch": "lenet"},
    },
    # IBM ART's Knockoff Nets beside ownmark's distillation (same budget and training)
    {"name": "knockoff", "families": ["classifier"], "set": {"budget": 1500, "epochs": 5}},
    {
        "name": "knockoff",
        "label": "knockoff-adaptive",
        "families": ["classifier"],
        "set": {"budget": 1500, "epochs": 5, "strategy": "adaptive"},
    },
    # combined attacks the SoK found strongest: fine-pruning then fine-tuning; extraction from a preprocessed API
    {
        "name": "fineprune",
        "families": ["classifier"],
        "set": {"amount": 0.7, "epochs": 2},
        "then": [{"name": "ftal", "set": {"epochs": 3, "lr": 0.01}}],
    },
    {
        "name": "squeeze",
        "families": ["classifier"],
        "set": {"bits": 3},
        "then": [{"name": "distill", "set": {"output": "probs", "epochs": 5, "budget": 1500}}],
    },
]
# the paper's adversarial delta and ownmark's secret-trigger variant, side by side
# (the scheme's default is now the secret variant, so the paper's row names its preset)
ENCODER_SCHEMES = {
    "awencoder": {"preset": "adversarial"},
    "awencoder-secret": {"scheme": "awencoder", "preset": "secret"},
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "name": "quick",
        "dataset": "mnist5k",
        "arch": "cnn2",
        "seeds": [0, 1],
        "schemes": {**{name: {} for name in CLASSIFIER_SCHEMES}, **ENCODER_SCHEMES, "deepwm": {}},
        "attacks": _ATTACKS,
        "nulls": {"archs": ["cnn2", "lenet"], "seeds": 10, "attacker_model": True},  # 21 null models
        "null_training": {"epochs": 6},
    },
    "full": {  # quick plus every further attack ownmark has (issue 17's suite as it grows)
        "name": "full",
        "dataset": "mnist5k",
        "arch": "cnn2",
        "seeds": [0, 1],
        "schemes": {**{name: {} for name in CLASSIFIER_SCHEMES}, **ENCODER_SCHEMES, "deepwm": {}},
        "attacks": [*_ATTACKS, *_MORE_ATTACKS],
        "nulls": {"archs": ["cnn2", "lenet"], "seeds": 10, "attacker_model": True},
        "null_training": {"epochs": 6},
    },
    "smoke": {  # the smallest real run: one scheme, three attacks, for tests and a first look
        "name": "smoke",
        "dataset": "mnist5k",
        "arch": "cnn2",
        "seeds": [0],
        "clean": {"epochs": 3},
        "schemes": {"fcw": {"set": {"epochs": 2, "milestones": []}}},
        "attacks": [{"name": "none"}, {"name": "prune", "sweep": {"amount": [0.5, 0.9]}}, {"name": "flip"}],
        "nulls": {"archs": ["cnn2"], "seeds": 1},
        "null_training": {"epochs": 2},
    },
    "paper": {  # for a GPU: CIFAR-10 and ResNet-18 as in Wen et al. 2023, paper-code embedding presets
        "name": "paper",
        "dataset": "tv:CIFAR10",
        "arch": "tv:resnet18:cifar",  # the CIFAR stem (3x3, no pool), as the papers train on 32-px images
        "seeds": [0, 1, 2],
        "accelerator": "auto",
        "clean": {"epochs": 60, "lr": 0.1, "milestones": [0.5, 0.75]},
        "schemes": {
            "fcw": {"preset": "code-latest"},
            "content": {"preset": "paper"},
            "noise": {"preset": "paper"},
            "unrelated": {"preset": "paper"},
            "ptynet": {"preset": "paper"},
            "awencoder": {"preset": "paper"},
            "deepwm": {"preset": "paper"},
        },
        "encoder": {"arch": "resnet-s", "ssl": {"epochs": 200, "batch_size": 256}},
        "image2image": {"arch": "unet", "epochs": 100},
        "attacks": [
            *_ATTACKS[:8],
            {"name": "distill", "label": "distill-probs", "set": {"output": "probs", "epochs": 30, "budget": 15000}},
            *_ATTACKS[11:],
        ],
        "nulls": {"archs": ["tv:resnet18:cifar", "resnet-s"], "seeds": 10, "attacker_model": True},
    },
}
