"""The StolenEncoder bench: steal SimCLR encoders through their API on mnist5k, over seeds.

One run measures, for each seed, a target encoder pre-trained on the owner's part (TA), the
encoder stolen with the paper's augmentation term (lambda 20) and without it (lambda 0), an
encoder pre-trained on the same surrogate images with the same compute (PA), a random encoder
(RA) and raw pixels, each with a full and a few-shot linear probe on the attacker's labelled part;
then the queries needed to reach SA >= 0.9 TA, a sweep of the API-side defenses (utility left to
legitimate users against SA under the defense), and the theft of an AWEncoder-marked encoder with
white-box and black-box verification of the stolen copy. It writes ``stolen.json``,
``stolen.md`` with its figures; the report package writes the ``stolenencoder`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ownmark.attacks.encoder_eval import (
    DefendedEncoder,
    Probes,
    evaluate_theft,
    pixels,
    probe,
    surrogate_pretrained,
)
from ownmark.attacks.stolen_encoder import StolenEncoder, StolenEncoderConfig, surrogate_images
from ownmark.bench.report.benchmarks import machine
from ownmark.data import Splits, load_dataset, make_splits
from ownmark.defenses import parse_defense
from ownmark.errors import ConfigError
from ownmark.io import atomic_write_text, save_json
from ownmark.models import ModelSpec, encode
from ownmark.train import cpu_seeded, key_seed
from ownmark.train.ssl import SSLConfig, pretrain

log = logging.getLogger(__name__)
TARGET_STREAM, NULL_STREAM = 0x54415247, 0x4E554C4C


@dataclass(frozen=True)
class StolenBenchConfig:
    """What the bench runs; the defaults take ~10 minutes on a 2-core CPU.

    Args:
        pretrain_epochs: SimCLR epochs of each target on the owner's part (the pre-training set).
        budgets: smaller query budgets for the queries-to-0.9-TA curve (first seed), each trained
            for as many optimiser steps as the main budget.
        defenses: API defenses swept on ``defense_seeds``; noise is relative to each answer's RMS.
        watermark: steal an AWEncoder-marked encoder (first seed) and verify the stolen copy.
        watermark_overrides: ``(name, value)`` changes to the default AWEncoderConfig.
        nulls: independent encoders (other seeds, ``null_epochs`` of SimCLR) calibrating AWEncoder.
    """

    dataset: str = "mnist5k"
    split_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    arch: str = "conv4"
    dim: int = 128
    pretrain_epochs: int = 20
    attack: StolenEncoderConfig = StolenEncoderConfig()
    budgets: tuple[int, ...] = (25, 50, 125)
    defenses: tuple[str, ...] = (
        "noise:0.1", "noise:0.25", "noise:0.5", "noise:1", "round:2", "round:1", "round:0", "topk:64", "topk:16",
        "topk:4",
    )  # fmt: skip
    defense_seeds: tuple[int, ...] = (0,)
    watermark: bool = True
    watermark_overrides: tuple[tuple[str, Any], ...] = ()
    nulls: int = 5
    null_epochs: int = 5
    shots: int = 10
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if not self.seeds or not self.defense_seeds or not set(self.defense_seeds) <= set(self.seeds):
            raise ConfigError(f"StolenBenchConfig needs seeds and defense_seeds within them, got {self.seeds}, "
                              f"{self.defense_seeds}")  # fmt: skip
        if any(not isinstance(b, int) or b < 1 for b in self.budgets):
            raise ConfigError(f"StolenBenchConfig.budgets must be positive ints, got {self.budgets!r}")
        for spec in self.defenses:
            parse_defense(spec)  # a bad spec fails here, before hours of training


@dataclass
class Target:
    """A pre-trained target encoder, its probes and the cost of making it."""

    encoder: torch.nn.Module
    seconds: float
    probes: tuple[Probes, list] = field(repr=False)


def pretrain_target(cfg: StolenBenchConfig, splits: Splits, seed: int, epochs: int | None = None) -> Target:
    """A ``cfg.arch`` encoder pre-trained with SimCLR on the owner's part, probed downstream."""
    c, size, _ = splits.owner.shape
    with cpu_seeded(key_seed(seed, TARGET_STREAM)):
        encoder = ModelSpec(cfg.arch, c, cfg.dim, size, family="encoder").build()
    result = pretrain(encoder, splits.owner, SSLConfig(epochs=epochs or cfg.pretrain_epochs), seed=seed)
    return Target(encoder.eval(), result.seconds, probe(encoder, splits.attacker, splits.test, seed=seed,
                                                        shots=cfg.shots))  # fmt: skip


