"""The ``ownmark`` command: one thin subcommand per verb over the library.

Every OwnmarkError becomes one red line and exit code 1; anything else keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ownmark.cli_common import JsonOut, Record, Seed, Sets, SplitSeed, Threads
from ownmark.cli_common import check_outputs as _outputs
from ownmark.cli_common import parse_sets as _sets
from ownmark.cli_common import pin_threads as _pin_threads
from ownmark.errors import ConfigError, OwnmarkError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Embed, attack and verify DNN watermarks.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks.")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        from ownmark import __version__

        typer.echo(f"ownmark {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log lines (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log errors only (results still print).")] = False,
    trust_arch: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-arch",
            help="Allow models whose architecture is user code pkg.module:factory to be built (repeatable; loading "
            "one imports and runs that code). Also OWNMARK_TRUSTED_ARCH.",
        ),
    ] = None,
) -> None:
    """Embed, attack and verify DNN watermarks."""
    for arch in trust_arch or []:
        from ownmark.models.user import trust

        trust(arch)
    if quiet and verbose:
        raise typer.BadParameter("give -q or -v, not both", param_hint="-q/-v")
    if quiet or verbose:  # otherwise the level main() set (WARNING) stands
        level = logging.ERROR if quiet else (logging.INFO, logging.DEBUG)[min(verbose, 2) - 1]
        logging.getLogger().setLevel(level)


console = Console(width=None if sys.stdout.isatty() else 160)

Dataset = Annotated[
    str,
    typer.Option(
        help="mnist5k, digits, photos, folder:PATH, tv:NAME[:SPLIT] (large ones are streamed) or synthetic:CxHxW:K."
    ),
]
AnyData = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="mnist5k, digits, photos, folder:PATH, tv:NAME[:SPLIT] or synthetic:CxHxW:K; image-to-image: a task "
        "(denoise, deblur, colourise), on other images as TASK@SOURCE (deblur@folder:PATH). Default: the model's "
        "own (its manifest), else the family's (mnist5k; deblur).",
    ),
]
Preset = Annotated[str, typer.Option(help="Named configuration (see `ownmark list presets`).")]
Accelerator = Annotated[
    str, typer.Option(help="Where training runs (Fabric) and models answer queries: cpu, cuda, gpu, auto.")
]
Devices = Annotated[int, typer.Option(help="Devices per node.")]
Nodes = Annotated[int, typer.Option("--num-nodes", help="Number of nodes.")]
TargetUrl = Annotated[
    str | None,
    typer.Option(help="A served model: http://HOST:PORT, or http://HOST:PORT/v1/models/NAME for one of several."),
]
Token = Annotated[str | None, typer.Option(help="API token for --target-url.", envvar="OWNMARK_TOKEN")]


def _engine(accelerator: str, devices: int, num_nodes: int):
    from ownmark.train import Engine

    engine = Engine(accelerator=accelerator, devices=devices, num_nodes=num_nodes, progress=sys.stderr.isatty())
    _inference(accelerator)
    return engine


def _inference(accelerator: str) -> None:
    """For the rest of the command, model answers (verification queries, probes, utility) run on the
    accelerator: models move there for each call and come back (``ownmark.models.encoder.inference_on``)."""
    import click

    from ownmark.models.encoder import engine_device, inference_on
    from ownmark.train import Engine

    Engine(accelerator=accelerator)  # refuses an unknown one, or cuda where there is no GPU
    context = click.get_current_context(silent=True)
    if context is not None:
        context.with_resource(inference_on(engine_device(accelerator)))


def _save_config(path: Path, command: str, config: Any, **extra: Any) -> None:
    from ownmark.io import save_json
    from ownmark.watermarks import config_dict

    save_json(path, {"command": command, "config": config_dict(config), **extra})


@app.command("list")
def list_(
    what: Annotated[
        str,
        typer.Argument(
            help="families, metrics, schemes, attacks, models, encoders, image2image, defenses, datasets or presets"
        ),
    ] = "all",
) -> None:
    """List what ownmark knows by name (one kind: with a line on each)."""
    from ownmark.catalog import load

    groups = load()
    order = ["families", "metrics", "schemes", "attacks", "models", "encoders", "image2image", "defenses",
             "datasets", "presets"]  # fmt: skip
    if what != "all" and what not in groups:
        raise ConfigError(f"cannot list {what!r}; choose one of {', '.join(order)} or all")
    if what == "all":
        for name in order:
            console.print(f"[bold]{name}[/]: {', '.join(groups[name])}", soft_wrap=True)
        return
    width = max(map(len, groups[what]))
    for name, line in groups[what].items():
        console.print(f"{name:<{width}}  {line}", soft_wrap=True, markup=False)


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Where to save the model (NAME.safetensors + NAME.json).")],
    arch: Annotated[
        str | None,
        typer.Option(
            help="Architecture (see `ownmark list models`), or your own as pkg.module:factory; default the family's: "
            "cnn2, conv4, encdec."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="mnist5k, digits, photos, folder:PATH, tv:NAME[:SPLIT] or synthetic:CxHxW:K; image-to-image: a task "
            "(denoise, deblur, "
            "colourise), on other images as TASK@SOURCE (deblur@folder:PATH, any size). Default mnist5k "
            "(image-to-image: deblur)."
        ),
    ] = None,
    split_seed: SplitSeed = 0,
    split: Annotated[str, typer.Option(help="Train on the owner's or the attacker's part.")] = "owner",
    seed: Seed = 0,
    sets: Sets = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint written after every epoch.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from --checkpoint if it exists.")] = False,
    accelerator: Accelerator = "cpu",
    devices: Devices = 1,
    num_nodes: Nodes = 1,
    family: Annotated[
        str,
        typer.Option(
            help="classifier; encoder: self-supervised pre-training (--set method=simclr|moco|byol); image2image: "
            "a network trained on a task's pairs (see `ownmark list families`)."
        ),
    ] = "classifier",
    dim: Annotated[
        int | None, typer.Option(help="Feature dimension of an encoder (default 128); other families: from the data.")
    ] = None,
    threads: Threads = 1,
) -> None:
    """Train a clean model of any family (classifier, encoder, image2image) on one part of a dataset."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "prefix"), (checkpoint, "--checkpoint", "file"))
    from ownmark.families import FAMILIES
    from ownmark.models import save_model

    if split not in ("owner", "attacker"):
        raise ConfigError(f"--split must be owner or attacker, got {split!r}")
    fam = FAMILIES.get(family)
    arch = arch or fam.default_arch
    _trust_named(arch)
    dataset = dataset or fam.default_dataset
    config = fam.train_config(_sets(sets))
    splits = fam.load_splits(dataset, split_seed)
    model = fam.fit(
        arch, getattr(splits, split), seed=seed, config=config, engine=_engine(accelerator, devices, num_nodes),
        checkpoint=checkpoint, resume=resume, out_dim=dim,
    )  # fmt: skip
    quality, why = None, ""
    if getattr(splits.test, "num_classes", 2) < 2:  # e.g. tv:STL10:unlabeled: no labels to measure a utility on
        why = f"no labels in {dataset} to measure it; use `ownmark evaluate --dataset` with a labelled one"
    else:
        try:
            quality = fam.utility(model, splits)
        except ConfigError as err:  # e.g. a streamed test part too large to hold: keep the trained model
            why = f"not measured ({err})"
    info = {"family": fam.name, "dataset": dataset, "split_seed": split_seed, "split": split, "seed": seed,
            fam.utility_key: quality}  # fmt: skip
    save_model(out, model, info=info)
    _save_config(out.with_name(out.name.removesuffix(".safetensors") + ".config.json"), "train", config, seed=seed)
    measured = f"{quality:.4f}" if quality is not None else why
    console.print(f"trained {arch} ({fam.name}) on {dataset}/{split}: {fam.utility_name} {measured} -> {out}")


