"""Named bench configurations of the one matrix engine (``ownmark bench run --preset NAME``).

``quick`` (every family, this CPU), ``full`` (quick plus the rest of the attack suite), ``smoke`` (tests),
``paper`` (a GPU); per family in depth: ``awencoder`` (the grid ``ownmark bench encoders`` reports: both
AWEncoder triggers, downstream fine-tuning at seven settings, pruning, quantization, continued SSL, an input
purifier, null encoders, white- and black-box verdicts) and ``image2image`` (deep output watermarking in
both forms against the surrogate matrix of three architectures x four losses and output perturbations;
``image2image-paper`` its GPU version, ``image2image-smoke`` its minutes-long one); ``ablations`` (each
design variant of FCW (no masking, direct fusion), PTYNet (several or generated backgrounds) and deepwm
(no second stage) beside its default, under the same attacks).
"""

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
    # transfer to another label set and back (parity labels, then a fresh head on the true ones), and
    # Neural Network Laundering (Aiken et al. 2021: Neural Cleanse's triggers, reset the units they excite, retrain)
    {"name": "transfer", "families": ["classifier"]},
    {"name": "neural-laundering", "families": ["classifier"]},
    # adversarial model extraction (FGSM neighbours crafted with ART on the substitute, labelled by the victim),
    # extraction from an ensemble of the victim and the attacker's own models, and an autoencoder in front
    {"name": "adv-extract", "families": ["classifier"], "set": {"budget": 1500, "epochs": 5}},
    {
        "name": "ensemble-distill",
        "families": ["classifier"],
        "set": {"budget": 1500, "epochs": 5, "member_archs": "lenet,cnn2"},
    },
    {"name": "input-reconstruct", "families": ["classifier"], "sweep": {"bottleneck": [16, 32]}},
    # adaptive attacks (the thief knows the method, not the key): a detector of the method's own triggers in front
    # of the stolen classifier (each scheme meets the detector built for it), a purifier sized to AWEncoder's budget
    *({"name": "trigger-detect", "schemes": [name], "set": {"scheme": name}} for name in CLASSIFIER_SCHEMES),
    {"name": "enc-purify", "families": ["encoder"]},
    {
        "name": "enc-finetune",
        "label": "enc-finetune-aug",
        "families": ["encoder"],
        "set": {"lr": 0.0001, "augment": True},
    },  # fine-tuning with augmentation
    # image-to-image analogues: outputs at fewer bits, the thief's own deepwm, training on purified outputs
    {"name": "output-squeeze", "sweep": {"bits": [6, 4]}},
    {"name": "overwrite", "label": "overwrite-deepwm", "families": ["image2image"], "set": {"scheme": "deepwm"}},
    {"name": "output-jpeg", "label": "purified-surrogate", "set": {"quality": 50}, "then": [{"name": "surrogate"}]},
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

