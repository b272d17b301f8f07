"""The encoder family on the command line: mark with AWEncoder, verify, probe, bench.

``ownmark embed awencoder`` and ``ownmark verify`` with an AWEncoder key call the functions here;
``ownmark encoder probe`` and ``ownmark bench encoders`` are commands of their own. Pre-training is
``ownmark train --family encoder`` (:class:`ownmark.families.encoder.Encoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ownmark.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Self-supervised encoders: utility probes.")


def _console():
    from ownmark.cli import console

    return console


def _splits(dataset: str, split_seed: int) -> Any:
    from ownmark.families.classifier import Context

    return Context.load(dataset, split_seed).splits


def embed_encoder(model: Path, out: Path, dataset: str, split_seed: int, seed: int, config: Any, nulls: int,
                  engine: Any) -> None:  # fmt: skip
    """Mark an encoder with AWEncoder, calibrate the key on ``nulls`` independent encoders, save both."""
    import torch

    from ownmark.io import save_key
    from ownmark.models import ModelSpec, load_encoder, save_model
    from ownmark.train.probe import linear_probe
    from ownmark.train.ssl import pretrain
    from ownmark.watermarks.awencoder import AWEncoder

    if nulls < 5:
        raise ConfigError(f"--nulls must be at least 5 (the margin needs them), got {nulls}")
    splits = _splits(dataset, split_seed)
    clean = load_encoder(model, splits.owner.shape)
    scheme = AWEncoder(config)
    marked, key = scheme.embed(clean, splits.owner, seed=seed, engine=engine)
    spec = clean.spec
    calib = {}
    for i in range(nulls):  # the owner's own independent encoders: other seeds, same recipe
        torch.manual_seed(10_000 + i)
        enc = ModelSpec(spec.arch, spec.in_channels, spec.num_classes, spec.image_size, family="encoder").build()
        pretrain(enc, splits.owner, config.ssl, seed=10_000 + i, engine=engine)
        calib[f"null-{i}"] = enc
    key = scheme.calibrate(key, calib, probe=(splits.attacker, splits.test))
    save_model(out / "marked", marked, info={"scheme": "awencoder", "dataset": dataset, "split_seed": split_seed})
    digest = save_key(out / "key", key)
    from ownmark.cli import _save_config

    _save_config(out / "config.json", "embed awencoder", config, seed=seed, key_sha256=digest, nulls=nulls)
    probe = (splits.attacker, splits.test)
    _console().print(
        f"awencoder: clean probe {linear_probe(clean, *probe).accuracy:.4f}, marked probe "
        f"{linear_probe(marked, *probe).accuracy:.4f}; null margin tau {key.meta['tau']:.4f}; "
        f"key sha256 {digest} (publish it as a commitment)"
    )


def verify_suspect(scheme: Any, key: Any, suspect: Any, *, blackbox: bool) -> Any:
    """White-box (an encoder module or feature API) or black-box (a classifier) AWEncoder evidence."""
    family = getattr(getattr(suspect, "spec", None), "family", None)
    if blackbox or family == "classifier":
        return scheme.detect_blackbox(suspect, key)
    return scheme.detect(suspect, key)


@app.command()
def probe(
    model: Annotated[Path, typer.Option(help="An encoder (from `ownmark train --family encoder`).")],
    dataset: Annotated[str, typer.Option(help="Labelled downstream data: mnist5k, digits, photos, ...")] = "mnist5k",
    split_seed: Annotated[int, typer.Option(help="Seed of the split.", min=0, max=2**63 - 1)] = 0,
    shots: Annotated[int | None, typer.Option(help="Labels per class for a few-shot probe.", min=1)] = None,
) -> None:
    """Linear-probe and k-NN accuracy of an encoder's frozen features on a downstream task."""
    from ownmark.data import ImageSet, to_image_shape
    from ownmark.models import load_encoder
    from ownmark.train.probe import knn_accuracy, linear_probe, pixel_probe

    encoder = load_encoder(model)
    splits = _splits(dataset, split_seed)
    shape = tuple(encoder.spec.input_shape)

    def fit(d: ImageSet) -> ImageSet:
        return d if d.shape == shape else ImageSet(d.name, to_image_shape(d.x, shape), d.y, d.num_classes)

    train, test = fit(splits.attacker), fit(splits.test)
    acc = linear_probe(encoder, train, test, shots=shots).accuracy
    _console().print(
        f"{model} on {dataset}: linear probe {acc:.4f} (raw pixels {pixel_probe(train, test, shots=shots):.4f}), "
        f"k-NN {knn_accuracy(encoder, train, test):.4f}" + (f", {shots} labels per class" if shots else "")
    )


def bench(preset: str, out: Path, benchmarks: Path | None) -> None:
    """Run the encoder bench preset and print where its report is."""
    from ownmark.bench.encoders import PRESETS, run_encoder_bench

    if preset not in PRESETS:
        raise ConfigError(f"no encoder bench preset {preset!r}; known: {', '.join(PRESETS)}")
    console = _console()
    run_encoder_bench(PRESETS[preset], out, say=lambda m: console.print(f"[dim]{m}[/]"), benchmarks=benchmarks)
    console.print(f"report written to {out / 'report.md'}")