@app.command()
def embed(
    ctx: typer.Context,
    scheme: Annotated[str, typer.Argument(help="Watermark scheme (see `ownmark list schemes`).")],
    model: Annotated[
        str,
        typer.Option(
            help="Model to mark: an ownmark model (from `ownmark train`), a bare state dict (.safetensors or "
            ".pt, with --arch), or an architecture name (tv:NAME, timm:NAME: untrained, nothing is downloaded)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for marked.*, key.* and config.json.")],
    arch: Annotated[
        str | None,
        typer.Option(
            help="Architecture of a bare state dict (default: the family's: cnn2, conv4), or your own as "
            "pkg.module:factory (factory(in_channels, num_classes, image_size) -> nn.Module)."
        ),
    ] = None,
    dataset: AnyData = None,
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    preset: Preset = "default",
    sets: Sets = None,
    accelerator: Accelerator = "cpu",
    devices: Devices = 1,
    num_nodes: Nodes = 1,
    nulls: Annotated[int, typer.Option(help="Encoder schemes: independent encoders that set the null margin.")] = 5,
    threads: Threads = 1,
) -> None:
    """Embed a watermark into a copy of a model; save the marked model and the secret key."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "folder"))
    from ownmark.families import FAMILIES
    from ownmark.io import artefact_paths, save_key
    from ownmark.models import save_model
    from ownmark.models.injected import load_target
    from ownmark.watermarks import WATERMARKS, resolve_config

    cls = WATERMARKS.get(scheme)
    config = resolve_config(cls, preset, _sets(sets))
    family = FAMILIES.get(getattr(cls, "family", "classifier"))
    _trust_named(arch)
    dataset = dataset or _trained_on(model) or family.default_dataset
    splits = family.load_splits(dataset, split_seed)
    engine = _engine(accelerator, devices, num_nodes)
    if all(p.is_file() for p in artefact_paths(model)):  # an ownmark model: check it fits the data
        clean = _load_fitting(model, family, splits.owner, dataset)
    else:  # a bare state dict or an architecture name
        clean = load_target(model, family.spec(arch or family.default_arch, splits.owner), seed=seed)
    marked, key = cls(config).embed(clean, splits.owner, seed=seed, engine=engine)
    key = family.after_embed(cls(config), key, clean, splits, nulls=nulls, engine=engine)
    save_model(out / "marked", marked, info={"scheme": scheme, "dataset": dataset, "split_seed": split_seed})
    digest = save_key(out / "key", key)
    _save_config(out / "config.json", f"embed {scheme}", config, preset=preset, seed=seed, key_sha256=digest,
                 nulls=nulls)  # fmt: skip
    short = family.utility_short
    tau = f"; null margin tau {key.meta['tau']:.4f}" if "tau" in key.meta else ""
    note = family.embed_note(clean, marked, splits)
    console.print(
        f"{scheme}: clean {short} {family.utility(clean, splits):.4f}, marked {short} "
        f"{family.utility(marked, splits):.4f}{tau}{'; ' + note if note else ''}; key sha256 {digest} (publish it "
        "as a commitment)"
    )
    if scheme == "ptynet":
        from ownmark.watermarks.ptynet import false_positive_rate

        fpr = false_positive_rate(marked, splits.test.x)
        console.print(f"proprietary model's false positives on clean test images: {fpr:.4f} (bounds the fidelity loss)")


def _trust_named(arch: str | None) -> None:
    """An architecture the user names with --arch is code they chose to run: trusted for this command."""
    from ownmark.models.user import is_user_arch, trust

    if arch and is_user_arch(arch):
        trust(arch)


def _trained_on(path: Any) -> str | None:
    """The dataset an ownmark artefact's manifest says it was trained or marked on (None for other files):
    commands on a model use its own data unless --dataset says otherwise."""
    from ownmark.io import artefact_paths, load_json

    manifest = artefact_paths(path)[1]
    try:
        info = (load_json(manifest) if manifest.is_file() else {}).get("info") or {}
    except (OSError, ValueError, AttributeError):
        return None
    dataset = info.get("dataset") if isinstance(info, dict) else None
    return dataset if isinstance(dataset, str) and dataset else None


def _family(path: Path) -> Any:
    """The model family an ownmark artefact's manifest names (classifier when it names none)."""
    from ownmark.families import FAMILIES
    from ownmark.io import artefact_paths, load_json

    manifest = artefact_paths(path)[1]
    data = load_json(manifest) if manifest.is_file() else {}
    spec = data.get("spec") if isinstance(data, dict) else None
    return FAMILIES.get(spec.get("family", "classifier") if isinstance(spec, dict) else "classifier")


