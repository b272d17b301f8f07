"""``ownmark bench perf``: the foundation's speed figures, measured side by side in one run.

1. Training images/s of ownmark's Fabric loop against a bare PyTorch loop on the same model,
   data, batch order and optimiser (goal: ratio >= 0.95).
2. One FCW embedding epoch (triggers appended, weight masking) against one plain fine-tuning
   epoch (goal: ratio <= 1.3).
3. Sequential verification queries on the marked model against the least possible number,
   ceil(log(alpha) / log(p0)) (goal: ratio <= 1.5).
Each timing is the median of ``repeats`` runs, taken in alternation so that drifts in machine
load hit both sides alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ownmark.bench.report.benchmarks import machine
from ownmark.data import ImageSet
from ownmark.families.classifier import Context, train_model
from ownmark.train import TrainConfig, fit, key_seed, make_optimizer
from ownmark.verify import LabelOracle, min_queries, sequential_verify
from ownmark.watermarks.fcw import FCW, FCWConfig

EPOCH = TrainConfig(epochs=4, batch_size=128, lr=0.01)


def bare_fit(model: torch.nn.Module, data: ImageSet, config: TrainConfig, seed: int) -> float:
    """The plainest PyTorch loop, with the batch order ``fit`` uses; returns seconds."""
    optimizer = make_optimizer(model, config)
    model.train()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, epoch)))
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def run_perf(*, repeats: int = 3, say: Callable[[str], None] = lambda _m: None) -> str:
    """Measure and return the ``foundation`` section (written by :func:`ownmark.bench.report.publish`)."""
    ctx = Context.load("mnist5k", split_seed=0)
    data = ctx.splits.owner
    clean = train_model(ctx.spec("cnn2"), data, seed=0)
    say("clean model trained; timing loops")
    fabric_s, bare_s = [], []
    for r in range(repeats):  # alternate the two loops
        m1, m2 = ctx.spec("cnn2").build(), ctx.spec("cnn2").build()
        m2.load_state_dict(m1.state_dict())
        fabric_s.append(fit(m1, data, EPOCH, seed=r).seconds)
        bare_s.append(bare_fit(m2, data, EPOCH, seed=r))
    images = EPOCH.epochs * len(data)
    fabric_ips, bare_ips = images / statistics.median(fabric_s), images / statistics.median(bare_s)
    say("timing FCW embedding against fine-tuning")
    fcw_cfg = FCWConfig(epochs=EPOCH.epochs, lr=EPOCH.lr, milestones=())
    embed_s, tune_s = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        FCW(fcw_cfg).embed(clean, data, seed=r)
        embed_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit(copy.deepcopy(clean), data, EPOCH, seed=r)
        tune_s.append(time.perf_counter() - t0)
    marked, key = FCW().embed(clean, data, seed=0)
    oracle = LabelOracle(marked, num_classes=10)
    xv, yv = key.tensors["verify_x"], key.tensors["verify_y"]
    seq = sequential_verify(lambda i: bool(oracle(xv[i : i + 1])[0] == yv[i]), len(xv), p0=0.1, alpha=0.01)
    least = min_queries(0.01, 0.1)
    embed_med, tune_med = statistics.median(embed_s), statistics.median(tune_s)
    rows = [
        _row(
            "Fabric loop vs bare PyTorch (images/s)",
            f"{fabric_ips:,.0f} vs {bare_ips:,.0f}",
            fabric_ips / bare_ips,
            0.95,
            True,
        ),
        _row(
            "FCW embedding epoch vs plain fine-tuning epoch (s)",
            f"{embed_med:.2f} vs {tune_med:.2f}",
            embed_med / tune_med,
            1.3,
        ),
        _row(
            "sequential verification queries vs least possible", f"{seq.queries} vs {least}", seq.queries / least, 1.5
        ),
    ]
    return render(rows, repeats, len(data))


def _row(
    name: str, figures: str, ratio: float, goal: float, at_least: bool = False
) -> tuple[str, str, float, str, bool]:
    met = ratio >= goal if at_least else ratio <= goal
    return name, figures, ratio, f"{'>=' if at_least else '<='} {goal}", met


def render(rows: list[tuple[str, str, float, str, bool]], repeats: int, n: int) -> str:
    lines = [
        "## Foundation",
        "",
        "Written by `ownmark bench perf` (`make bench`); every figure below comes from one run of it.",
        "",
        f"Machine: {machine()}. Data: mnist5k owner split ({n} images), cnn2, batch 128; each timing is the "
        f"median of {repeats} alternated runs.",
        "",
        "| measurement | figures | ratio | goal | met |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {fig} | {ratio:.2f} | {goal} | {'yes' if ok else '**no**'} |"
        for name, fig, ratio, goal, ok in rows
    ]
    missed = [name for name, *_, ok in rows if not ok]
    lines += ["", f"Missed goals: {', '.join(missed)}." if missed else "All goals met in this run.", ""]
    return "\n".join(lines)
