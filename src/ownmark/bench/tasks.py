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
        return {"clean": _clean, "embed": _embed, "cell": _cell, "null": _null}[task.phase](task.args)
    finally:
        torch.set_num_threads(before)


def _paths(args: dict[str, Any]) -> Path:
    return Path(args["workdir"]) / "models"


def _context(args: dict[str, Any]):
    from ownmark.bench.experiment import Context

    cfg = args["config"]
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
    from ownmark.io import artefact_paths
    from ownmark.models import save_model

    path = _paths(args) / f"clean-seed{args['seed']}"
    if artefact_paths(path)[1].is_file():
        return []
    ctx, cfg = _context(args), args["config"]
    model = train_model(ctx.spec(cfg["arch"]), ctx.splits.owner, seed=args["seed"], config=_train_config(cfg["clean"]))
    save_model(path, model, info={"seed": args["seed"], "dataset": cfg["dataset"]})
    return []


def _embed(args: dict[str, Any]) -> list[Row]:
    from ownmark.io import artefact_paths, save_key
    from ownmark.models import load_model, save_model
    from ownmark.watermarks import WATERMARKS, resolve_config

    scheme, seed = args["scheme"], args["seed"]
    path = _paths(args) / f"{scheme}-seed{seed}"
    if artefact_paths(path.with_name(path.name + "-key"))[1].is_file():
        return []
    spec = args["config"]["schemes"][scheme] or {}
    cls = WATERMARKS.get(scheme)
    config = resolve_config(cls, spec.get("preset"), spec.get("set", {}))
    clean, _ = load_model(_paths(args) / f"clean-seed{seed}")
    marked, key = cls(config).embed(clean, _context(args).splits.owner, seed=seed, engine=_engine(args))
    save_model(path, marked, info={"scheme": scheme, "seed": seed})
    save_key(path.with_name(path.name + "-key"), key)  # the key last: it marks the pair complete
    return []


def _cell(args: dict[str, Any]) -> list[Row]:
    from ownmark.io import load_key
    from ownmark.models import load_model
    from ownmark.train import accuracy
    from ownmark.verify import decide
    from ownmark.watermarks import WATERMARKS

    start = time.perf_counter()
    scheme_name, seed, setting = args["scheme"], args["seed"], args["setting"]
    alpha = args["config"]["alpha"]
    ctx = _context(args)
    marked, _ = load_model(_paths(args) / f"{scheme_name}-seed{seed}")
    key = load_key(_paths(args) / f"{scheme_name}-seed{seed}-key")
    clean, _ = load_model(_paths(args) / f"clean-seed{seed}")
    scheme = WATERMARKS.get(scheme_name)()
    attacked, cost = _attack(setting, marked, ctx, seed, _engine(args))
    before, after = decide(scheme.detect(marked, key), alpha), scheme.detect(attacked, key)
    verdict = decide(after, alpha)
    row = {
        "scheme": scheme_name, "attack": setting["name"], "attack_label": args["label"],
        "strength_param": setting["param"], "strength": setting["value"], "seed": seed, "alpha": alpha,
        "acc_clean": accuracy(clean, ctx.splits.test), "acc_marked": accuracy(marked, ctx.splits.test),
        "acc_attacked": accuracy(attacked, ctx.splits.test),
        "wm_k": after.k, "wm_n": after.n, "wm_rate": after.rate, "p0": after.p0, "p_value": verdict.p_value,
        "owned": verdict.owned, "marked_k": before.statistic, "marked_p_value": before.p_value,
        "cost_epochs": cost.epochs, "cost_seconds": cost.seconds, "cost_queries": cost.queries,
        "cell_seconds": time.perf_counter() - start,
    }  # fmt: skip
    return [(_cell_id(args), "cell", row)]


def _cell_id(args: dict[str, Any]) -> str:
    from ownmark.bench.matrix import cell_id

    return cell_id(args["scheme"], args["label"], args["seed"])


def _attack(setting: dict[str, Any], marked, ctx, seed: int, engine):
    from ownmark.attacks import ATTACKS
    from ownmark.core import Cost
    from ownmark.watermarks import apply_overrides

    if setting["name"] == "none":
        return marked, Cost()
    cls = ATTACKS.get(setting["name"])
    attack = cls(apply_overrides(cls.config_class(), setting["set"]))
    return attack(marked, ctx.splits.attacker, seed=seed, engine=engine)


def _null(args: dict[str, Any]) -> list[Row]:
    from ownmark.bench.experiment import train_model
    from ownmark.io import load_key
    from ownmark.verify import decide
    from ownmark.watermarks import WATERMARKS

    cfg, ctx = args["config"], _context(args)
    data = ctx.splits.owner if args["split"] == "owner" else ctx.splits.attacker
    training = _train_config({**cfg["clean"], **cfg["null_training"]})
    model = train_model(ctx.spec(args["arch"]), data, seed=args["seed"], config=training, engine=_engine(args))
    rows = []
    for scheme_name in cfg["schemes"]:
        for seed in cfg["seeds"]:
            key = load_key(_paths(args) / f"{scheme_name}-seed{seed}-key")
            ev = WATERMARKS.get(scheme_name)().detect(model, key)
            verdict = decide(ev, cfg["alpha"])
            row = {
                "scheme": scheme_name, "seed": seed, "model": args["name"], "k": ev.k, "n": ev.n, "p0": ev.p0,
                "p_value": verdict.p_value, "owned": verdict.owned, "alpha": cfg["alpha"],
            }  # fmt: skip
            rows.append((f"null|{args['name']}|{scheme_name}|{seed}", "null", row))
    return rows