def _load_fitting(path: Any, family: Any, data: Any, source: str) -> Any:
    """Load an ownmark model of ``family`` and check that it takes ``data`` (one split part)."""
    from ownmark.errors import KeyMismatchError
    from ownmark.families import family_of
    from ownmark.models import load_model

    model, _ = load_model(path)
    if family_of(model) is not family:
        raise KeyMismatchError(
            f"{path} holds a {family_of(model).name} ({model.spec.arch}), not a{'n' * (family.name[0] in 'aeiou')} "
            f"{family.name}; pass a {family.name} model"
        )
    family.check_fits(model, data, source)
    return model


@app.command()
def attack(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Attack (see `ownmark list attacks`).")],
    out: Annotated[Path, typer.Option(help="Where to save the attacked model.")],
    model: Annotated[Path | None, typer.Option(help="Victim model (or --target-url).")] = None,
    target_url: TargetUrl = None,
    token: Token = None,
    dataset: AnyData = None,
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    preset: Preset = "default",
    sets: Sets = None,
    accelerator: Accelerator = "cpu",
    devices: Devices = 1,
    num_nodes: Nodes = 1,
    threads: Threads = 1,
) -> None:
    """Attack a copy of a model with the attacker's data; report the cost."""
    _pin_threads(ctx, threads)
    _outputs((out, "--out", "prefix"))
    from ownmark.attacks import ATTACKS
    from ownmark.families import FAMILIES
    from ownmark.models import save_model
    from ownmark.watermarks import resolve_config

    cls = ATTACKS.get(name)
    if getattr(cls, "input_transform", False):
        raise ConfigError(
            f"{name} transforms the suspect's inputs at verification time and changes no weights; "
            f"use `ownmark verify --transform {name} --set key=value`"
        )
    if getattr(cls, "query_time", False):
        raise ConfigError(
            f"{name} deploys the victim behind a component it trains (at query time), which is not one model file; "
            f"run it in a bench (`ownmark bench run --preset full`) or from Python (`om.create_attack({name!r})`)"
        )
    config = resolve_config(cls, preset, _sets(sets))
    if model and target_url:
        raise ConfigError("name one victim: --model PATH or --target-url URL, not both")
    # the family: the victim's (from its manifest), or over an API the attack's first; it must be one it fits
    family = _family(model) if model else FAMILIES.get(cls.families[0])
    if family.name not in cls.families:
        fits = "/".join(cls.families)
        raise ConfigError(
            f"{name} attacks {fits} models; {model} holds a {family.name}, not a{'n' * (fits[0] in 'aeiou')} {fits}"
        )
    dataset = dataset or (_trained_on(model) if model else None) or family.default_dataset
    splits = family.load_splits(dataset, split_seed)
    victim = _load_fitting(model, family, splits.owner, dataset) if model else _remote(target_url, token, cls)
    attacked, cost = cls(config)(victim, splits.attacker, seed=seed, engine=_engine(accelerator, devices, num_nodes))
    if hasattr(attacked, "perturb"):  # an output perturbation acts at query time: the weights stay the victim's
        console.print(f"{name} changes outputs at query time only; the victim's weights are saved unchanged")
        attacked = attacked.model
    save_model(
        out,
        attacked,
        info={
            "attack": name,
            "cost": {"epochs": cost.epochs, "seconds": cost.seconds, "queries": cost.queries},
            "dataset": dataset,
            "split_seed": split_seed,
            **({"target_url": target_url} if target_url else {}),
        },
    )
    _save_config(
        out.with_name(out.name.removesuffix(".safetensors") + ".config.json"), f"attack {name}", config,
        preset=preset, seed=seed,
    )  # fmt: skip
    result = family.describe_attack(name, victim if model else None, attacked, splits, seed)
    console.print(
        f"{name}: {result}; cost {cost.epochs:g} epochs, {cost.seconds:.1f} s, {cost.queries} queries -> {out}"
    )


