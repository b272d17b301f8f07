"""The work of one matrix task, runnable in any process: the executor ships a Task here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ownmark.bench.matrix import Task

Row = tuple[str, str, dict[str, Any]]


def run_task(task: Task) -> list[Row]:
    """Run one task; artefacts go to the work folder, rows come back to the caller.

    Every task computes with ``config["threads"]`` torch threads whatever executor runs it:
    CPU kernels sum in an order that depends on the thread count, so a fixed count is what
    makes serial, local-process and Ray runs give bit-identical rows.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(task.args["config"]["threads"])
    try:
        phases = {"clean": _clean, "calib": _calib, "embed": _embed, "cell": _cell, "null": _null}
        return phases[task.phase](task.args)
    finally:
        torch.set_num_threads(before)


def _paths(args: dict[str, Any]) -> Path:
    return Path(args["workdir"]) / "models"


def _context(args: dict[str, Any], family: str = "classifier"):
    """The data a family's task works on: ``.splits`` with owner, attacker and test parts."""
    from ownmark.bench.experiment import Context

    cfg = args["config"]
    if family == "image2image":
        from types import SimpleNamespace

        from ownmark.bench.families import i2i_splits

        return SimpleNamespace(splits=i2i_splits(cfg["image2image"], cfg["split_seed"]))
    return Context.load(cfg["dataset"], cfg["split_seed"])


def _engine(args: dict[str, Any]):
    from ownmark.train import Engine

    return Engine(accelerator=args["config"]["accelerator"])


def _train_config(overrides: dict[str, Any]):
    from ownmark.bench.experiment import CLEAN_TRAINING
    from ownmark.watermarks import apply_overrides

    return apply_overrides(CLEAN_TRAINING, overrides)


