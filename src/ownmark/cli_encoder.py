"""The encoder family on the command line: mark with AWEncoder, verify, probe, bench.

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