@app.command()
def verify(
    key: Annotated[Path, typer.Option(help="The owner's key (key.safetensors).")],
    model: Annotated[list[Path] | None, typer.Option(help="Suspect model(s) (repeatable).")] = None,
    target_url: TargetUrl = None,
    token: Token = None,
    calibration: Annotated[
        Path | None, typer.Option(help="Binomial keys: p0 from `ownmark calibrate` on this key (never below 1/K).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.01,
    sequential: Annotated[bool, typer.Option(help="Query triggers one by one; stop when decisive.")] = False,
    transform: Annotated[
        str | None,
        typer.Option(
            help="Input transform applied to every query: noise, blur, flip, jpeg, squeeze, median, mean, occlusion "
            "or enc-purify."
        ),
    ] = None,
    sets: Sets = None,
    blackbox: Annotated[
        bool,
        typer.Option(
            help="Schemes with a black-box test (AWEncoder): the suspect is a downstream model; chosen by itself "
            "when the suspect is an ownmark model of another family than the key's."
        ),
    ] = False,
    json_out: JsonOut = False,
    record: Record = None,
    accelerator: Accelerator = "cpu",
) -> None:
    """Verify suspect models against a key and print verdicts with p-values.

    Exit codes: 0 when every suspect got a verdict (OWNED or not: read the decision), 1 on an ownmark
    error (bad key, model, calibration or option; one line on stderr), 2 on a usage error.
    """
    _outputs((record, "--record", "file"))
    import dataclasses

    from ownmark.io import artefact_paths, load_json, load_key
    from ownmark.models import load_model
    from ownmark.verify import Calibration, check_alpha, decide
    from ownmark.verify.record import file_digest, to_json_line, verdict_record, write_records
    from ownmark.watermarks import WATERMARKS

    check_alpha(alpha)
    _inference(accelerator)
    k = load_key(key)
    key_digest = load_json(artefact_paths(key)[1])["sha256"]
    scheme = WATERMARKS.get(k.scheme)()
    cal = cal_info = None
    if calibration:
        cal = Calibration.load(calibration)
        cal.check_key(key_digest)
        cal_info = {"path": str(calibration), "sha256": file_digest(calibration), "p0": cal.p0}
    wrap = _transform(transform, _sets(sets))
    if not model and not target_url:
        raise ConfigError("name the suspects: --model PATH (repeatable) and/or --target-url URL")
    if sequential:
        _check_sequential(scheme, k)
    if target_url and transform:
        raise ConfigError("--transform wraps a model's weights; a served suspect is verified as it answers")
    rows, records = [], []
    for path in [*(model or []), *([target_url] if target_url else [])]:
        digest = None
        if isinstance(path, Path):
            loaded, manifest = load_model(path)
            suspect, digest = wrap(loaded), manifest["sha256"]
        else:
            suspect = _remote(path, token)
        details: dict[str, Any] = {}
        if sequential:
            evidence = None
            verdict = _sequential(scheme, suspect, k, cal.p0_for("binomial") if cal else None, alpha)
        else:  # white-box, or the scheme's black-box test of a downstream model (AWEncoder)
            from ownmark.api import evidence as evidence_of

            evidence = evidence_of(suspect, k, blackbox=blackbox or None)
        if evidence is not None:
            if cal is not None:
                evidence = dataclasses.replace(evidence, p0=cal.p0_for(evidence.test))
            verdict = decide(evidence, alpha)
            details = evidence.details
        rows.append((str(path), verdict))
        records.append(
            verdict_record(verdict, suspect=str(path), suspect_digest=digest, key_digest=key_digest,
                           scheme=k.scheme, calibration=cal_info, details=details)
        )  # fmt: skip
    if record is not None:
        write_records(record, records)
    if json_out:
        for r in records:
            typer.echo(to_json_line(r))
        return
    _verdict_table(rows)
    _controls_table(records)
    if record is not None:
        console.print(f"verdict records -> {record}")


def _remote(url: str | None, token: str | None, attack: Any = None) -> Any:
    """The served model at ``url`` as a query function; only black-box attacks may take one."""
    from ownmark.serve import RemoteModel

    if not url:
        raise ConfigError("name the victim: --model PATH or --target-url URL")
    if attack is not None and getattr(attack, "access", "") != "black-box":
        raise ConfigError(f"{attack.__name__} needs the victim's weights; over --target-url run a black-box attack")
    return RemoteModel(url or "", token or "")


def _transform(name: str | None, sets: dict[str, str]) -> Any:
    """A function wrapping a suspect in the named input transform (identity without one)."""
    if name is None:
        if sets:
            raise ConfigError("--set on verify configures --transform; name the transform too")
        return lambda model: model
    from ownmark.attacks import ATTACKS
    from ownmark.watermarks import apply_overrides

    cls = ATTACKS.get(name)
    if not getattr(cls, "input_transform", False):
        raise ConfigError(f"{name} is not an input transform; use `ownmark attack {name}` to change a model")
    attack = cls(apply_overrides(cls.config_class(), sets))
    return lambda model: attack(model, None, seed=0)[0]


def _check_sequential(scheme: Any, key: Any) -> None:
    if not getattr(scheme, "sequential_test", False):
        raise ConfigError(
            f"--sequential needs a test whose triggers are i.i.d. given the model with a known null rate; "
            f"{key.scheme} keys are tested by a randomization over decoy keys (or a permutation), which needs every "
            "answer: verify without --sequential"
        )


def _sequential(scheme: Any, suspect: Any, key: Any, p0: float | None, alpha: float):
    from ownmark.verify import LabelOracle, sequential_verify

    oracle = LabelOracle(suspect, num_classes=key.meta["num_classes"])
    xv, yv = key.tensors["verify_x"], key.tensors["verify_y"]
    p = p0 if p0 is not None else 1 / key.meta["num_classes"]
    return sequential_verify(lambda i: bool(oracle(xv[i : i + 1])[0] == yv[i]), len(xv), p, alpha)


def _controls_table(records: list[dict[str, Any]]) -> None:
    """The key's negative controls, where the scheme reports them (deep output watermarking): what the
    extractor reads from inputs, clean outputs and a surrogate trained on clean pairs."""
    controls = next((r["details"]["controls"] for r in records if "controls" in (r.get("details") or {})), None)
    if not controls:
        return
    table = Table("negative control", "centred NC", "success", "bit acc", "p-value")
    for name, c in controls.items():
        bits = f"{c['bit_accuracy']:.3f}" if "bit_accuracy" in c else "-"
        p = f"{c['bit_p_value']:.2e}" if "bit_p_value" in c else "-"
        table.add_row(name.replace("_", " "), f"{c['centred_nc']:.3f}", f"{c['success']:.1%}", bits, p)
    console.print(table)


def _verdict_table(rows: list[tuple[str, Any]]) -> None:
    table = Table("suspect", "statistic", "p0", "p-value", "decision", "queries", "test")
    for name, v in rows:
        colour = "red" if v.owned else "green"
        binomial = v.test.startswith("exact")
        table.add_row(
            name,
            f"{v.statistic:g}/{v.n}" if binomial else f"{v.statistic:.3g} (n={v.n})",
            f"{v.p0:.3g}" if binomial else "-",
            f"{v.p_value:.2e}",
            f"[{colour}]{v.decision}[/]",
            str(v.queries),
            v.test,
        )
    console.print(table)
    console.print(f"alpha = {rows[0][1].alpha}; null hypothesis: {rows[0][1].null_hypothesis}")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="A model of any family (an ownmark artefact).")],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Metric (repeatable; see `ownmark list metrics`). Default: the family's (accuracy; "
            "linear-probe and knn; ssim and psnr)."
        ),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="The other model of a comparison metric (agreement, cka).")
    ] = None,
    dataset: AnyData = None,
    split_seed: SplitSeed = 0,
    seed: Seed = 0,
    shots: Annotated[int | None, typer.Option(help="Labels per class for a few-shot linear probe.", min=1)] = None,
    json_out: JsonOut = False,
    threads: Threads = 1,
    accelerator: Accelerator = "cpu",
) -> None:
    """Measure a model of any family: accuracy, linear probe, k-NN, SSIM, PSNR, or agreement / CKA with a copy.

    Without --dataset it is measured on the data its manifest says it was trained on.
    """
    _pin_threads(ctx, threads)
    _inference(accelerator)
    import json

    from ownmark.families import family_of
    from ownmark.metrics import METRICS
    from ownmark.models import load_model

    suspect, manifest = load_model(model)
    family = family_of(suspect)
    trained_on = (manifest.get("info") or {}).get("dataset")  # measured on its own data unless told otherwise
    dataset = dataset or (trained_on if isinstance(trained_on, str) else None) or family.default_dataset
    splits = _fitted_splits(family, suspect, family.load_splits(dataset, split_seed), dataset)
    other = load_model(reference)[0] if reference is not None else None
    results = {}
    for name in metric or family.metrics:
        results[name] = METRICS.get(name)(suspect, splits, reference=other, seed=seed, shots=shots)
    if json_out:
        typer.echo(json.dumps({"model": str(model), "family": family.name, "dataset": dataset, **results}))
        return
    few = f", {shots} labels per class" if shots else ""
    console.print(
        f"{model} ({family.name}) on {dataset}{few}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items())
    )


