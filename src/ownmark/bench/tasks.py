"""The work of one matrix task, runnable in any process: the executor ships a Task here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ownmark.bench.plan import Task

Row = tuple[str, str, dict[str, Any]]


def run_task(task: Task) -> list[Row]:
    """Run one task; artefacts go to the work folder, rows come back to the caller.

    ``task.args["config"]`` is the run's :class:`~ownmark.bench.plan.MatrixConfig` itself, checked once
    when it was built (families read their typed settings from it, nothing is re-parsed here). Every task
    computes with ``config.threads`` torch threads whatever executor runs it: CPU kernels sum in an order
    that depends on the thread count, so a fixed count is what makes serial, local-process and Ray runs
    give bit-identical rows.
    """
    import torch

    from ownmark.models.encoder import engine_device, inference_on

    before = torch.get_num_threads()
    torch.set_num_threads(task.args["config"].threads)
    try:
        phases = {"clean": _clean, "calib": _calib, "embed": _embed, "cell": _cell, "null": _null}
        with inference_on(engine_device(task.args["config"].accelerator)):  # verification queries there too
            return phases[task.phase](task.args)
    finally:
        torch.set_num_threads(before)


def _paths(args: dict[str, Any]) -> Path:
    return Path(args["workdir"]) / "models"


def _family(name: str):
    from ownmark.families import FAMILIES

    return FAMILIES.get(name)


def _engine(args: dict[str, Any]):
    from ownmark.train import Engine

    return Engine(accelerator=args["config"].accelerator)


def _clean(args: dict[str, Any]) -> list[Row]:
    from ownmark.io import artefact_paths
    from ownmark.models import save_model

    family, cfg = _family(args.get("family", "classifier")), args["config"]
    path = _paths(args) / family.clean_name(args["seed"])
    if artefact_paths(path)[1].is_file():
        return []
    data = family.load(cfg)
    model = family.train(data, cfg, family.clean_spec(cfg, args["seed"]), _engine(args)).eval()
    info = {"seed": args["seed"], "dataset": cfg.dataset, "utility": family.utility(model, data.splits)}
    save_model(path, model, info=info)
    return []


def _null_model(args: dict[str, Any]):
    """The null model of ``args["null"]``, trained here."""
    from ownmark.families import NullSpec

    null = NullSpec(**args["null"])
    family = _family(null.family)
    return family.train(family.load(args["config"]), args["config"], null, _engine(args))


def _calib(args: dict[str, Any]) -> list[Row]:
    """Train one model a family's keys are calibrated on (encoders: the null margin is set on these)."""
    from ownmark.io import artefact_paths
    from ownmark.models import save_model

    path = _paths(args) / args["null"]["name"]
    if not artefact_paths(path)[1].is_file():
        save_model(path, _null_model(args), info=dict(args["null"]))
    return []


