"""``ownmark bench perf``: the foundation's speed figures, measured side by side in one run.

1. Training images/s of ownmark's Fabric loop against a bare PyTorch loop on the same model,
   data, batch order and optimiser (goal: ratio >= 0.95). On the CPU: cnn2 on mnist5k. On an
   accelerator (``--accelerator cuda``): a CIFAR-shaped ResNet-18 (``tv:resnet18:cifar``, 3x32x32,
   batch 256) on synthetic images, with the bare loop's data resident on the device, in fp32 and in
   bf16 autocast (goal: each >= 0.95, and bf16 faster than fp32).
2. One FCW embedding epoch (triggers appended, weight masking) against one plain fine-tuning
   epoch (goal: ratio <= 1.3).
3. Sequential verification queries on the marked model against the least possible number,
   ceil(log(alpha) / log(p0)) (goal: ratio <= 1.5).
Each timing is the median of ``repeats`` runs, taken in alternation so that drifts in machine
load hit both sides alike.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ownmark.bench.report.benchmarks import machine
from ownmark.data import ImageSet
from ownmark.families.classifier import Context, train_model
from ownmark.models import ModelSpec
from ownmark.models.layout import cpu_channels_last
from ownmark.train import Engine, TrainConfig, fit, key_seed, make_optimizer
from ownmark.verify import LabelOracle, min_queries, sequential_verify
from ownmark.watermarks.fcw import FCW, FCWConfig

EPOCH = TrainConfig(epochs=4, batch_size=128, lr=0.01)
# the accelerator's loop measurement: a CIFAR-shaped ResNet-18 as the papers train it
GPU_EPOCH = TrainConfig(epochs=3, batch_size=256, lr=0.1)
GPU_ARCH, GPU_IMAGES = "tv:resnet18:cifar", 25_600


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_fit(
    model: torch.nn.Module, data: ImageSet, config: TrainConfig, seed: int, *, device: str = "cpu", bf16: bool = False
) -> float:
    """The plainest PyTorch loop, with the batch order ``fit`` uses, its data resident on ``device``
    (``bf16``: autocast to bfloat16); returns seconds, the copy to the device included."""
    dev = torch.device(device)
    _sync(dev)
    start = time.perf_counter()
    model.to(dev)
    x, y = data.x.to(dev), data.y.to(dev)
    optimizer = make_optimizer(model, config)
    model.train()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with cpu_channels_last(model, device=dev):  # the layout fit trains in: what is timed is the loop
        for epoch in range(config.epochs):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, epoch))).to(dev)
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                with autocast:
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    _sync(dev)
    seconds = time.perf_counter() - start
    model.cpu()
    return seconds


def fabric_fit(model: torch.nn.Module, data: ImageSet, config: TrainConfig, seed: int, engine: Engine) -> float:
    """ownmark's loop (:func:`ownmark.train.fit`) timed the way :func:`bare_fit` is; returns seconds."""
    start = time.perf_counter()
    fit(model, data, config, seed=seed, engine=engine)  # returns the model on the CPU: the device is done
    return time.perf_counter() - start


def loop_rates(
    spec: ModelSpec, data: ImageSet, config: TrainConfig, *, accelerator: str, precision: str, repeats: int
) -> tuple[float, float]:
    """Images/s of ``fit`` and of :func:`bare_fit` on the same initial weights, data and batch order
    (medians of ``repeats`` alternated runs)."""
    engine = Engine(accelerator=accelerator, precision=precision)
    device = "cuda" if accelerator in ("cuda", "gpu") else accelerator
    fabric_s, bare_s = [], []
    for r in range(repeats):
        m1 = spec.build()
        m2 = copy.deepcopy(m1)
        fabric_s.append(fabric_fit(m1, data, config, r, engine))
        bare_s.append(bare_fit(m2, data, config, r, device=device, bf16=precision.startswith("bf16")))
    images = config.epochs * len(data)
    return images / statistics.median(fabric_s), images / statistics.median(bare_s)


def synthetic_cifar(n: int, seed: int = 0) -> ImageSet:
    """``n`` random 3x32x32 images with 10 balanced labels: CIFAR's shape for speed figures only."""
    gen = torch.Generator().manual_seed(seed)
    return ImageSet("synthetic-cifar", torch.rand(n, 3, 32, 32, generator=gen), torch.arange(n) % 10, 10)