def _fitted_splits(family: Any, model: Any, splits: Any, source: str) -> Any:
    """``splits`` as ``model`` takes them: an encoder's free output size lets it be probed on any labelled
    images, converted to its input shape; other families must fit the data as it is."""
    from types import SimpleNamespace

    from ownmark.data import ImageSet, to_image_shape

    shape = tuple(model.spec.input_shape)
    if family.outputs_fixed or splits.test.shape == shape:
        family.check_fits(model, splits.test, source)
        return splits

    def fit(d: ImageSet) -> ImageSet:
        return ImageSet(d.name, to_image_shape(d.x, shape), d.y, d.num_classes)

    return SimpleNamespace(owner=fit(splits.owner), attacker=fit(splits.attacker), test=fit(splits.test))


@app.command()
def calibrate(
    key: Annotated[Path, typer.Option(help="The owner's key.")],
    out: Annotated[Path, typer.Option(help="Calibration file (JSON) to write.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="The data the null models train on; default the key's family's (mnist5k; deblur)."),
    ] = None,
    split_seed: SplitSeed = 0,
    archs: Annotated[
        str, typer.Option(help="Classifier keys: comma-separated architectures of the null models.")
    ] = "cnn2,lenet",
    seeds: Annotated[
        int, typer.Option(help="Classifier keys: null models per architecture (plus one on the attacker split).")
    ] = 10,
    alpha: Annotated[float, typer.Option(help="Significance level for the false-positive count.")] = 0.01,
    accelerator: Accelerator = "cpu",
    devices: Devices = 1,
    num_nodes: Nodes = 1,
) -> None:
    """Train independent null models, measure their answers to the key, store a calibrated p0 (binomial keys).

    The null models are the bench's (one step shared with `ownmark bench run`'s null rows): for a classifier
    key --archs x --seeds and one on the attacker's data; for another family its default null models and
    their adapted variants (encoders: five encoders of other seeds, SSL methods and architectures, each also
    fine-tuned downstream; image-to-image: three independently trained targets). The file is bound to the
    key's digest (verify refuses it for another key). For keys tested exactly (randomization over decoy
    keys, permutation of secret labels, exact bit tests) it only measures the false-claim rate on them.
    """
    _outputs((out, "--out", "file"))
    from ownmark.bench.nulls import calibration_plan, train_null
    from ownmark.families.classifier import null_evidence
    from ownmark.io import artefact_paths, load_json, load_key
    from ownmark.verify import calibrate as calibrate_
    from ownmark.watermarks import WATERMARKS

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    k = load_key(key)
    plan = calibration_plan(k.scheme, dataset, split_seed, archs=archs.split(","), seeds=seeds)
    engine = _engine(accelerator, devices, num_nodes)
    models = {name: m for null in plan.null_names() for name, m in train_null(plan, null, engine).items()}
    digest = load_json(artefact_paths(key)[1])["sha256"]
    cal = calibrate_(null_evidence(WATERMARKS.get(k.scheme)(), k, models), key_digest=digest, alpha=alpha)
    cal.save(out)
    table = Table("null model", "matches", "p-value", "decision")
    for row in cal.models:
        table.add_row(
            row["name"], f"{row['k']}/{row['n']}", f"{row['p_value']:.3g}", "OWNED" if row["owned"] else "not verified"
        )
    console.print(table)
    if cal.p0 is None:
        console.print(
            f"{k.scheme} keys are tested exactly ({cal.test}): no p0 to calibrate; false-claim rate on these "
            f"{len(cal.models)} null models {cal.false_positive_rate:.2%} at alpha {alpha} -> {out}"
        )
        return
    console.print(
        f"calibrated p0 = {cal.p0:.4f} (bound on the {cal.coverage:.1%} quantile of per-model rates, never below "
        f"1/K = {cal.nominal_p0:.4g}); leave-one-out false-positive rate {cal.false_positive_rate:.2%} -> {out}"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report and artefacts.")] = Path("report"),
    seed: Seed = 0,
) -> None:
    """Train, embed FCW, attack (FTAL, pruning), verify, print verdicts, write OUT/demo.md."""
    _outputs((out, "--out", "folder"))
    from ownmark.bench.studies.demo import run_demo

    rows = run_demo(out, seed=seed, say=lambda m: console.print(f"[dim]{m}[/]"))
    table = Table("model", "role", "clean acc", "matches", "p-value", "decision", "queries")
    for r in rows:
        colour = "red" if r.verdict.owned else "green"
        table.add_row(
            r.model,
            r.role,
            f"{r.accuracy:.3f}",
            r.matches,
            f"{r.verdict.p_value:.2e}",
            f"[{colour}]{r.verdict.decision}[/]",
            str(r.verdict.queries),
        )
    console.print(table)
    console.print(f"report written to {out / 'demo.md'}")


@bench_app.command("run")
def bench_run(
    preset: Annotated[
        str | None,
        typer.Option(
            help="quick (this CPU), full (every attack), smoke, paper (GPU), awencoder, image2image, ablations, "
            "awencoder-smoke, image2image-smoke, image2image-paper (GPU)."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML or TOML matrix config (may name a preset).")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Folder for models, keys and results.sqlite.")] = None,
    executor: Annotated[str, typer.Option(help="serial, local (worker processes) or ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Worker processes (local) or CPUs for a local Ray instance.")] = 2,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray).")] = None,
    accelerator: Annotated[
        str | None,
        typer.Option(help="Run every task on this accelerator (cpu, cuda, gpu, auto); default: the config's."),
    ] = None,
    gpus: Annotated[
        int,
        typer.Option(help="GPUs the workers share: local gives each worker one in turn, Ray a share per task.", min=0),
    ] = 0,
    rehearse: Annotated[
        bool,
        typer.Option(
            help="Prove the run's paths in minutes first: the same schemes, attacks and architectures at one epoch "
            "each, the first seed and sweep value, few null models, torchvision data replaced by random images of "
            "its shape (no download). Its figures mean nothing; rows go to WORKDIR (default runs/bench/NAME-rehearsal)."
        ),
    ] = False,
) -> None:
    """Run the matrix scheme x attack x seed (every family); a re-run skips stored cells."""
    _outputs((workdir, "--workdir", "folder"))
    import dataclasses

    from ownmark.bench.executors import make_executor
    from ownmark.bench.plan import load_config, rehearsal
    from ownmark.bench.run import run_matrix

    cfg = load_config(preset, config)
    if rehearse:
        cfg = rehearsal(cfg)
    if accelerator is not None:
        from ownmark.train import Engine

        Engine(accelerator=accelerator)  # refuses an unknown one, or cuda where there is no GPU
        cfg = dataclasses.replace(cfg, accelerator=accelerator)
    if gpus and cfg.accelerator == "cpu":
        raise ConfigError("--gpus places workers on GPUs; add --accelerator cuda (or auto)")
    workdir = workdir or Path("runs") / "bench" / cfg.name
    written = run_matrix(
        cfg,
        workdir,
        executor=make_executor(executor, workers=workers, address=address, gpus=gpus),
        executor_name=executor,
        workers=workers,
        say=lambda m: console.print(f"[dim]{m}[/]"),
    )
    console.print(f"{written} rows written to {workdir / 'results.sqlite'}; `ownmark report --workdir {workdir}` next")