def _embed(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.plan import scheme_class, scheme_family
    from ownmark.io import artefact_paths, save_key
    from ownmark.models import load_model, save_model
    from ownmark.verify import decide

    scheme, seed, cfg = args["scheme"], args["seed"], args["config"]
    path = _paths(args) / f"{scheme}-seed{seed}"
    if artefact_paths(path.with_name(path.name + "-key"))[1].is_file():
        return []
    cls, family = scheme_class(cfg.schemes, scheme), _family(scheme_family(cfg.schemes, scheme))
    config = cfg.scheme_config(scheme)  # resolved once, when the config was built
    clean, _ = load_model(_paths(args) / family.clean_name(seed))
    data = family.load(cfg)
    marked, key = cls(config).embed(clean, data.splits.owner, seed=seed, engine=_engine(args))
    key = family.prepare_key(cls(config), key, data, cfg, lambda name: load_model(_paths(args) / name)[0])
    info = {"scheme": scheme, "seed": seed, "utility": family.utility(marked.eval(), data.splits)}
    save_model(path, marked, info=info)
    # the marked model's own verdict, which every cell of this (scheme, seed) reports beside the attacked
    # one: measured once here, on the model as saved, instead of once per cell
    verdict = decide(scheme_class(cfg.schemes, scheme)().detect(load_model(path)[0], key), cfg.alpha)
    save_model(path, marked, info=info | {"marked_statistic": verdict.statistic, "marked_p_value": verdict.p_value})
    save_key(path.with_name(path.name + "-key"), key)  # the key last: it marks the pair complete
    return []


def _cell(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.plan import scheme_class, scheme_family
    from ownmark.io import load_key
    from ownmark.models import load_model
    from ownmark.verify import decide

    start = time.perf_counter()
    scheme_name, seed, setting = args["scheme"], args["seed"], args["setting"]
    schemes, alpha = args["config"].schemes, args["config"].alpha
    family = _family(scheme_family(schemes, scheme_name))
    ctx = family.load(args["config"])
    marked, marked_manifest = load_model(_paths(args) / f"{scheme_name}-seed{seed}")
    key = load_key(_paths(args) / f"{scheme_name}-seed{seed}-key")
    clean, clean_manifest = load_model(_paths(args) / family.clean_name(seed))
    scheme = scheme_class(schemes, scheme_name)()
    stages = args["config"].attack_stages[(scheme_name, args["label"])]  # resolved once, when the config was built
    attacked, cost = _attack(stages, marked, ctx, seed, _engine(args))
    before, after = _marked_verdict(marked_manifest, scheme, marked, key, alpha), scheme.detect(attacked, key)
    suspect = family.prepare_suspect(attacked, ctx, args["config"])
    verdict = decide(after, alpha)
    row = {
        "scheme": scheme_name, "family": family.name, "attack": setting["name"], "attack_label": args["label"],
        "strength_param": setting["param"], "strength": setting["value"], "seed": seed, "alpha": alpha,
        "acc_clean": _stored_utility(clean_manifest, family, clean, ctx),
        "acc_marked": _stored_utility(marked_manifest, family, marked, ctx),
        "acc_attacked": family.utility(attacked, ctx.splits),
        "wm_k": after.k, "wm_n": after.n, "wm_rate": after.rate, "p0": after.p0, "p_value": verdict.p_value,
        "owned": verdict.owned, "marked_k": before[0], "marked_p_value": before[1],
        "cost_epochs": cost.epochs, "cost_seconds": cost.seconds, "cost_queries": cost.queries,
        # a chain of attacks (``then``) is its own attack in reports, whatever its label says
        "attack_chain": "+".join(name for name, _ in stages) if len(stages) > 1 else None,
    }  # fmt: skip
    row |= family.extra_evidence(scheme, key, after, suspect, args["config"], alpha)
    row["cell_seconds"] = time.perf_counter() - start
    return [(_cell_id(args), "cell", row)]


def _stored_utility(manifest: dict[str, Any], family, model, ctx) -> float:
    """The utility measured when the artefact was saved (the same value), or measured now for
    artefacts of older runs that did not store it."""
    stored = manifest.get("info", {}).get("utility")
    return float(stored) if stored is not None else family.utility(model, ctx.splits)


def _marked_verdict(manifest: dict[str, Any], scheme, marked, key, alpha: float) -> tuple[float, float]:
    """The marked model's statistic and p-value as measured when it was saved, or measured now for
    artefacts of older runs that did not store them."""
    info = manifest.get("info", {})
    if "marked_p_value" in info:
        return info["marked_statistic"], info["marked_p_value"]
    from ownmark.verify import decide

    verdict = decide(scheme.detect(marked, key), alpha)
    return verdict.statistic, verdict.p_value


def _cell_id(args: dict[str, Any]) -> str:
    from ownmark.bench.plan import cell_id

    return cell_id(args["scheme"], args["label"], args["seed"])


def _attack(stages: tuple[tuple[str, Any], ...], marked, ctx, seed: int, engine):
    """Run an attack cell's stages (name, resolved config) in order; no stage: the marked model itself."""
    from ownmark.attacks import ATTACKS, Chain
    from ownmark.core import Cost

    if not stages:
        return marked, Cost()
    units = [ATTACKS.get(name)(config) for name, config in stages]
    attack = units[0] if len(units) == 1 else Chain(units)
    return attack(marked, ctx.splits.attacker, seed=seed, engine=engine)


def _null(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.nulls import train_null
    from ownmark.bench.plan import scheme_class, scheme_family
    from ownmark.families import NullSpec
    from ownmark.io import load_key
    from ownmark.verify import decide

    cfg, null = args["config"], args["null"]
    family = _family(null["family"])
    data = family.load(cfg)
    # with its variants adapted as a suspect in the wild would be (encoders: fine-tuned downstream)
    models = train_null(cfg, NullSpec(**null), _engine(args), data)
    keys = [
        (scheme_name, seed, scheme_class(cfg.schemes, scheme_name)(),
         load_key(_paths(args) / f"{scheme_name}-seed{seed}-key"))
        for scheme_name in cfg.schemes if scheme_family(cfg.schemes, scheme_name) == null["family"]
        for seed in cfg.seeds
    ]  # fmt: skip
    rows = []
    for name, model in models.items():
        suspect = family.prepare_suspect(model, data, cfg)  # once per model, shared by every key
        for scheme_name, seed, scheme, key in keys:
            ev = scheme.detect(model, key)
            verdict = decide(ev, cfg.alpha)
            row = {
                "scheme": scheme_name, "seed": seed, "model": name, "k": ev.k, "n": ev.n, "p0": ev.p0,
                "p_value": verdict.p_value, "owned": verdict.owned, "alpha": cfg.alpha,
                **family.extra_evidence(scheme, key, ev, suspect, cfg, cfg.alpha),
            }  # fmt: skip
            rows.append((f"null|{name}|{scheme_name}|{seed}", "null", row))
    return rows
