"""One training loop on Lightning Fabric: CPU here, one or many GPUs and nodes unchanged.

Every random choice is keyed by ``(seed, epoch)`` or ``(seed, step)`` instead of carried in
generator state, so a run resumed from the checkpoint of epoch ``e`` draws exactly what an
uninterrupted run draws and ends with bit-identical weights (on the same device). Checkpoints
are written atomically at the end of every epoch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ownmark.data import ImageSet
from ownmark.errors import ConfigError, IntegrityError, require_choice, require_non_negative, require_positive
from ownmark.io import load_checkpoint, save_checkpoint
from ownmark.models.layout import cpu_channels_last

log = logging.getLogger(__name__)

BatchHook = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
StepHook = Callable[[nn.Module, int], None]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule of a training run.

    Args:
        milestones: fractions of ``epochs`` after which the learning rate is multiplied by
            ``gamma`` (FCW's code uses epochs 15/25/35 of 40, i.e. 0.375, 0.625, 0.875).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        require_positive(self, "epochs", "batch_size", "lr", "gamma")
        require_non_negative(self, "momentum", "weight_decay")
        require_choice(self, "optimizer", ("sgd", "adam"))
        if not isinstance(self.epochs, int) or not isinstance(self.batch_size, int):
            raise ConfigError(
                f"TrainConfig.epochs and batch_size must be ints, got {self.epochs!r}, {self.batch_size!r}"
            )
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"TrainConfig.milestones must be fractions in (0, 1), got {self.milestones!r}")


ACCELERATORS = ("cpu", "cuda", "gpu", "mps", "auto")


@dataclass(frozen=True)
class Engine:
    """Where a run executes: passed to ``lightning.Fabric`` (CPU by default; ``cuda``/``gpu``
    with several ``devices`` and ``num_nodes`` under DDP, launched by torchrun or a cluster)."""

    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = False

    def __post_init__(self) -> None:
        require_positive(self, "devices", "num_nodes")
        require_choice(self, "accelerator", ACCELERATORS)
        if self.accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
            raise ConfigError(
                f"--accelerator {self.accelerator}: no CUDA GPU is visible on this machine (torch "
                f"{torch.__version__}); use --accelerator cpu (or auto)"
            )
        if self.accelerator == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("--accelerator mps: Apple's MPS backend is not available here; use --accelerator cpu")


@dataclass
class TrainResult:
    """What a run did: epochs run in this call, images seen, seconds, the last mean loss."""

    epochs_run: int = 0
    images: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def key_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (for per-epoch and per-step generators).

    Each part must fit in 64 bits: a larger seed would be cut to its low bits and give another seed's
    stream (2**70 would repeat seed 0), so it is refused.
    """
    h = 1469598103934665603
    for p in parts:
        if not -(2**63) <= int(p) < 2**64:
            raise ConfigError(f"seed {p} does not fit in 64 bits; choose a seed between 0 and 2**63 - 1")
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


@contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Run the block with the global CPU generator seeded with ``seed``, then restore it as it was.

    The CPU generator alone: ``torch.manual_seed`` would also queue a seeding of every lazily initialised
    accelerator (with a captured stack, about a millisecond, kept until exit) at each call, and leave the
    accelerators' generators seeded after the block. Model initialisation and augmentation draws happen on
    the CPU, so they are the same on every device.

    Example:
        >>> with cpu_seeded(3):
        ...     a = torch.rand(2)
        >>> with cpu_seeded(3):
        ...     torch.equal(a, torch.rand(2))
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam, as the config says."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based) under the step schedule."""
    drops = sum(epoch >= max(1, math.floor(m * config.epochs)) for m in config.milestones)
    return config.lr * config.gamma**drops