def run_perf(*, repeats: int = 3, accelerator: str = "cpu", say: Callable[[str], None] = lambda _m: None) -> str:
    """Measure and return the ``foundation`` section (written by :func:`ownmark.bench.report.publish`).

    Args:
        accelerator: ``cpu`` (cnn2 on mnist5k) or an accelerator (the loop rows then time a
            CIFAR-shaped ResNet-18 in fp32 and bf16; FCW embedding and fine-tuning run there too).
    """
    engine = Engine(accelerator=accelerator)
    ctx = Context.load("mnist5k", split_seed=0)
    data = ctx.splits.owner
    clean = train_model(ctx.spec("cnn2"), data, seed=0)
    say("clean model trained; timing loops")
    rows = []
    if accelerator == "cpu":
        fabric_ips, bare_ips = loop_rates(
            ctx.spec("cnn2"), data, EPOCH, accelerator="cpu", precision="32-true", repeats=repeats
        )
        rows.append(
            _row("Fabric loop vs bare PyTorch (images/s)", f"{fabric_ips:,.0f} vs {bare_ips:,.0f}",
                 fabric_ips / bare_ips, 0.95, True)
        )  # fmt: skip
    else:
        images, spec = synthetic_cifar(GPU_IMAGES), ModelSpec(GPU_ARCH, 3, 10, 32)
        rates = {}
        for precision in ("32-true", "bf16-mixed"):
            say(f"timing {GPU_ARCH} in {precision}")
            rates[precision] = loop_rates(
                spec, images, GPU_EPOCH, accelerator=accelerator, precision=precision, repeats=repeats
            )
            fab, bare = rates[precision]
            rows.append(
                _row(f"Fabric loop vs bare PyTorch, {GPU_ARCH} {precision} (images/s)", f"{fab:,.0f} vs {bare:,.0f}",
                     fab / bare, 0.95, True)
            )  # fmt: skip
        fp32, bf16 = rates["32-true"][0], rates["bf16-mixed"][0]
        rows.append(
            _row("Fabric loop bf16-mixed vs fp32 (images/s)", f"{bf16:,.0f} vs {fp32:,.0f}", bf16 / fp32, 1.0, True)
        )
    say("timing FCW embedding against fine-tuning")
    fcw_cfg = FCWConfig(epochs=EPOCH.epochs, lr=EPOCH.lr, milestones=())
    embed_s, tune_s = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        FCW(fcw_cfg).embed(clean, data, seed=r, engine=engine)
        embed_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit(copy.deepcopy(clean), data, EPOCH, seed=r, engine=engine)
        tune_s.append(time.perf_counter() - t0)
    marked, key = FCW().embed(clean, data, seed=0)
    oracle = LabelOracle(marked, num_classes=10)
    xv, yv = key.tensors["verify_x"], key.tensors["verify_y"]
    seq = sequential_verify(lambda i: bool(oracle(xv[i : i + 1])[0] == yv[i]), len(xv), p0=0.1, alpha=0.01)
    least = min_queries(0.01, 0.1)
    embed_med, tune_med = statistics.median(embed_s), statistics.median(tune_s)
    rows += [
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
    return render(rows, repeats, len(data), accelerator)


def _row(
    name: str, figures: str, ratio: float, goal: float, at_least: bool = False
) -> tuple[str, str, float, str, bool]:
    met = ratio >= goal if at_least else ratio <= goal
    return name, figures, ratio, f"{'>=' if at_least else '<='} {goal}", met


def section_name(accelerator: str) -> str:
    """The BENCHMARKS.md section a run on ``accelerator`` writes: ``foundation`` on the CPU,
    ``foundation-cuda`` on a GPU, so the figures of either device stay beside the other's.

    Example:
        >>> section_name("cpu"), section_name("cuda"), section_name("gpu")
        ('foundation', 'foundation-cuda', 'foundation-cuda')
    """
    return "foundation" if accelerator == "cpu" else "foundation-" + ("cuda" if accelerator == "gpu" else accelerator)


def render(rows: list[tuple[str, str, float, str, bool]], repeats: int, n: int, accelerator: str = "cpu") -> str:
    where = (
        ""
        if accelerator == "cpu"
        else f" Accelerator: {accelerator} ({_device_name()}); the loop rows time {GPU_ARCH} on {GPU_IMAGES:,} "
        f"synthetic 3x32x32 images, batch {GPU_EPOCH.batch_size}, {GPU_EPOCH.epochs} epochs, the bare loop's data "
        "resident on the device."
    )
    on_gpu = accelerator != "cpu"
    lines = [
        f"## Foundation on {section_name(accelerator).removeprefix('foundation-')}" if on_gpu else "## Foundation",
        "",
        f"Written by `ownmark bench perf --accelerator {accelerator}`; every figure below comes from one run of it."
        if on_gpu
        else "Written by `ownmark bench perf` (`make bench`); every figure below comes from one run of it.",
        "",
        f"Machine: {machine()}. Data: mnist5k owner split ({n} images), cnn2, batch 128; each timing is the "
        f"median of {repeats} alternated runs.{where}",
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


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
