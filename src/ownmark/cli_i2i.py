"""``ownmark i2i``: image-to-image models and deep output watermarking from the command line.

Thin over the library: train a target on a task's owner split, embed ``deepwm``, attack with a
surrogate (on the attacker's split) or output noise/JPEG, verify, and run the ``image2image`` bench.
OwnmarkError propagates to :func:`ownmark.cli.main`, which prints it as one red line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ownmark.cli_common import JsonOut, Record, Seed, Sets, SplitSeed, Threads
from ownmark.cli_common import check_outputs as _outputs
from ownmark.cli_common import parse_sets as _sets
from ownmark.cli_common import pin_threads as _pin_threads

app = typer.Typer(no_args_is_help=True, help="Image-to-image models and deep output watermarking (deepwm).")

Task = Annotated[str, typer.Option(help="denoise, deblur or colourise (on the bundled photo patches).")]


def _console():
    from ownmark.cli import console

    return console


def _fidelity(task: str, split_seed: int, clean, marked) -> str:
    from ownmark.data.image2image import load_task
    from ownmark.train.image2image import predict
    from ownmark.verify.metrics import psnr, ssim

    x = load_task(task, split_seed=split_seed).test.x
    b, bp = predict(clean, x), predict(marked, x)
    return f"PSNR {psnr(bp, b):.2f} dB, SSIM {ssim(bp, b):.4f} (marked vs clean outputs, test split)"


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Where to save the model (NAME.safetensors + NAME.json).")],
    arch: Annotated[str, typer.Option(help="unet, encdec, resnet-i2i or conv3.")] = "unet",
    task: Task = "deblur",
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    sets: Sets = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint written after every epoch.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from --checkpoint if it exists.")] = False,
    threads: Threads = 1,
) -> None:
    """Train a clean image-to-image target model on the owner's split of a task."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "prefix"), (checkpoint, "--checkpoint", "file"))
    from ownmark.data.image2image import load_task
    from ownmark.models import ModelSpec, save_model
    from ownmark.train.image2image import I2ITrainConfig, fit_i2i, predict, seeded
    from ownmark.verify.metrics import psnr
    from ownmark.watermarks import apply_overrides, config_dict

    config = apply_overrides(I2ITrainConfig(), _sets(sets))
    splits = load_task(task, split_seed=split_seed)
    spec = ModelSpec(arch, splits.owner.x.shape[1], splits.owner.y.shape[1], splits.owner.x.shape[-1], "image2image")
    model = seeded(spec.build, seed)
    fit_i2i(model, splits.owner.x, splits.owner.y, config, seed=seed, checkpoint=checkpoint, resume=resume)
    quality = psnr(predict(model, splits.test.x), splits.test.y)
    info = {"task": task, "split_seed": split_seed, "seed": seed, "config": config_dict(config), "test_psnr": quality}
    save_model(out, model, info=info)
    _console().print(f"trained {arch} on {task}: test PSNR {quality:.2f} dB -> {out}")


@app.command()
def embed(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Clean target model (from `ownmark i2i train`).")],
    out: Annotated[Path, typer.Option(help="Folder for marked.*, key.* and config.json.")],
    task: Task = "deblur",
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    preset: Annotated[str, typer.Option(help="default, paper or absorbed.")] = "default",
    sets: Sets = None,
    threads: Threads = 1,
) -> None:
    """Embed deep output watermarking (barrier or absorbed form); save marked model and key."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "folder"))
    from ownmark.cli import _save_config
    from ownmark.data.image2image import load_task
    from ownmark.io import save_key
    from ownmark.models import load_model, save_model
    from ownmark.watermarks import resolve_config
    from ownmark.watermarks.deepwm import DeepWM

    config = resolve_config(DeepWM, preset, _sets(sets))
    clean, _ = load_model(model)
    marked, key = DeepWM(config).embed(clean, load_task(task, split_seed=split_seed).owner, seed=seed)
    save_model(out / "marked", marked, info={"scheme": "deepwm", "task": task, "split_seed": split_seed})
    digest = save_key(out / "key", key)
    _save_config(out / "config.json", "i2i embed deepwm", config, preset=preset, seed=seed, key_sha256=digest)
    _console().print(f"deepwm ({config.form}): {_fidelity(task, split_seed, clean, marked)}; key sha256 {digest}")


@app.command()
def attack(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="surrogate, output-noise or output-jpeg.")],
    model: Annotated[Path, typer.Option(help="Victim model.")],
    out: Annotated[Path, typer.Option(help="Where to save the attacker's model.")],
    task: Task = "deblur",
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    sets: Sets = None,
    threads: Threads = 1,
) -> None:
    """Train a surrogate on the victim's outputs for the attacker's inputs (or perturb its outputs)."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "prefix"))
    from ownmark.attacks import ATTACKS
    from ownmark.data.image2image import load_task
    from ownmark.errors import ConfigError
    from ownmark.models import load_model, save_model
    from ownmark.watermarks import apply_overrides

    cls = ATTACKS.get(name)
    if getattr(cls, "applies_to", "any") != "image2image":
        raise ConfigError(f"{name} attacks classifiers; use `ownmark attack {name}`")
    config = apply_overrides(cls.config_class(), _sets(sets))
    victim, _ = load_model(model)
    attacked, cost = cls(config)(victim, load_task(task, split_seed=split_seed).attacker, seed=seed)
    info = {"attack": name, "task": task, "cost": {"seconds": cost.seconds, "queries": cost.queries}}
    save_model(out, attacked.model if hasattr(attacked, "perturb") else attacked, info=info)
    if hasattr(attacked, "perturb"):
        _console().print(f"{name} changes outputs at query time only; the victim was saved unchanged to {out}")
    _console().print(f"{name}: {cost.queries} queries, {cost.seconds:.1f} s -> {out}")


