"""Function-coupled watermark (FCW): fused in-distribution triggers and random weight masking."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet
from ownmark.errors import (
    ConfigError,
    KeyMismatchError,
    require_choice,
    require_in_range,
    require_non_negative,
    require_positive,
)
from ownmark.train import Engine, TrainConfig, key_seed
from ownmark.verify import LabelOracle
from ownmark.verify.randomization import randomization_evidence
from ownmark.watermarks.base import WATERMARKS, Preset, config_dict
from ownmark.watermarks.triggers import check_key, count_matches, fine_tune_with_triggers

log = logging.getLogger(__name__)

_CODE_MILESTONES = (15 / 40, 25 / 40, 35 / 40)  # lr x0.1 at epochs 15/25/35 of 40 (public code)


@dataclass(frozen=True)
class FCWConfig:
    """Settings of FCW; the defaults are ownmark's CPU setting for mnist5k-sized data.

    Args:
        fusion: ``invisible`` (pixel blend ``(1 - ratio) x_a + ratio x_b``, what the authors' code
            runs) or ``direct`` (two images on a 2H x 2W canvas, other quadrants white, resized
            back). Invisible is the default because only its mark can be verified at the model
            level here: a cnn2 marked on mnist5k with direct fusion reads *every* direct fusion as
            t (rate 1.00 on all 72 candidate pairs, 3 of 3 seeds), so the suspect reveals t alone
            and no test valid for every model made without the secret can go below 1/K (see FCW).
        ratio: blend weight of the second image for invisible fusion, in (0, 1).
        source_a, source_b, target: the two source classes and the watermark label; -1 draws
            three distinct classes from the seed.
        pairing: ``ordered`` pairs the k-th images of each class (the public code);
            ``random`` pairs them in a seeded random order.
        n_embed, n_verify: triggers used for embedding, and the held-out images per class in
            the key's verification pool (never fused in embedding); verification fuses the pool's
            classes pairwise, so ``n_verify`` images of *every* class are kept (K(K-1) n_verify
            queries, half that for a blend at ratio 0.5).
        mask_ratio, mask_period: every ``mask_period`` steps zero ``floor(mask_ratio * P)``
            weights drawn uniformly from the P eligible weights; 0 disables masking. METHODS.md
            suggests keeping the code's dose (rho x masking events ~ 6 zeroings per weight), but
            measured here that dose (rho 0.03 over the default run's 200 steps) kills a cnn2 on
            mnist5k: the small first conv layer cannot regrow between maskings and accuracy falls
            to chance; rho 0.005 costs 5 points, rho 0.003 one point. The CPU default is rho 0.002
            every step (dose 0.4); the ``dose-6`` preset keeps the code's dose for larger runs.
    """

    fusion: str = "invisible"
    ratio: float = 0.5
    source_a: int = -1
    source_b: int = -1
    target: int = -1
    pairing: str = "random"
    n_embed: int = 30
    n_verify: int = 100
    triggers_per_batch: int = 10
    mask_ratio: float = 0.002
    mask_period: int = 1
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = _CODE_MILESTONES

    def __post_init__(self) -> None:
        require_choice(self, "fusion", ("direct", "invisible"))
        require_choice(self, "pairing", ("ordered", "random"))
        require_in_range(self, "ratio", 0.0, 1.0, low_open=True, high_open=True)
        require_in_range(self, "mask_ratio", 0.0, 1.0, high_open=True)
        require_positive(self, "n_embed", "n_verify", "triggers_per_batch", "mask_period", "epochs", "batch_size", "lr")
        require_non_negative(self, "momentum", "weight_decay")
        classes = [c for c in (self.source_a, self.source_b, self.target) if c != -1]
        if any(not isinstance(c, int) or c < 0 for c in classes) or len(set(classes)) != len(classes):
            raise ConfigError(
                f"FCWConfig.source_a, source_b and target must be distinct class indices (or -1 to draw them), "
                f"got {self.source_a!r}, {self.source_b!r}, {self.target!r}"
            )

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, milestones=self.milestones,
        )  # fmt: skip


def fuse_direct(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Direct fusion: ``xa`` top-left and ``xb`` bottom-right of a 2H x 2W canvas whose other
    quadrants are white, resized back to H x W by 2x2 area averaging.

    Example:
        >>> fuse_direct(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))[0, 0, 0].tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    n, c, h, w = xa.shape
    canvas = torch.ones(n, c, 2 * h, 2 * w, dtype=xa.dtype)
    canvas[:, :, :h, :w] = xa
    canvas[:, :, h:, w:] = xb
    return F.avg_pool2d(canvas, 2)


def fuse_invisible(xa: torch.Tensor, xb: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Invisible fusion: the pixel blend ``(1 - ratio) * xa + ratio * xb``."""
    return (1 - ratio) * xa + ratio * xb


def eligible_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weights random masking may zero: conv weights and hidden fully connected layers.

    Biases, normalisation layers and the final classifier (the last Linear) are never masked.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    final = linears[-1] if linears else None
    return [
        m.weight for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or (isinstance(m, nn.Linear) and m is not final)
    ]  # fmt: skip


def random_mask_hook(ratio: float, period: int, seed: int):
    """A ``fit`` step hook that zeroes ``floor(ratio * P)`` random eligible weights of the model it
    is given every ``period`` steps. No persistent mask: zeroed weights may regrow."""

    def hook(model: nn.Module, step: int) -> None:
        if step % period:
            return
        weights = eligible_weights(model)
        sizes = [w.numel() for w in weights]
        total = sum(sizes)
        count = math.floor(ratio * total)
        if count == 0:
            return
        gen = torch.Generator().manual_seed(key_seed(seed, step, 7))
        chosen = torch.randperm(total, generator=gen)[:count]
        with torch.no_grad():
            start = 0
            for w, size in zip(weights, sizes, strict=True):
                local = chosen[(chosen >= start) & (chosen < start + size)] - start
                w[torch.unravel_index(local, w.shape)] = 0.0  # flat indices in w's logical order, any layout
                start += size

    return hook


@WATERMARKS.register("fcw")
class FCW:
    """Function-coupled watermark: triggers fused from two in-distribution classes.

    Trigger images combine an image of class a with one of class b (invisible or direct fusion)
    and carry a third label t (the paper's single watermark label). They are embedded by
    fine-tuning on every clean batch joined with a few triggers, while random weight masking
    spreads the watermark over all weights, so that removing it (fine-tuning, pruning) costs
    clean accuracy too.

    Verification is a randomization test over the key's class triple (ownmark's choice; the paper
    counts answers t against no stated null):

    - **Null hypothesis**: the suspect was made without the owner's secret. The unit of
      independence is the *model*: the answers of one model on many triggers are not independent
      evidence (a model may read every fusion of two digits as a third one; measured on the old
      binomial test, third-party MNIST models were claimed under 29 of 200 keys).
    - **Test**: the key keeps a pool of ``n_verify`` held-out images of every class, drawn the
      same way for every class whatever the triple. ``detect`` fuses pool[i] with pool[j] (k-th
      with k-th) for every ordered pair of classes and reads the suspect's label rates
      ``r[i, j, c]``. Candidate (i, j, c), c not in {i, j}, scores ``r[i, j, c]`` minus the mean
      rate of c over all pairs that are candidates for c, so a model that answers c everywhere, or
      reads every fusion as c, gains nothing. The p-value is the rank of the key's (a, b, t) among
      all K(K-1)(K-2) candidates, ties counted against the owner
      (:func:`ownmark.verify.randomization.randomization_evidence`).
    - **Assumption**: (a, b, t) was one uniform draw of distinct classes (``draw_classes``: -1 in
      the config) made before and independently of the suspect. Then its rank is uniform for any
      model made without the secret, whatever that model is, and the p-value is exact. Classes
      fixed by the user void this assumption unless chosen as if at random: ``detect`` warns.
    - **Smallest p-value**: 1/720 on 10 classes (direct fusion, or a blend at ratio != 0.5);
      1/360 for the default blend at ratio 0.5, whose (a, b) and (b, a) fusions are the same
      images and always tie.
    - **Queries**: K(K-1) n_verify (direct), K(K-1)/2 n_verify (blend at 0.5), plus ``n_embed``
      on the embedding triggers (reported, not tested): 4,530 with the defaults on 10 classes.
    - **Why this test** (measured on mnist5k, cnn2, n_verify 100): it needs no null model and no
      calibration, and still has power: the marked model's key ranks first, tied only with
      (b, a, t), in 2 of 3 embedding seeds (p = 1/360) and third (p = 1/180) in the other, held-out
      rate 0.89 to 0.96 against a baseline of 0.11 to 0.28 for t on other pairs; clean accuracy
      0.947 -> 0.941 to 0.945. The owner's unmarked model gets p 0.07, 0.38, 1.0 on those keys; a
      constant model p = 1 always. OPEN: a model biased towards the key's own t (+4 or +8 on its
      logit) knows part of the secret, and is claimed under 50-56 of the 720 triples of one pool
      (7-8%, measured); standardising the contrast per label gives 0/720 there, but the marked
      model's p rises to 0.014-0.042. A model independent of the key is claimed under at most
      7 of the 720 triples of any pool (rank <= 7), i.e. rate <= 0.0097 at alpha 0.01, by
      construction; measured over 26 pool draws x 720 triples, the owner's unmarked model, cnn2 and
      lenet of seeds 11/12 and a cnn2 of the attacker's split are claimed at 0.79-0.83%, and on
      each draw's own triple 1 of 156 verdicts (the owner's unmarked model, p 0.0056).
      With direct fusion the marked model reads every fusion as t (rate 1.00 on
      all pairs, 3 of 3 seeds), so only t is revealed and no valid test can reach below 1/K: this
      contrast gives p = 1; the default fusion is therefore invisible.

    Reference:
        Wen, Li, Jiang, Xu, "On Function-Coupled Watermarks for Deep Neural Networks",
        IEEE JETCAS 2023, arXiv:2302.10296.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = FCWConfig(n_embed=4, n_verify=4, epochs=1, batch_size=16, triggers_per_batch=2)
        >>> marked, key = FCW(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> FCW().detect(marked, key).n
        4
    """

    family = "classifier"
    config_class = FCWConfig
    presets = {
        "code-latest": Preset(
            FCWConfig(fusion="invisible", ratio=0.5, mask_ratio=0.002, mask_period=10, epochs=40, pairing="ordered"),
            "Wen et al. 2023, public code (latest): invisible fusion r 0.5, rho 0.002 every 10 steps, 40 epochs"),
        "code-dense": Preset(
            FCWConfig(fusion="invisible", ratio=0.5, mask_ratio=0.05, mask_period=1, epochs=40, pairing="ordered"),
            "Wen et al. 2023, public code: invisible fusion r 0.5, rho 0.05 every step"),
        "code-first": Preset(
            FCWConfig(fusion="invisible", ratio=0.5, mask_ratio=0.2, mask_period=1, epochs=40, pairing="ordered"),
            "Wen et al. 2023, public code (first release): invisible fusion r 0.5, rho 0.2 every step"),
        "invisible": Preset(FCWConfig(fusion="invisible", ratio=0.5), "Wen et al. 2023, invisible fusion r = 0.5"),
        "direct": Preset(FCWConfig(fusion="direct"),
                         "Wen et al. 2023, direct fusion (marked cnn2 reads every direct fusion as t: p >= 1/K)"),
        "dose-6": Preset(FCWConfig(mask_ratio=0.03, epochs=10),
                         "code's dose of ~6 zeroings per weight over the CPU run (collapses cnn2 on mnist5k)"),
        "no-mask": Preset(FCWConfig(mask_ratio=0.0), "ablation: fused triggers without weight masking"),
    }  # fmt: skip

    def __init__(self, config: FCWConfig = FCWConfig()) -> None:
        self.config = config

    def draw_classes(self, num_classes: int, *, seed: int) -> tuple[int, int, int]:
        """The key's class triple ``(a, b, t)``: classes left at -1 are drawn uniformly among the
        ordered triples of distinct classes (one random permutation of the classes, read in order)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(key_seed(seed, 11))
        a, b, t = cfg.source_a, cfg.source_b, cfg.target
        if -1 in (a, b, t):
            free = [c for c in torch.randperm(num_classes, generator=gen).tolist() if c not in (a, b, t)]
            a, b, t = (c if c != -1 else free.pop(0) for c in (a, b, t))
        if max(a, b, t) >= num_classes:
            raise ConfigError(f"FCW classes {a}, {b}, {t} do not exist in data of {num_classes} classes; pick others")
        return a, b, t

    def fuse(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """The configured fusion of two image batches."""
        cfg = self.config
        return fuse_direct(xa, xb) if cfg.fusion == "direct" else fuse_invisible(xa, xb, cfg.ratio)

    def make_triggers(self, data: ImageSet, *, seed: int) -> dict[str, torch.Tensor]:
        """Fused embedding triggers, and the per-class pool of held-out images verification fuses.

        Every class is drawn the same way, from its own stream, whatever the triple: its images
        are shuffled (``random`` pairing) or kept in data order (``ordered``, the public code); the
        first ``n_embed`` are embedding sources (used for ``a`` and ``b`` only), the next ``n_verify``
        are its pool. The pool therefore does not depend on ``(a, b, t)``, which the rank test needs.
        """
        cfg = self.config
        a, b, t = self.draw_classes(data.num_classes, seed=seed)
        need = cfg.n_embed + cfg.n_verify
        gen = torch.Generator().manual_seed(key_seed(seed, 13))
        embed_idx, pool_idx = [], []
        for c in range(data.num_classes):
            idx = torch.nonzero(data.y == c).flatten()
            if len(idx) < need:
                raise ConfigError(
                    f"FCW needs {need} images of every class (n_embed + n_verify) but class {c} of {data.name} has "
                    f"{len(idx)}; lower n_embed or n_verify"
                )
            if cfg.pairing == "random":
                idx = idx[torch.randperm(len(idx), generator=gen)]
            embed_idx.append(idx[: cfg.n_embed])
            pool_idx.append(idx[cfg.n_embed : need])
        pool_x = data.read(torch.stack(pool_idx))  # (K, m, C, H, W); a streamed set reads only these
        return {
            "embed_x": self.fuse(data.read(embed_idx[a]), data.read(embed_idx[b])),
            "embed_y": torch.full((cfg.n_embed,), t, dtype=torch.long),
            "verify_x": self.fuse(pool_x[a], pool_x[b]),
            "verify_y": torch.full((cfg.n_verify,), t, dtype=torch.long),
            "sources": torch.tensor([a, b, t]),
            "pool_x": pool_x,
        }  # fmt: skip

    def draw_key(self, model: nn.Module, data: ImageSet, *, seed: int) -> Key:
        """The key ``embed(model, data, seed=seed)`` makes, without training (``model`` is not used:
        FCW's key depends on the data and the seed only)."""
        trig = self.make_triggers(data, seed=seed)
        return Key(
            "fcw", config_dict(self.config), trig,
            {"num_classes": data.num_classes, "input_shape": list(data.shape), "dataset": data.name,
             "target": int(trig["sources"][2])},
        )  # fmt: skip

    def embed(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine(), checkpoint=None, resume=False
    ) -> tuple[nn.Module, Key]:
        """Fine-tune a copy of ``model`` on ``data`` plus triggers, with random weight masking."""
        cfg = self.config
        key = self.draw_key(model, data, seed=seed)
        steps = cfg.epochs * math.ceil(len(data) / cfg.batch_size)
        log.info("FCW masking dose: %.1f zeroings per weight", cfg.mask_ratio * (steps // cfg.mask_period))
        marked = fine_tune_with_triggers(
            model, data, key.tensors["embed_x"], key.tensors["embed_y"], cfg.train_config(),
            per_batch=cfg.triggers_per_batch, seed=seed, engine=engine, checkpoint=checkpoint, resume=resume,
            step_hook=random_mask_hook(cfg.mask_ratio, cfg.mask_period, seed) if cfg.mask_ratio > 0 else None,
        )  # fmt: skip
        return marked, key

    def detect(self, suspect, key: Key, *, p0: float | None = None) -> Evidence:
        """Rank of the key's class triple among all ordered triples, on fusions of the key's pool."""
        check_key(key, "fcw")
        if p0 is not None:
            raise ConfigError(
                "FCW's p-value is the key's rank among all class triples and has no null match rate; "
                "verify without p0 (and without a calibration)"
            )
        if "pool_x" not in key.tensors:
            raise KeyMismatchError(
                "this FCW key has no class pool (it predates verification by class-triple rank); "
                "embed again to make a key that can be verified"
            )
        cfg = FCWConfig(fusion=key.config.get("fusion", "direct"), ratio=key.config.get("ratio", 0.5))
        num_classes = int(key.meta["num_classes"])
        a, b, t = (int(c) for c in key.tensors["sources"])
        fixed = [name for name in ("source_a", "source_b", "target") if key.config.get(name, -1) != -1]
        if fixed:
            warnings.warn(
                f"FCW key with {', '.join(fixed)} fixed by the user: its rank p-value is exact only if these "
                "classes were chosen as if drawn at random, before and independently of any suspect",
                UserWarning, stacklevel=2,
            )  # fmt: skip
        oracle = LabelOracle(suspect, num_classes=num_classes)
        pool = key.tensors["pool_x"]
        symmetric = cfg.fusion == "invisible" and cfg.ratio == 0.5  # (a, b) and (b, a) fuse to the same images
        rates = fusion_rates(oracle, pool, FCW(cfg).fuse, symmetric=symmetric)
        scores = triple_scores(rates)
        m = pool.shape[1]
        total = int((scores != -math.inf).sum())
        details = {
            "rate": float(rates[a, b, t]),
            "label_baseline": float(rates[a, b, t] - scores[a, b, t]),
            "fixed_classes": fixed,
            "smallest_p": (2.0 if symmetric else 1.0) / total,  # a blend at 0.5: (b, a, t) always ties
        }
        if "embed_x" in key.tensors:
            details["embed_k"] = count_matches(oracle, key.tensors["embed_x"], key.tensors["embed_y"])
            details["embed_n"] = len(key.tensors["embed_x"])
        return randomization_evidence(
            "fcw", scores, (a, b, t), k=round(float(rates[a, b, t]) * m), n=m, queries=oracle.queries,
            what=f"{total} ordered triples (a, b, t) of distinct classes", details=details,
        )  # fmt: skip


def fusion_rates(
    oracle: LabelOracle, pool: torch.Tensor, fuse, *, symmetric: bool = False, batch: int = 1024
) -> torch.Tensor:
    """``rates[i, j, c]``: share of fusions of ``pool[i]`` with ``pool[j]`` (k-th with k-th) the
    oracle answers with label c; NaN on the diagonal. ``symmetric`` fusions (a blend at ratio 0.5)
    are asked once per unordered pair, since fusing (i, j) and (j, i) gives the same images.

    Example:
        >>> oracle = LabelOracle(lambda x: torch.zeros(len(x), dtype=torch.long))
        >>> r = fusion_rates(oracle, torch.rand(3, 2, 1, 4, 4), fuse_direct)
        >>> r[0, 1].tolist(), oracle.queries
        ([1.0, 0.0, 0.0], 12)
    """
    k = pool.shape[0]
    rates = torch.full((k, k, k), float("nan"))
    for i in range(k):
        others = [j for j in range(k) if j != i and not (symmetric and j < i)]
        if not others:
            continue
        xa = pool[i].unsqueeze(0).expand(len(others), *pool.shape[1:])
        fused = fuse(xa.reshape(-1, *pool.shape[2:]), pool[others].reshape(-1, *pool.shape[2:]))
        answers = torch.cat([oracle(fused[s : s + batch]) for s in range(0, len(fused), batch)])
        answers = answers.reshape(len(others), pool.shape[1])
        for n, j in enumerate(others):
            valid = answers[n][(answers[n] >= 0) & (answers[n] < k)]  # an out-of-range label is no class's
            rates[i, j] = torch.bincount(valid, minlength=k).float() / pool.shape[1]
            if symmetric:
                rates[j, i] = rates[i, j]
    return rates


def triple_scores(rates: torch.Tensor) -> torch.Tensor:
    """Score of every candidate triple (i, j, c): how much more the fusions of (i, j) are read as c
    than the fusions of the other pairs that are candidates for c (pairs without c), so a model that
    answers c everywhere, or reads every fusion as c, gains nothing. ``-inf`` where i = j or c is i or j.

    Example:
        >>> r = torch.zeros(3, 3, 3); r[..., 2] = 1.0          # every fusion read as 2
        >>> s = triple_scores(r)
        >>> s[0, 1, 2].item(), int((s != -float("inf")).sum())
        (0.0, 6)
    """
    k = rates.shape[0]
    i, j, c = torch.meshgrid(torch.arange(k), torch.arange(k), torch.arange(k), indexing="ij")
    valid = (i != j) & (c != i) & (c != j)
    filled = torch.where(valid, rates, torch.zeros(()))
    baseline = filled.sum((0, 1)) / valid.sum((0, 1)).clamp(min=1)
    return torch.where(valid, rates - baseline, torch.full((), -math.inf))