@app.command()
def report(
    workdir: Annotated[Path, typer.Option(help="A bench work folder (holding results.sqlite).")],
    out: Annotated[Path | None, typer.Option(help="Folder for report.md and report.html.")] = None,
) -> None:
    """Turn bench results into Markdown and a self-contained HTML page with plots."""
    _outputs((out, "--out", "folder"))
    from ownmark.bench.report import write_report

    md, html = write_report(workdir, out or workdir / "report")
    console.print(f"report written to {md} and {html}")


@bench_app.command("validity")
def bench_validity(
    preset: Annotated[
        str | None,
        typer.Option(
            help="default (classifiers: 200 keys x 24 suspects per scheme), encoder, image2image (200 keys x 15 / 13 "
            "suspects), or tiny, tiny-encoder, tiny-image2image (minutes). Default: the family's."
        ),
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Folder for cached models, rows, figure and section.")] = None,
    scheme: Annotated[list[str] | None, typer.Option(help="Run only this scheme of the preset (repeatable).")] = None,
    keys: Annotated[int | None, typer.Option(help="Key draws per scheme (default: the preset's).")] = None,
    family: Annotated[
        str | None, typer.Option(help="Model family: classifier, encoder or image2image (default: the preset's).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Markdown file whose validity section to write.")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes for the row groups (one torch thread each); rows do not depend on it.")
    ] = 1,
) -> None:
    """Do verdicts keep their promise? Null p-values over many key draws x independent suspects.

    Suspects made without the secret are verified against every key draw.

    Writes false-claim rates at 1e-3 / 1e-2 / 5e-2 with 95% bounds, and the ECDF of null p-values.

    A re-run resumes from the cached models and rows.
    """
    _outputs((workdir, "--workdir", "folder"), (out, "--out", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.studies.validity import FAMILY_PRESET, PRESETS, run_validity

    chosen = preset or FAMILY_PRESET.get(family or "classifier", "default")
    workdir = workdir or Path("runs") / "bench" / f"validity-{chosen}"
    report = run_validity(workdir, preset=preset, schemes=scheme, n_keys=keys, family=family, workers=workers)
    section = (workdir / "validity.md").read_text(encoding="utf-8")
    console.print(section)
    if report.errors:
        console.print(f"[red]{len(report.errors)} scheme(s) failed:[/] {report.errors}")
    if out is not None:
        name = f"validity-{PRESETS[chosen].family}"
        publish(out, name, section)
        console.print(f"{name} section -> {out}")


@bench_app.command("timings")
def bench_timings(
    workdir: Annotated[Path, typer.Option(help="A bench work folder (holding results.sqlite).")],
    out: Annotated[Path, typer.Option(help="Markdown file whose matrix section to write.")] = Path("BENCHMARKS.md"),
) -> None:
    """Write each attack's wall time per cell and the matrix's total time into BENCHMARKS.md."""
    _outputs((out, "--out", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.report.benchmarks import matrix_timings
    from ownmark.bench.store import ResultStore
    from ownmark.errors import MissingFileError

    if not (workdir / "results.sqlite").is_file():
        raise MissingFileError(f"no results.sqlite in {workdir}; run `ownmark bench run` first")
    store = ResultStore(workdir / "results.sqlite")
    name = workdir.name
    publish(out, f"matrix-{name}", matrix_timings(store.rows("cell"), store.rows("run"), name))
    console.print(f"timings of {workdir} written to {out}")


@bench_app.command("encoders")
def bench_encoders(
    preset: Annotated[
        str, typer.Option(help="The matrix preset awencoder (this CPU, ~30 min) or awencoder-smoke (minutes).")
    ] = "awencoder",
    out: Annotated[
        Path | None, typer.Option(help="Folder for results.json, report.md, figures and the matrix rows (matrix/).")
    ] = None,
    benchmarks: Annotated[Path | None, typer.Option(help="Markdown file whose encoder section to write.")] = None,
    executor: Annotated[str, typer.Option(help="The matrix's executor: serial, local (worker processes) or ray.")] = (
        "serial"
    ),
    workers: Annotated[int, typer.Option(help="Worker processes (local) or CPUs for a local Ray instance.")] = 2,
) -> None:
    """AWEncoder embedded, attacked and verified beside null encoders (the matrix preset), as the encoder report."""
    _outputs((out, "--out", "folder"), (benchmarks, "--benchmarks", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.studies.encoders import PRESETS, benchmarks_section, run_encoder_bench

    if preset not in PRESETS:
        raise ConfigError(f"no encoder bench preset {preset!r}; known: {', '.join(PRESETS)}")
    out = out or Path("runs") / "bench" / preset
    from ownmark.bench.executors import make_executor

    results = run_encoder_bench(
        preset, out, executor=make_executor(executor, workers=workers), say=lambda m: console.print(f"[dim]{m}[/]")
    )
    if benchmarks is not None:
        publish(benchmarks, preset, benchmarks_section(results))
    console.print(f"report written to {out / 'report.md'}")


@bench_app.command("image2image")
def bench_image2image(
    preset: Annotated[
        str,
        typer.Option(
            help="image2image, smoke (~1 min) or paper (GPU): each runs or resumes the matrix preset of its grid "
            "(image2image, image2image-smoke, image2image-paper)."
        ),
    ] = "image2image",
    out: Annotated[
        Path | None, typer.Option(help="Folder for results.json, report.md, figures and the matrix work folder.")
    ] = None,
    benchmarks: Annotated[Path | None, typer.Option(help="BENCHMARKS.md to write the section into.")] = None,
    executor: Annotated[str, typer.Option(help="The matrix's executor: serial, local (worker processes) or ray.")] = (
        "serial"
    ),
    workers: Annotated[int, typer.Option(help="Worker processes (local) or CPUs for a local Ray instance.")] = 2,
) -> None:
    """Deep output watermarking in depth: the matrix grid's rows (surrogates, perturbations, null models) beside
    fidelity, controls, the fidelity-weight sweep and latency."""
    _outputs((out, "--out", "folder"), (benchmarks, "--benchmarks", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.studies.image2image import PRESETS, render, run_bench
    from ownmark.errors import UnknownNameError

    if preset not in PRESETS:
        raise UnknownNameError(f"no image2image bench preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    out = out or Path("runs") / "bench" / "image2image"
    from ownmark.bench.executors import make_executor

    results = run_bench(
        PRESETS[preset], out, executor=make_executor(executor, workers=workers),
        say=lambda m: console.print(f"[dim]{m}[/]"),
    )  # fmt: skip
    if benchmarks is not None:
        publish(benchmarks, "image2image", render(results, benchmarks_md=True))
    console.print(f"results in {out / 'results.json'}, report in {out / 'report.md'} ({results['minutes']:.1f} min)")


@bench_app.command("perf")
def bench_perf(
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("BENCHMARKS.md"),
    repeats: Annotated[int, typer.Option(help="Timed repetitions per measurement (the median is kept).")] = 3,
    accelerator: Annotated[
        str,
        typer.Option(
            help="cpu (cnn2 on mnist5k), or cuda: the loop is timed on a CIFAR-shaped ResNet-18 in fp32 and bf16."
        ),
    ] = "cpu",
) -> None:
    """Measure the Fabric loop vs bare PyTorch, FCW embedding vs fine-tuning, and verification queries."""
    _outputs((out, "--out", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.studies.perf import run_perf, section_name
    from ownmark.train import Engine

    if accelerator == "auto":
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    Engine(accelerator=accelerator)  # refuses an unknown one, or cuda where there is no GPU
    text = run_perf(repeats=repeats, accelerator=accelerator, say=lambda m: console.print(f"[dim]{m}[/]"))
    publish(out, section_name(accelerator), text)  # a GPU run keeps the CPU's section, and the other way round
    console.print(text)


@bench_app.command("stolen")
def bench_stolen(
    out: Annotated[Path, typer.Option(help="Folder for stolen.json, stolen.md and figures.")] = Path("runs/stolen"),
    benchmarks: Annotated[Path, typer.Option(help="Markdown file whose stolenencoder section to write.")] = Path(
        "BENCHMARKS.md"
    ),
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 (each pre-trains its own target).")] = 3,
    watermark: Annotated[bool, typer.Option(help="Also steal an AWEncoder-marked encoder and verify it.")] = True,
) -> None:
    """StolenEncoder on mnist5k: TA/SA/PA/RA over seeds, queries to 0.9 TA, defense sweep, theft x watermark."""
    _outputs((out, "--out", "folder"), (benchmarks, "--benchmarks", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.report.stolen import section
    from ownmark.bench.studies.stolen import StolenBenchConfig, run_stolen_bench

    config = StolenBenchConfig(seeds=tuple(range(seeds)), watermark=watermark)
    results = run_stolen_bench(out, config, say=lambda m: console.print(f"[dim]{m}[/]"))
    publish(benchmarks, "stolenencoder", section(results, out))
    for check in results["checks"]:
        console.print(f"{'[green]holds[/]' if check['holds'] else '[red]misses[/]'} {check['name']}: {check['value']}")
    console.print(f"report written to {out / 'stolen.md'}; section stolenencoder of {benchmarks} updated")


@app.command()
def serve(
    models: Annotated[list[str], typer.Argument(help="Models to serve: PATH or NAME=PATH (ownmark artefacts).")],
    token: Annotated[
        list[str] | None, typer.Option(help="API token (repeatable).", envvar="OWNMARK_TOKEN", show_envvar=True)
    ] = None,
    tokens_file: Annotated[Path | None, typer.Option(help="File of API tokens, one per line.")] = None,
    budget: Annotated[int | None, typer.Option(help="Images each key may have answered per model.")] = None,
    defense: Annotated[str, typer.Option(help="Output defense: none, noise:STD, round:D or topk:K.")] = "none",
    kind: Annotated[str | None, typer.Option(help="labels, probs, logits, features or images.")] = None,
    rate: Annotated[float, typer.Option(help="Requests per second per key; 0: no limit.")] = 50.0,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes.")] = 16 * 2**20,
    db: Annotated[Path | None, typer.Option(help="SQLite file of per-key usage (default: in the cache).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    seed: Seed = 0,
) -> None:
    """Serve models over HTTP: API keys, per-key budgets and rate limits, output defenses; docs at /docs."""
    _outputs((db, "--db", "file"))
    from ownmark.data import cache_dir
    from ownmark.serve import ServeConfig, Service, UsageStore, create_app, load_models, read_tokens
    from ownmark.serve.app import serve_forever

    config = ServeConfig(kind=kind, budget=budget, defense=defense, seed=seed, rate=rate or None, max_body=max_body)
    keys = [*(token or []), *(read_tokens(tokens_file) if tokens_file else [])]
    db = db or cache_dir() / "serve.sqlite"
    service = Service(load_models(models), keys, config, UsageStore(db))
    console.print(f"serving {', '.join(service.models)} at http://{host}:{port} (docs: /docs); usage in {db}")
    serve_forever(create_app(service), host, port)


@bench_app.command("serve")
def bench_serve(
    out: Annotated[Path, typer.Option(help="Markdown file whose serve section to write.")] = Path("BENCHMARKS.md"),
    seconds: Annotated[float, typer.Option(help="Seconds of load per measurement.")] = 3.0,
) -> None:
    """Requests/s and p50/p99 latency of the HTTP service vs the in-process API, at several batch sizes."""
    _outputs((out, "--out", "file"))
    from ownmark.bench.report import publish
    from ownmark.bench.studies.serve import run_serve_bench

    text = run_serve_bench(seconds=seconds, say=lambda m: console.print(f"[dim]{m}[/]"))
    publish(out, "serve", text)
    console.print(text)


def main() -> None:
    """Entry point: run the app, turning OwnmarkError (and an OSError) into one red line and exit code 1."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        # standalone: typer reports usage errors itself (exit 2) and maps Ctrl-C to 130; recent typer
        # vendors click as typer._click, so click's exception classes are not ours to import
        app()
    except OwnmarkError as err:
        Console(stderr=True).print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except OSError as err:  # a disk that fills up or a folder that vanishes mid-run: one line, not a traceback
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        Console(stderr=True).print(
            f"[red]error:[/] {err.strerror or err}{where}; free space or choose another path and run again",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise SystemExit(1) from None