# the encoder bench's attacks, as one matrix grid (`ownmark bench encoders` reads its rows)
_ENCODER_ATTACKS: list[dict[str, Any]] = [
    {"name": "none"},
    {"name": "enc-finetune", "sweep": {"lr": [0.0001, 0.001, 0.003, 0.01]}},
    {"name": "enc-finetune", "label": "enc-finetune-10ep", "set": {"lr": 0.001, "epochs": 10}},
    {"name": "enc-finetune", "label": "enc-finetune-sgd", "set": {"optimizer": "sgd"}, "sweep": {"lr": [0.01, 0.05]}},
    # fine-tuning with augmentation (each batch a random crop / warp / jitter view) at the rate the mark survives
    {"name": "enc-finetune", "label": "enc-finetune-aug", "set": {"lr": 0.0001, "augment": True}},
    {"name": "prune", "families": ["encoder"], "sweep": {"amount": [0.3, 0.5, 0.7]}},
    {"name": "enc-ssl"},
    {"name": "quantize", "families": ["encoder"], "sweep": {"bits": [8, 4]}},
    {"name": "enc-purify"},  # adaptive: an input purifier sized to the known budget eps
]
# the image-to-image bench's surrogate matrix and output perturbations (`ownmark bench image2image`)
_I2I_ATTACKS: list[dict[str, Any]] = [
    {"name": "none"},
    *(
        {"name": "surrogate", "label": f"surrogate-{arch}", "set": {"arch": arch}, "sweep": {"loss": list(losses)}}
        for arch, losses in (
            ("encdec", ("l1", "l2")),
            ("resnet-i2i", ("l2", "l2+gan")),
            ("unet", ("l1", "l2+gan", "ssim+gan")),
        )
    ),  # fmt: skip
    {"name": "surrogate", "label": "surrogate-augmented", "set": {"arch": "unet", "loss": "l2", "augment": True}},
    {"name": "output-noise", "sweep": {"std": [0.01, 0.02, 0.05]}},
    {"name": "output-jpeg", "sweep": {"quality": [90, 75, 50]}},
    {"name": "output-squeeze", "sweep": {"bits": [6, 4]}},
    # the thief embeds its own deep output watermark into the stolen network (the SoK's overwriting)
    {"name": "overwrite", "label": "overwrite-deepwm", "families": ["image2image"], "set": {"scheme": "deepwm"}},
    # adaptive: the thief knows the mark rides in the outputs' fine residual and trains on purified outputs
    {"name": "output-jpeg", "label": "purified-surrogate", "set": {"quality": 50}, "then": [{"name": "surrogate"}]},
]

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "name": "quick",
        "dataset": "mnist5k",
        "arch": "cnn2",
        "seeds": [0, 1],
        # AWEncoder as its default (the secret trigger); the paper's adversarial delta, not reliably verifiable at this
        # scale and the slowest embedding here, is measured by `full` and `awencoder` (keeps quick in 30 min)
        "schemes": {**{name: {} for name in CLASSIFIER_SCHEMES}, "awencoder": {}, "deepwm": {}},
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
    "awencoder": {  # the encoder bench's verdict grid on the matrix engine (~30 min on this CPU)
        "name": "awencoder",
        "dataset": "mnist5k",
        "seeds": [0],
        "schemes": ENCODER_SCHEMES,
        "attacks": _ENCODER_ATTACKS,
        "encoder": {"blackbox": True},
    },
    "awencoder-smoke": {  # minutes: the secret trigger, two SSL epochs, one null encoder, one attack
        "name": "awencoder-smoke",
        "seeds": [0],
        "schemes": {"awencoder": {"set": {"trigger": "secret", "epochs": 2, "n_verify": 80}}},
        "attacks": [{"name": "none"}, {"name": "prune", "families": ["encoder"], "set": {"amount": 0.5}}],
        "encoder": {"ssl": {"epochs": 2}, "nulls": [["conv4", "simclr", 201, "attacker"]], "blackbox": True},
    },
    "image2image": {  # the image-to-image bench's verdict grid on the matrix engine
        "name": "image2image",
        "dataset": "mnist5k",
        "seeds": [0],
        "schemes": {"deepwm": {}, "deepwm-absorbed": {"scheme": "deepwm", "preset": "absorbed"}},
        "attacks": _I2I_ATTACKS,
    },
    "image2image-paper": {  # `ownmark bench image2image --preset paper`, for a GPU: the paper's deepwm in both forms on
        # a 100-epoch UNet target, against 3 architectures x 4 losses of 100-epoch surrogates, an augmented one,
        # output noise and JPEG
        "name": "image2image-paper",
        "seeds": [0],
        "accelerator": "auto",
        "threads": 8,
        "schemes": {
            "deepwm": {"preset": "paper"},
            "deepwm-absorbed": {"scheme": "deepwm", "preset": "paper", "set": {"form": "absorbed"}},
        },
        "attacks": [
            {"name": "none"},
            *(
                {
                    "name": "surrogate",
                    "label": f"surrogate-{arch}",
                    "set": {"arch": arch, "epochs": 100},
                    "sweep": {"loss": ["l1", "l2", "l2+gan", "ssim+gan"]},
                }
                for arch in ("encdec", "resnet-i2i", "unet")
            ),
            {
                "name": "surrogate",
                "label": "surrogate-augmented",
                "set": {"arch": "unet", "loss": "ssim+gan", "epochs": 100, "augment": True},
            },
            {"name": "output-noise", "set": {"std": 0.02}},
            {"name": "output-jpeg", "set": {"quality": 75}},
        ],
        "image2image": {"arch": "unet", "epochs": 100},
    },
    "image2image-smoke": {  # minutes: small networks, no surrogate training inside the embedding
        "name": "image2image-smoke",
        "seeds": [0],
        "schemes": {"deepwm": {"set": {"epochs": 8, "extractor_epochs": 4, "surrogate_epochs": 0, "w_adv": 0.0}}},
        "attacks": [
            {"name": "none"},
            {"name": "output-noise", "set": {"std": 0.02}},
            {"name": "surrogate", "set": {"arch": "conv3", "epochs": 2}},
        ],  # fmt: skip
        "image2image": {"epochs": 6, "nulls": [["conv3", 301, "attacker"]]},
    },
    "ablations": {  # the seeds' design claims under one attack set: each variant beside its method's default
        "name": "ablations",
        "dataset": "mnist5k",
        "arch": "cnn2",
        "seeds": [0, 1],
        "schemes": {
            "fcw": {},
            "fcw-no-mask": {"scheme": "fcw", "preset": "no-mask"},
            # the default fuses invisibly (r 0.5); the paper's direct fusion is the other design
            "fcw-direct": {"scheme": "fcw", "preset": "direct"},
            "ptynet": {},
            "ptynet-multi": {"scheme": "ptynet", "preset": "multi"},
            "ptynet-generated": {"scheme": "ptynet", "preset": "generated"},
            "deepwm": {},
            "deepwm-one-stage": {"scheme": "deepwm", "set": {"surrogate_epochs": 0}},
        },  # fmt: skip
        "attacks": [
            {"name": "none"},
            {"name": "ftal", "set": {"epochs": 3}, "sweep": {"lr": [0.001, 0.01, 0.05]}},
            {"name": "ftal", "label": "ftal-adam", "set": {"epochs": 3, "optimizer": "adam", "lr": 0.001}},
            {"name": "rtal", "set": {"epochs": 3}},
            {"name": "prune", "families": ["classifier"], "sweep": {"amount": [0.3, 0.5, 0.7, 0.9]}},
            {"name": "fineprune", "set": {"amount": 0.7, "epochs": 2}},
            {"name": "distill", "label": "distill-probs", "set": {"output": "probs", "epochs": 5, "budget": 1500}},
            {"name": "squeeze", "sweep": {"bits": [1, 3]}},
            {"name": "jpeg", "sweep": {"quality": [50]}},
            *(
                {"name": attack, "schemes": ["ptynet", "ptynet-multi", "ptynet-generated"]}
                for attack in ("strip", "ft-target")
            ),
            *(
                {"name": "trigger-detect", "schemes": [name], "set": {"scheme": name.split("-")[0]}}
                for name in ("fcw", "fcw-no-mask", "fcw-direct", "ptynet", "ptynet-multi", "ptynet-generated")
            ),
            {"name": "surrogate", "sweep": {"arch": ["encdec", "unet"]}},
            {"name": "output-jpeg", "set": {"quality": 75}},
        ],  # fmt: skip
        "nulls": {"archs": ["cnn2", "lenet"], "seeds": 10, "attacker_model": True},
        "null_training": {"epochs": 6},
    },
}