def optimizer_state_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a resumed optimizer's state (momentum, Adam moments) to the device Fabric put its parameters on.

    A checkpoint's state is loaded before ``fabric.setup`` moves the model, so it lands on the CPU,
    and Fabric does not move optimizer state: on a GPU the first step would mix devices. The ``step``
    counters stay where torch keeps them (on the CPU for non-capturable optimizers).
    """
    for state in optimizer.state.values():
        for name, value in state.items():
            if name != "step" and isinstance(value, torch.Tensor) and value.device != device:
                state[name] = value.to(device)


def _fabric(engine: Engine):  # -> lightning.Fabric
    from lightning.fabric import Fabric

    fabric = Fabric(
        accelerator=engine.accelerator, devices=engine.devices, num_nodes=engine.num_nodes,
        strategy=engine.strategy, precision=engine.precision,
    )  # fmt: skip
    fabric.launch()
    return fabric


# Data kept on an accelerator when it takes at most this share of the device's free memory.
RESIDENT_SHARE = 0.5


class Batches:
    """Where a loop's training data lives and how each batch reaches the device.

    In-memory data on the CPU stays as it is and batches are indexed from it (the path every figure
    of this project was measured on). On an accelerator the tensors are moved there once when they
    take at most :data:`RESIDENT_SHARE` of its free memory, and each batch is then indexed on the device
    (no per-step copy); larger data stays on the host and each batch is indexed there, copied into
    pinned memory and sent without blocking. A :class:`~ownmark.data.streamed.StreamedImageSet` is read
    through a DataLoader whose worker processes (``OWNMARK_LOADER_WORKERS``, default up to 4) decode the
    next batches while the model trains. Batch order is drawn on the CPU in every case, so a run draws
    the same batches on every device and from either kind of set.

    Example:
        >>> batches = Batches([torch.arange(6.0), torch.arange(6)], torch.device("cpu"))
        >>> [[t.tolist() for t in batch] for batch in batches.epoch(torch.tensor([4, 1, 0]), 2)]
        [[[4.0, 1.0], [4, 1]], [[0.0], [0]]]
    """

    def __init__(self, tensors: list[torch.Tensor], device: torch.device, *, streamed: Any = None) -> None:
        self.device, self.streamed = device, streamed
        if streamed is not None:
            self.where, self.tensors = "streamed", []
            return
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if device.type == "cpu":
            self.where, self.tensors = "cpu", tensors
        elif nbytes <= RESIDENT_SHARE * _free_bytes(device):
            self.where, self.tensors = "device", [t.to(device) for t in tensors]
        else:
            self.where, self.tensors = "host", tensors
        if device.type != "cpu":
            log.info("training data (%.1f MB) %s", nbytes / 2**20,
                     "resident on the device" if self.where == "device" else "on the host, sent per batch")  # fmt: skip

    @classmethod
    def of(cls, data: ImageSet, device: torch.device) -> Batches:
        """The batches of an ImageSet: its images and labels, streamed when the set is."""
        from ownmark.data.streamed import StreamedImageSet

        if isinstance(data, StreamedImageSet):
            return cls([], device, streamed=data)
        return cls([data.x, data.y], device)

    def order(self, order: torch.Tensor) -> torch.Tensor:
        """``order`` (drawn on the CPU) placed where batches are indexed."""
        return order.to(self.device) if self.where == "device" else order

    def take(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The batch at ``idx``, on the device."""
        if self.where == "streamed":
            return self._send([self.streamed.read(idx.cpu()), self.streamed.y[idx.cpu()]])
        if self.where == "host":
            return self._send([t[idx].pin_memory() for t in self.tensors])
        return [t[idx] for t in self.tensors]

    def epoch(self, order: torch.Tensor, batch_size: int) -> Iterator[list[torch.Tensor]]:
        """The batches of one epoch, ``batch_size`` positions of ``order`` (on the CPU) each, on the device."""
        if self.where != "streamed":
            placed = self.order(order)
            for i in range(0, len(placed), batch_size):
                yield self.take(placed[i : i + batch_size])
            return
        workers = loader_workers()
        loader = DataLoader(
            _Chunks(self.streamed, order, batch_size), batch_size=None, num_workers=workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
        )  # fmt: skip
        for x, y in loader:
            yield self._send([x, y])

    def _send(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.device.type == "cpu":
            return tensors
        return [t.to(self.device, non_blocking=True) for t in tensors]


class _Chunks(Dataset):
    """Batch ``k`` of an epoch of a streamed set: the images and labels at ``order[k*b : (k+1)*b]``."""

    def __init__(self, data: Any, order: torch.Tensor, batch_size: int) -> None:
        self.data, self.order, self.batch_size = data, order, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order[k * self.batch_size : (k + 1) * self.batch_size]
        return self.data.read(idx), self.data.y[idx]


LOADER_WORKERS_ENV = "OWNMARK_LOADER_WORKERS"


def loader_workers() -> int:
    """Worker processes that read a streamed set's batches: ``$OWNMARK_LOADER_WORKERS``, or one less
    than the CPUs, at most 4 (0 reads in the training process)."""
    raw = os.environ.get(LOADER_WORKERS_ENV, "")
    if not raw:
        return max(0, min(4, (os.cpu_count() or 1) - 1))
    if not raw.isdigit():
        raise ConfigError(f"{LOADER_WORKERS_ENV}={raw!r} must be a number of processes >= 0, e.g. 4")
    return int(raw)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return 0  # other accelerators: keep the data on the host


class DeviceCopies:
    """Copies of a hook's host tensors on the device its batches arrive on, made once per device.

    A batch hook receives batches on the training device (see :class:`Batches`); the tensors it
    joins to them (trigger images, the victim's answers) are moved there once, not every step.
    On the CPU the tensors themselves are returned.

    Example:
        >>> copies = DeviceCopies(torch.ones(2))
        >>> copies.on(torch.device("cpu"))[0].tolist()
        [1.0, 1.0]
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        self._host = tensors
        self._copies: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._copies:
            self._copies[device] = tuple(t.to(device) for t in self._host)
        return self._copies[device]


def label_hook(targets: torch.Tensor) -> BatchHook:
    """A batch hook for data labelled by row index: each batch's labels become ``targets[index]``
    (the victim's answers, hard or soft, of an extraction attack), taken on the batch's device."""
    copies = DeviceCopies(targets)

    def hook(x: torch.Tensor, idx: torch.Tensor, _step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x, copies.on(idx.device)[0][idx]

    return hook


def fit(
    model: nn.Module,
    data: ImageSet,
    config: TrainConfig,
    *,
    seed: int,
    engine: Engine = Engine(),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    batch_hook: BatchHook | None = None,
    step_hook: StepHook | None = None,
    loss: LossFn | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy (or ``loss``) on ``data``.

    Args:
        checkpoint: file written atomically after each epoch; with ``resume`` an existing one is
            loaded and training continues after its last finished epoch.
        batch_hook: ``(x, y, step) -> (x, y)`` changes each batch before the forward pass
            (FCW appends trigger images here). The batch is already on the training device
            (see :class:`Batches`); the hook returns tensors on that device.
        step_hook: ``(model, step)`` runs before each forward pass (FCW's weight masking).
        loss: ``(forward, x, y, step) -> loss`` replaces cross-entropy; ``forward`` is the module
            to call (self-supervised objectives, the AWEncoder joint loss).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> model = ModelSpec("cnn2", 3, 4, 16).build()
        >>> fit(model, toy_images(), TrainConfig(epochs=1, batch_size=16), seed=0).epochs_run
        1
    """
    fabric = _fabric(engine)
    optimizer = make_optimizer(model, config)
    start_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state.get("seed") != seed or state.get("config") != asdict(config):
            raise IntegrityError(
                f"{checkpoint} was written by a run with another seed or config; pass the same ones or delete it"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        log.info("resuming from %s after epoch %d", checkpoint, start_epoch)
    fmodel, foptimizer = fabric.setup(model, optimizer)
    optimizer_state_to(optimizer, fabric.device)
    # One process in full precision: Fabric has placed the model, and its wrappers would only add
    # per-step bookkeeping (measured ~8% on cnn2 here); step the unwrapped model and optimiser.
    plain = fabric.world_size == 1 and engine.precision == "32-true"
    forward, stepper = (fmodel.module, foptimizer.optimizer) if plain else (fmodel, foptimizer)
    result = TrainResult()
    n = len(data)
    steps_per_epoch = math.ceil(n / config.batch_size)
    batches = Batches.of(data, fabric.device)
    with (
        _progress(engine.progress, config.epochs - start_epoch, steps_per_epoch) as advance,
        # one process only: under DDP the reducer has laid out its gradient buckets for the default layout
        cpu_channels_last(model if fabric.world_size == 1 else None, device=fabric.device),
    ):
        for epoch in range(start_epoch, config.epochs):
            for group in foptimizer.param_groups:
                group["lr"] = lr_at(config, epoch)
            fmodel.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(key_seed(seed, epoch)))
            if fabric.world_size > 1:
                # every process the same number of samples, so the same number of steps (DDP syncs each
                # one; a process with a batch more waited forever): the epoch's first ones fill the last row
                world = fabric.world_size
                pad = order[torch.arange(-n % world) % n]
                order = torch.cat([order, pad])[fabric.global_rank :: world]
            t0, total, count = time.perf_counter(), 0.0, 0
            for j, (x, y) in enumerate(batches.epoch(order, config.batch_size)):  # on the device
                step = epoch * steps_per_epoch + j
                if batch_hook is not None:
                    x, y = batch_hook(x, y, step)
                if step_hook is not None:
                    step_hook(model, step)
                value = F.cross_entropy(forward(x), y) if loss is None else loss(forward, x, y, step)
                stepper.zero_grad(set_to_none=True)
                if plain:
                    value.backward()
                else:
                    fabric.backward(value)
                stepper.step()
                total = total + value.detach() * len(y)  # no .item() per step: it would sync every batch
                count += len(y)
                advance(f"epoch {epoch + 1}/{config.epochs}")
            if fabric.device.type == "cuda":
                torch.cuda.synchronize(fabric.device)  # the epoch's kernels are done before it is timed
            result.seconds += time.perf_counter() - t0
            result.images += count
            result.epochs_run += 1
            result.losses.append(float(total) / max(count, 1))
            if checkpoint is not None and fabric.global_rank == 0:
                save_checkpoint(checkpoint, {
                    "model": {k: v.cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "seed": seed,
                    "config": asdict(config),
                })  # fmt: skip
            fabric.barrier()
    model.cpu().eval()
    return result


class _progress:
    """A rich progress bar over all steps, or nothing when disabled."""

    def __init__(self, enabled: bool, epochs: int, steps: int) -> None:
        self.enabled, self.total = enabled, max(epochs * steps, 1)

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda _text: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True)
        self.bar.start()
        task = self.bar.add_task("training", total=self.total)
        return lambda text: self.bar.update(task, advance=1, description=text)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched; the model's mode is restored."""
    from ownmark.models.encoder import encode  # the same batched eval-mode forward pass

    return encode(model, x, batch_size)


def accuracy(model: nn.Module, data: ImageSet, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (a streamed set is read a few batches at a time)."""
    from ownmark.models.encoder import encode_set

    return (encode_set(model, data, batch_size).argmax(1) == data.y).float().mean().item()