@app.command()
def verify(
    model: Annotated[list[Path], typer.Option(help="Suspect model(s) (repeatable).")],
    key: Annotated[Path, typer.Option(help="The owner's key (key.safetensors).")],
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.01,
    json_out: JsonOut = False,
    record: Record = None,
) -> None:
    """Verify suspects: centred NC, success rate, bit accuracy, p-value and the negative controls.

    Exit codes as `ownmark verify`: 0 when every suspect got a verdict, 1 on an error, 2 on a usage error.
    """
    _outputs((record, "--record", "file"))
    from rich.table import Table

    from ownmark.io import artefact_paths, load_json, load_key
    from ownmark.models import load_model
    from ownmark.verify import check_alpha, decide
    from ownmark.verify.record import to_json_line, verdict_record, write_records
    from ownmark.watermarks.deepwm import DeepWM

    check_alpha(alpha)
    k = load_key(key)
    key_digest = load_json(artefact_paths(key)[1])["sha256"]
    table = Table("suspect", "centred NC", "success", "bit acc", "p-value", "decision")
    controls, records = None, []
    for path in model:
        suspect, manifest = load_model(path)
        evidence = DeepWM().detect(suspect, k)
        verdict, d = decide(evidence, alpha), evidence.details
        records.append(
            verdict_record(verdict, suspect=str(path), suspect_digest=manifest["sha256"], key_digest=key_digest,
                           scheme=k.scheme, details=d)
        )  # fmt: skip
        controls = d["controls"]
        bits = f"{d['bit_accuracy']:.3f}" if "bit_accuracy" in d else "-"
        colour = "red" if verdict.owned else "green"
        table.add_row(
            str(path), f"{d['centred_nc']:.3f}", f"{d['success']:.1%}", bits, f"{verdict.p_value:.2e}",
            f"[{colour}]{verdict.decision}[/]",
        )  # fmt: skip
    if record is not None:
        write_records(record, records)
    if json_out:
        for r in records:
            typer.echo(to_json_line(r))
        return
    _console().print(table)
    table = Table("negative control", "centred NC", "success", "bit acc", "p-value")
    for name, c in (controls or {}).items():
        bits = f"{c['bit_accuracy']:.3f}" if "bit_accuracy" in c else "-"
        p = f"{c['bit_p_value']:.2e}" if "bit_p_value" in c else "-"
        table.add_row(name.replace("_", " "), f"{c['centred_nc']:.3f}", f"{c['success']:.1%}", bits, p)
    _console().print(table)
    _console().print(f"alpha = {alpha}; null hypothesis: {verdict.null_hypothesis}")


@app.command()
def bench(
    preset: Annotated[str, typer.Option(help="image2image (this CPU, ~10 min), smoke (seconds) or paper (GPU).")],
    out: Annotated[Path, typer.Option(help="Folder for results.json, report.md and figures.")] = Path(
        "runs/bench/image2image"
    ),
    benchmarks: Annotated[Path | None, typer.Option(help="BENCHMARKS.md to write the section into.")] = None,
) -> None:
    """Run the image-to-image bench: fidelity, extraction, surrogate matrix, controls, latency."""
    _outputs((out, "--out", "folder"), (benchmarks, "--benchmarks", "file"))
    from ownmark.bench.image2image import PRESETS, run_bench
    from ownmark.errors import UnknownNameError

    if preset not in PRESETS:
        raise UnknownNameError(f"no image2image bench preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    results = run_bench(PRESETS[preset], out, benchmarks=benchmarks, say=lambda m: _console().print(f"[dim]{m}[/]"))
    _console().print(f"results in {out / 'results.json'}, report in {out / 'report.md'} ({results['minutes']:.1f} min)")