def _clean(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.experiment import train_model
    from ownmark.bench.families import clean_name, encoder_settings, i2i_settings, train_encoder, train_i2i
    from ownmark.io import artefact_paths
    from ownmark.models import save_model

    family = args.get("family", "classifier")
    path = _paths(args) / clean_name(family, args["seed"])
    if artefact_paths(path)[1].is_file():
        return []
    ctx, cfg = _context(args, family), args["config"]
    if family == "image2image":
        arch = i2i_settings(cfg["image2image"])["arch"]
        model = train_i2i(ctx.splits, cfg["image2image"], arch, args["seed"], "owner")
    elif family == "encoder":
        enc = encoder_settings(cfg["encoder"])
        method = enc["ssl"].get("method", "simclr")
        model = train_encoder(ctx, cfg["encoder"], enc["arch"], method, args["seed"], "owner", _engine(args))
    else:
        training = _train_config(cfg["clean"])
        model = train_model(ctx.spec(cfg["arch"]), ctx.splits.owner, seed=args["seed"], config=training)
    from ownmark.bench.families import utility

    info = {"seed": args["seed"], "dataset": cfg["dataset"], "utility": utility(family, model.eval(), ctx)}
    save_model(path, model, info=info)
    return []


def _null_model(args: dict[str, Any]):
    """The null model of ``args["null"]``: trained here, or loaded if a calibration task stored it."""
    from ownmark.bench.experiment import train_model
    from ownmark.bench.families import NullSpec, train_encoder, train_i2i

    cfg, null = args["config"], NullSpec(**args["null"])
    ctx = _context(args, null.family)
    if null.family == "image2image":
        return train_i2i(ctx.splits, cfg["image2image"], null.arch, null.seed, null.split)
    if null.family == "encoder":
        return train_encoder(ctx, cfg["encoder"], null.arch, null.method, null.seed, null.split, _engine(args))
    data = ctx.splits.owner if null.split == "owner" else ctx.splits.attacker
    training = _train_config({**cfg["clean"], **cfg["null_training"]})
    return train_model(ctx.spec(null.arch), data, seed=null.seed, config=training, engine=_engine(args))


def _calib(args: dict[str, Any]) -> list[Row]:
    """Train one calibration null encoder (the margin of encoder keys is set on these)."""
    from ownmark.io import artefact_paths
    from ownmark.models import save_model

    path = _paths(args) / args["null"]["name"]
    if not artefact_paths(path)[1].is_file():
        save_model(path, _null_model(args), info=dict(args["null"]))
    return []


def _embed(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.families import (
        calibration_nulls,
        clean_name,
        encoder_settings,
        scheme_class,
        scheme_family,
        utility,
    )
    from ownmark.io import artefact_paths, save_key
    from ownmark.models import load_model, save_model
    from ownmark.watermarks import resolve_config

    scheme, seed, cfg = args["scheme"], args["seed"], args["config"]
    path = _paths(args) / f"{scheme}-seed{seed}"
    if artefact_paths(path.with_name(path.name + "-key"))[1].is_file():
        return []
    spec = cfg["schemes"][scheme] or {}
    cls, family = scheme_class(cfg["schemes"], scheme), scheme_family(cfg["schemes"], scheme)
    config = resolve_config(cls, spec.get("preset"), spec.get("set", {}))
    clean, _ = load_model(_paths(args) / clean_name(family, seed))
    ctx = _context(args, family)
    marked, key = cls(config).embed(clean, ctx.splits.owner, seed=seed, engine=_engine(args))
    if family == "encoder":  # the calibrated verdict needs the null margin before any detect
        nulls = {n.name: load_model(_paths(args) / n.name)[0] for n in calibration_nulls(cfg["encoder"])}
        lrs = tuple(encoder_settings(cfg["encoder"])["adapt_lrs"])  # the null rows' rates set the margin too
        key = cls(config).calibrate(key, nulls, probe=(ctx.splits.attacker, ctx.splits.test), adapt_lrs=lrs)
    info = {"scheme": scheme, "seed": seed, "utility": utility(family, marked.eval(), ctx)}
    save_model(path, marked, info=info)
    save_key(path.with_name(path.name + "-key"), key)  # the key last: it marks the pair complete
    return []


def _cell(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.families import clean_name, scheme_class, scheme_family, utility
    from ownmark.io import load_key
    from ownmark.models import load_model
    from ownmark.verify import decide

    start = time.perf_counter()
    scheme_name, seed, setting = args["scheme"], args["seed"], args["setting"]
    schemes, alpha = args["config"]["schemes"], args["config"]["alpha"]
    family = scheme_family(schemes, scheme_name)
    ctx = _context(args, family)
    marked, marked_manifest = load_model(_paths(args) / f"{scheme_name}-seed{seed}")
    key = load_key(_paths(args) / f"{scheme_name}-seed{seed}-key")
    clean, clean_manifest = load_model(_paths(args) / clean_name(family, seed))
    scheme = scheme_class(schemes, scheme_name)()
    attacked, cost = _attack(setting, marked, ctx, seed, _engine(args))
    before, after = decide(scheme.detect(marked, key), alpha), scheme.detect(attacked, key)
    verdict = decide(after, alpha)
    row = {
        "scheme": scheme_name, "family": family, "attack": setting["name"], "attack_label": args["label"],
        "strength_param": setting["param"], "strength": setting["value"], "seed": seed, "alpha": alpha,
        "acc_clean": _stored_utility(clean_manifest, family, clean, ctx),
        "acc_marked": _stored_utility(marked_manifest, family, marked, ctx),
        "acc_attacked": utility(family, attacked, ctx),
        "wm_k": after.k, "wm_n": after.n, "wm_rate": after.rate, "p0": after.p0, "p_value": verdict.p_value,
        "owned": verdict.owned, "marked_k": before.statistic, "marked_p_value": before.p_value,
        "cost_epochs": cost.epochs, "cost_seconds": cost.seconds, "cost_queries": cost.queries,
        "cell_seconds": time.perf_counter() - start,
    }  # fmt: skip
    return [(_cell_id(args), "cell", row)]


def _stored_utility(manifest: dict[str, Any], family: str, model, ctx) -> float:
    """The utility measured when the artefact was saved (the same value), or measured now for
    artefacts of older runs that did not store it."""
    from ownmark.bench.families import utility

    stored = manifest.get("info", {}).get("utility")
    return float(stored) if stored is not None else utility(family, model, ctx)


def _cell_id(args: dict[str, Any]) -> str:
    from ownmark.bench.matrix import cell_id

    return cell_id(args["scheme"], args["label"], args["seed"])


def _attack(setting: dict[str, Any], marked, ctx, seed: int, engine):
    from ownmark.attacks import ATTACKS, Chain
    from ownmark.core import Cost
    from ownmark.watermarks import apply_overrides

    if setting["name"] == "none":
        return marked, Cost()
    stages = []
    for stage in [setting, *setting.get("then", [])]:
        cls = ATTACKS.get(stage["name"])
        stages.append(cls(apply_overrides(cls.config_class(), stage["set"])))
    attack = stages[0] if len(stages) == 1 else Chain(stages)
    return attack(marked, ctx.splits.attacker, seed=seed, engine=engine)


def _null(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.families import scheme_class, scheme_family
    from ownmark.io import load_key
    from ownmark.verify import decide

    cfg, null = args["config"], args["null"]
    models = {null["name"]: _null_model(args)}
    if null["family"] == "encoder":  # adapted to the downstream task as a suspect would be
        from ownmark.attacks.encoder_attacks import finetuned_variants
        from ownmark.bench.families import encoder_settings

        lrs, data = encoder_settings(cfg["encoder"])["adapt_lrs"], _context(args, "encoder").splits.attacker
        models |= finetuned_variants(null["name"], models[null["name"]], data, lrs, seed=null["seed"])
    rows = []
    for scheme_name in cfg["schemes"]:
        if scheme_family(cfg["schemes"], scheme_name) != null["family"]:
            continue
        for seed in cfg["seeds"]:
            key = load_key(_paths(args) / f"{scheme_name}-seed{seed}-key")
            for name, model in models.items():
                ev = scheme_class(cfg["schemes"], scheme_name)().detect(model, key)
                verdict = decide(ev, cfg["alpha"])
                row = {
                    "scheme": scheme_name, "seed": seed, "model": name, "k": ev.k, "n": ev.n, "p0": ev.p0,
                    "p_value": verdict.p_value, "owned": verdict.owned, "alpha": cfg["alpha"],
                }  # fmt: skip
                rows.append((f"null|{name}|{scheme_name}|{seed}", "null", row))
    return rows