def _steal(cfg: StolenEncoderConfig, victim: Any, splits: Splits, seed: int):
    return StolenEncoder(cfg)(victim, splits.attacker, seed=seed)


def _p(probes: Probes) -> dict[str, float]:
    return {"full": probes.full, "few": probes.few}


def run_seed(cfg: StolenBenchConfig, splits: Splits, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
    """TA, SA (lambda 20 and 0), PA, RA, pixels, agreement, CKA and cost for one seed."""
    t0 = time.perf_counter()
    target = pretrain_target(cfg, splits, seed)
    say(f"seed {seed}: target pre-trained in {target.seconds:.0f} s, TA {target.probes[0]}")
    stolen, cost = _steal(cfg.attack, target.encoder, splits, seed)
    ev = evaluate_theft(target.encoder, stolen, splits.attacker, splits.test, seed=seed, cost=cost,
                        pretrain_size=len(splits.owner), pretrain_seconds=target.seconds, shots=cfg.shots,
                        target_probes=target.probes)  # fmt: skip
    plain, plain_cost = _steal(dataclasses.replace(cfg.attack, lambda_value=0.0), target.encoder, splits, seed)
    sa0, _ = probe(plain, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
    # PA: SimCLR on the very images the attack queried, with as many image passes as the attack
    # (two views per image and epoch, the attack's clean image and one view)
    queried = surrogate_images(splits.attacker, cost.queries, seed)
    pa_encoder, pa_seconds = surrogate_pretrained(stolen.spec, queried, seed=seed,
                                                  config=SSLConfig(epochs=cfg.attack.epochs))  # fmt: skip
    pa, _ = probe(pa_encoder, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
    say(f"seed {seed}: SA {ev.sa}, SA(lambda 0) {sa0}, PA {pa}, RA {ev.ra}")
    row = ev.as_dict()
    row.update(
        seed=seed, sa_lambda0=_p(sa0), pa=_p(pa), pa_seconds=pa_seconds, attack_seconds=cost.seconds,
        attack_seconds_lambda0=plain_cost.seconds, pretrain_seconds=target.seconds,
        pass_fraction=cost.details["images_trained"] / (2 * len(splits.owner) * cfg.pretrain_epochs),
        seconds=time.perf_counter() - t0,
    )  # fmt: skip
    return {"row": row, "target": target, "stolen": stolen}


def budget_curve(cfg: StolenBenchConfig, splits: Splits, target: Target, seed: int) -> list[dict[str, Any]]:
    """SA at each smaller budget, trained for the main budget's number of optimiser steps."""
    main = cfg.attack
    steps = math.ceil(main.budget / main.batch_size) * main.epochs
    rows = []
    for budget in sorted(b for b in cfg.budgets if b < main.budget):
        epochs = max(1, round(steps / math.ceil(budget / main.batch_size)))
        stolen, cost = _steal(dataclasses.replace(main, budget=budget, epochs=epochs), target.encoder, splits, seed)
        sa, _ = probe(stolen, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
        rows.append({"budget": budget, "epochs": epochs, "query_fraction": budget / len(splits.owner),
                     "sa": _p(sa), "seconds": cost.seconds})  # fmt: skip
    return rows


def defense_sweep(cfg: StolenBenchConfig, splits: Splits, target: Target, seed: int) -> list[dict[str, Any]]:
    """Per defense: the legitimate users' probes on defended features, and SA when stolen through them."""
    from ownmark.serve.api import ModelAPI

    rows = []
    for spec in ("none", *cfg.defenses):
        defense = parse_defense(spec)
        legit, _ = probe(DefendedEncoder(target.encoder, defense, seed), splits.attacker, splits.test, seed=seed,
                         shots=cfg.shots)  # fmt: skip
        api = ModelAPI(target.encoder, kind="features", budget=cfg.attack.budget, defense=defense, seed=seed)
        stolen, cost = _steal(dataclasses.replace(cfg.attack, arch=cfg.arch), api, splits, seed)
        sa, _ = probe(stolen, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
        rows.append({"defense": spec, "seed": seed, "legit": _p(legit), "sa": _p(sa), "queries": api.queries})
    return rows


def theft_of_marked(cfg: StolenBenchConfig, splits: Splits, target: Target, clean_stolen: Any, seed: int) -> dict:
    """Mark the target with AWEncoder, steal it, verify the stolen copy white-box and black-box."""
    from ownmark.verify import decide
    from ownmark.watermarks import WATERMARKS

    scheme_cls = WATERMARKS.get("awencoder")
    scheme = scheme_cls(dataclasses.replace(scheme_cls.config_class(), **dict(cfg.watermark_overrides)))
    t0 = time.perf_counter()
    marked, key = scheme.embed(copy.deepcopy(target.encoder), splits.owner, seed=seed)
    nulls = {f"null{i}": pretrain_target(cfg, splits, key_seed(seed, NULL_STREAM, i), cfg.null_epochs).encoder
             for i in range(cfg.nulls)}  # fmt: skip
    key = scheme.calibrate(key, nulls, probe=(splits.attacker, splits.test))
    stolen, cost = _steal(cfg.attack, marked, splits, seed)
    out: dict[str, Any] = {
        "queries": cost.queries,
        "tau": key.meta.get("tau"),
        "p0_blackbox": key.meta.get("p0_blackbox"),
    }
    marked_probes, _ = probe(marked, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
    stolen_probes, _ = probe(stolen, splits.attacker, splits.test, seed=seed, shots=cfg.shots)
    out["utility"] = {"marked": _p(marked_probes), "stolen": _p(stolen_probes)}
    from ownmark.train.probe import linear_probe

    for name, enc in (("marked", marked), ("stolen from marked", stolen), ("stolen from unmarked", clean_stolen)):
        white = scheme.detect(enc, key)
        black = scheme.detect_blackbox(linear_probe(enc, splits.attacker, splits.test, seed=seed).classifier, key)
        out[name] = {
            "white_box": {"effect": white.details["effect"], "p_value": white.p_value,
                          "owned": decide(white, cfg.alpha).owned},
            "black_box": {"flip_rate": black.details["flip_rate"], "p_value": decide(black, cfg.alpha).p_value,
                          "owned": decide(black, cfg.alpha).owned},
        }  # fmt: skip
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_stolen_bench(
    out: str | Path,
    config: StolenBenchConfig = StolenBenchConfig(),
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the bench; write ``stolen.json`` and ``stolen.md`` (+ figures) under ``out``; return the results
    (:func:`ownmark.bench.report.stolen.section` renders the ``stolenencoder`` section of BENCHMARKS.md)."""
    from ownmark.bench.report.stolen import checks, markdown

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    splits = make_splits(load_dataset(config.dataset), seed=config.split_seed)
    runs = {seed: run_seed(config, splits, seed, say) for seed in config.seeds}
    first = config.seeds[0]
    results: dict[str, Any] = {
        "config": dataclasses.asdict(config), "machine": machine(), "owner_size": len(splits.owner),
        "pixels": {s: _p(pixels(splits.attacker, splits.test, seed=s, shots=config.shots)) for s in config.seeds},
        "seeds": [runs[s]["row"] for s in config.seeds],
    }  # fmt: skip
    say("budget curve")
    results["budget_curve"] = budget_curve(config, splits, runs[first]["target"], first)
    say("defense sweep")
    results["defenses"] = [r for s in config.defense_seeds for r in defense_sweep(config, splits, runs[s]["target"], s)]
    if config.watermark:
        say("theft of an AWEncoder-marked encoder")
        results["watermark"] = theft_of_marked(config, splits, runs[first]["target"], runs[first]["stolen"], first)
    feats = encode(runs[first]["target"].encoder, splits.test.x)
    results["feature_scale"] = {"rms": float(feats.pow(2).mean().sqrt()), "spread": float(feats.std(0).mean())}
    results["checks"] = checks(results)
    results["seconds"] = time.perf_counter() - start
    save_json(out / "stolen.json", results)
    atomic_write_text(out / "stolen.md", markdown(results, out))
    return results
