"""AWEncoder: a key-image watermark for pre-trained (self-supervised) encoders.

A secret key image x_key and one universal perturbation delta (||delta||_inf <= eps) make the
watermark: the marked encoder maps every x + delta close to x_key in feature space. The paper
learns delta adversarially on the clean encoder E0 (PGD on E_x[1 - cos(E0(x + delta), E0(x_key))])
and then embeds it by fine-tuning with a joint loss: the encoder's own contrastive loss on clean
views + lambda_wm * mean(1 - cos(E(x + delta), anchor)) + lambda_fid * mean(1 - cos(E(x), E0(x))).
ownmark adds a specificity term, lambda_neg * mean(1 - cos(E(x + r), E0(x + r))) over fresh random
sign perturbations r of the same norm: without it the marked encoder learns "any perturbation of
this size goes to the key" rather than "delta goes to the key" (measured on mnist5k: random
perturbations moved the marked encoder's features 0.53 towards the key against delta's 0.58).

Verification reads the per-image effect e_i = cos(S(x_i + delta), S(x_key)) - cos(S(x_i), S(x_key))
on held-out images. An adversarial delta partly transfers, so independent encoders show an effect
too and a paired test (with vs without delta) flags them all; it is reported, not decided on. The
verdict is calibrated: ``calibrate`` measures the effect on >= 5 independently trained (null)
encoders, as pre-trained and fine-tuned on a downstream task, and sets the margin tau = the
largest null mean (pre-trained or fine-tuned) + 3 sd of the pre-trained nulls' means; the test is
a one-sided t-test of mean(e_i) > tau. Black-box, through a downstream classifier built on the
suspect, the statistic is the share of images (not already given the key image's label) that delta flips to the
key image's label, tested by the exact binomial test against a p0 calibrated on downstream
classifiers of the null encoders.

ownmark adds a variant, ``trigger="secret"``: a secret random sign pattern of the same L-inf
budget instead of the adversarial delta. It does not transfer to independent encoders (it is not
adversarial for them), so the embedded effect stands far above the null margin.

Reference:
    Zhang, Wu, Lu, Sun, "AWEncoder: Adversarial Watermarking Pre-trained Encoders in Contrastive
    Learning", Applied Sciences 2023, arXiv:2208.03948. The fidelity term follows BadEncoder (Jia,
    Liu, Gong, IEEE S&P 2022, arXiv:2108.00352); the loss weights are ownmark's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, KeyMismatchError, require_choice, require_in_range, require_positive
from ownmark.models.encoder import encode, reestimate_batchnorm
from ownmark.train import Engine, TrainConfig, fit, key_seed
from ownmark.train.ssl import SSLConfig, SSLModel, augmenter, ssl_model, two_views
from ownmark.verify.encoder import key_effects, majority_moves
from ownmark.verify.tests import binomial_pvalue, margin_ttest, paired_wilcoxon, upper_bound
from ownmark.watermarks.awencoder_trigger import (  # key_image: re-exported beside the other trigger parts
    choose_key,
    key_image,  # noqa: F401
    secret_trigger,
    universal_perturbation,
)
from ownmark.watermarks.base import WATERMARKS, Preset, config_dict

SPLIT_STREAM, MARK_STREAM, CONTROL_STREAM, NEGATIVE_STREAM = 0x53504C54, 0x4D41524B, 0x434F4E54, 0x4E454754
NULL_SD_FACTOR = 3.0  # tau = max(null means) + 3 sd(pre-trained null means)


@dataclass(frozen=True)
class AWEncoderConfig:
    """How the watermark is made, embedded and verified.

    Args:
        trigger: ``adversarial`` (the paper's PGD perturbation) or ``secret`` (ownmark's random
            sign pattern of the same budget).
        eps: L-inf budget of delta on [0, 1] pixels (0.1-0.2 for digits, 8/255-16/255 for colour).
        pgd_steps, pgd_step: signed-gradient steps of the adversarial delta and their size.
        epochs, lr, batch_size: the joint-loss fine-tuning (Adam).
        lambda_wm, lambda_fid: weights of the watermark and fidelity terms (contrastive term 1).
        lambda_neg: weight of the specificity term (random sign perturbations of delta's norm keep
            the clean encoder's features; ownmark's, 0 turns it off as in the paper).
        marked_views: add delta to augmented views (else to the clean images) in the watermark term.
        anchor: ``clean`` pulls marked images to E0(x_key), fixed; ``joint`` to the current E(x_key).
        n_verify: held-out owner images kept in the key for verification (never used to embed).
        freeze_bn: normalise with fixed batch-norm statistics during embedding (not the batch's).
            Trained on batches that mix clean and marked images, the mark otherwise lives partly in
            the running statistics, and a user who re-estimates them on clean data (any fine-tuning)
            erases it.
        bn_refresh: with ``freeze_bn``, every this many steps (and at the end) set those fixed
            statistics to the marked encoder's own on clean owner images, so the mark is learnt under
            the statistics any re-estimation on clean data gives (0: keep the clean encoder's).
            Measured on mnist5k without it: re-estimating the statistics alone moved the marked
            effect from 0.23 to 0.03 on one encoder and from 0.27 to 0.13 on another.
        controls: random sign perturbations of the same norm whose flip rate on the suspect bounds
            the black-box null rate (the paper's "random perturbation of the same norm" control).
        key_image: ``matched`` (a seeded patch of scikit-image's photos converted to the data's
            shape, its pixels remapped onto the owner images' pixel distribution: a picture from
            elsewhere with the data's brightness and contrast), ``photo`` (the patch as is) or
            ``noise`` (uniform noise; a noise-like key moves any encoder's features towards it, so
            it calibrates badly). Measured on mnist5k: a grey ``photo`` key lies far from the data,
            and its own embedding is what fine-tuning moves first: Adam at lr 1e-4 (3 epochs) left
            the marked images' features in place (cosine 0.99 to before) but moved the key's
            (cosine 0.39), so the effect fell from 0.31 to -0.21; with ``matched``, 0.98 and 0.20.
        key_candidates: draw this many photo patches and keep the one that random perturbations of
            norm eps pull the clean encoder's features towards least (1: the paper's single draw).
            Independent encoders share that pull (measured correlation 0.86 over 30 patches), and
            it sets how far any encoder moves towards the key, hence the null margin. It matters
            most once encoders are fine-tuned: with a single draw, independent encoders fine-tuned
            downstream reached effects of 0.15-0.37 (margin 0.36 before adaptation), with 32
            candidates at most 0.008 (measured on mnist5k, see BENCHMARKS.md).
        centred: measure cosines after subtracting the suspect's mean clean feature (removes the
            direction all non-negative features share); the paper uses plain cosines.
        ssl: the contrastive objective of the joint loss (method, temperature, heads).
    """

    trigger: str = "adversarial"
    eps: float = 0.15
    pgd_steps: int = 100
    pgd_step: float = 0.01
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    # measured on mnist5k/conv4 (see BENCHMARKS.md): lambda_wm 1 leaves the mark weaker after fine-tuning;
    # lambda_neg 10 keeps random perturbations of delta's norm from triggering it; with the batch-norm
    # refresh lambda_fid 10 cost one encoder's probe 3.2 points, lambda_fid 30 0.3-1.4 points
    lambda_wm: float = 30.0
    lambda_fid: float = 30.0
    lambda_neg: float = 10.0
    marked_views: bool = True
    anchor: str = "clean"
    n_verify: int = 200
    freeze_bn: bool = True
    bn_refresh: int = 20
    controls: int = 20
    key_image: str = "matched"
    key_candidates: int = 32
    centred: bool = False
    ssl: SSLConfig = SSLConfig()

    def __post_init__(self) -> None:
        require_choice(self, "trigger", ("adversarial", "secret"))
        require_choice(self, "anchor", ("clean", "joint"))
        require_choice(self, "key_image", ("photo", "matched", "noise"))
        require_in_range(self, "eps", 0.0, 1.0)
        require_positive(
            self, "eps", "pgd_steps", "pgd_step", "epochs", "lr", "batch_size", "n_verify", "key_candidates"
        )
        if self.bn_refresh < 0:
            raise ConfigError(f"AWEncoderConfig.bn_refresh is a step count >= 0 (0: off), got {self.bn_refresh!r}")
        if self.lambda_wm <= 0 or self.lambda_fid < 0 or self.lambda_neg < 0:
            raise ConfigError(
                f"AWEncoderConfig needs lambda_wm > 0 and lambda_fid, lambda_neg >= 0, got {self.lambda_wm!r}, "
                f"{self.lambda_fid!r}, {self.lambda_neg!r}"
            )
        if isinstance(self.ssl, dict):  # from a saved key's JSON config
            object.__setattr__(self, "ssl", SSLConfig(**self.ssl))


class _Joint(nn.Module):
    """The joint loss as one module, so the shared loop (and DDP) can train it."""

    def train(self, mode: bool = True) -> _Joint:
        super().train(mode)
        if self.cfg.freeze_bn:  # normalise with the clean encoder's statistics throughout
            for m in self.ssl.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def __init__(self, ssl: SSLModel, x_key: torch.Tensor, anchor: torch.Tensor | None, cfg: AWEncoderConfig) -> None:
        super().__init__()
        self.ssl, self.cfg = ssl, cfg
        self.register_buffer("x_key", x_key[None])
        self.register_buffer("anchor", anchor if anchor is not None else torch.zeros(0))

    def forward(self, v0, v1, x, xm, e0x, xr=None, e0r=None) -> torch.Tensor:  # noqa: ANN001
        """Contrastive loss on (v0, v1); x clean, xm marked images; xr randomly perturbed ones
        (with e0x, e0r the clean encoder's features of x and xr)."""
        enc = self.ssl.encoder
        contrastive = self.ssl(v0, v1)
        n = len(x)
        parts = [x, xm] + ([xr] if xr is not None else []) + ([self.x_key] if self.cfg.anchor == "joint" else [])
        feats = enc(torch.cat(parts))
        target = self.anchor if self.cfg.anchor == "clean" else feats[-1:]
        wm = (1 - F.cosine_similarity(feats[n : 2 * n], target.expand(n, -1), dim=1)).mean()
        loss = contrastive + self.cfg.lambda_wm * wm
        loss = loss + self.cfg.lambda_fid * (1 - F.cosine_similarity(feats[:n], e0x, dim=1)).mean()
        if xr is not None:
            loss = loss + self.cfg.lambda_neg * (1 - F.cosine_similarity(feats[2 * n : 3 * n], e0r, dim=1)).mean()
        return loss


def effects(suspect: Any, key: Key) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image cosines to the key image with and without delta, and their difference (the effect)."""
    t = key.tensors
    return key_effects(suspect, t["verify"], t["delta"], t["x_key"], centred=bool(key.config.get("centred", False)))


@WATERMARKS.register("awencoder")
class AWEncoder:
    """AWEncoder: pull images carrying a secret perturbation to a secret key image's embedding.

    ``embed`` learns delta (or draws the secret variant), fine-tunes a copy of the encoder with the
    joint loss, and keeps held-out verification images in the key. ``calibrate`` sets the null
    margin from independent encoders (required before ``detect``). ``detect`` is the white-box
    verification (encoder module or feature API), ``detect_blackbox`` the black-box one (a
    downstream classifier module or label/score query function).

    Reference:
        Zhang, Wu, Lu, Sun, "AWEncoder: Adversarial Watermarking Pre-trained Encoders in
        Contrastive Learning", Applied Sciences 2023, arXiv:2208.03948.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> cfg = AWEncoderConfig(epochs=1, pgd_steps=2, n_verify=8, ssl=SSLConfig(batch_size=32))
        >>> marked, key = AWEncoder(cfg).embed(enc, toy_images(), seed=0)
        >>> tuple(key.tensors["delta"].shape), key.tensors["verify"].shape[0]
        ((3, 16, 16), 8)
    """

    family = "encoder"
    config_class = AWEncoderConfig
    presets: dict[str, Preset] = {}

    def __init__(self, config: AWEncoderConfig = AWEncoderConfig()) -> None:
        self.config = config

    def embed(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine(), checkpoint=None,
        resume: bool = False,
    ) -> tuple[nn.Module, Key]:  # fmt: skip
        cfg = self.config
        if len(data) <= cfg.n_verify + 1:
            raise ConfigError(
                f"AWEncoder needs more than n_verify={cfg.n_verify} owner images (got {len(data)}); lower n_verify"
            )
        g = torch.Generator().manual_seed(key_seed(seed, SPLIT_STREAM))
        order = torch.randperm(len(data), generator=g)
        verify, train = data.x[order[: cfg.n_verify]], data.subset(order[cfg.n_verify :])
        clean = copy.deepcopy(model).eval()
        x_key = choose_key(
            cfg.key_image, clean, train.x[:256], data.shape, seed, candidates=cfg.key_candidates, eps=cfg.eps
        )
        if cfg.trigger == "adversarial":
            delta = universal_perturbation(
                clean, train.x, x_key, eps=cfg.eps, steps=cfg.pgd_steps, step=cfg.pgd_step, seed=seed
            )
        else:
            delta = secret_trigger(data.shape, cfg.eps, seed)
        marked = copy.deepcopy(model)
        eps = float(delta.abs().max())
        e0x = encode(clean, train.x)
        anchor = encode(clean, x_key[None]) if cfg.anchor == "clean" else None
        joint = _Joint(ssl_model(marked, data.shape, cfg.ssl, seed), x_key, anchor, cfg)
        augment = augmenter(data.shape[0], data.shape[1], crop_scale=cfg.ssl.crop_scale, flip=cfg.ssl.flip)
        indexed = ImageSet("awencoder", train.x, torch.arange(len(train)), num_classes=len(train))

        def loss(forward: nn.Module, x: torch.Tensor, idx: torch.Tensor, step: int) -> torch.Tensor:
            v0, v1 = two_views(augment, x, seed, step)
            base = two_views(augment, x, seed + 1, step)[0] if cfg.marked_views else x
            xm = (base + delta.to(x.device)).clamp(0, 1)
            if cfg.lambda_neg == 0:
                return forward(v0, v1, x, xm, e0x[idx])
            g = torch.Generator().manual_seed(key_seed(seed, NEGATIVE_STREAM) + step)  # keyed by step: resumable
            r = (torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1) * eps
            xr = (x + r.to(x.device)).clamp(0, 1)
            with torch.no_grad():
                e0r = clean.to(x.device)(xr)
            return forward(v0, v1, x, xm, e0x[idx], xr, e0r)

        refresh = cfg.freeze_bn and cfg.bn_refresh > 0
        bn_images = train.x[torch.randperm(len(train), generator=g)[:1024]] if refresh else None

        def step_hook(m: nn.Module, step: int) -> None:
            m.ssl.momentum_step()
            if refresh and step % cfg.bn_refresh == 0:
                reestimate_batchnorm(m.ssl.encoder, bn_images)
                m.train()  # the joint module's train() keeps batch norm in eval mode

        train_cfg = TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, "adam", weight_decay=cfg.ssl.weight_decay)
        fit(joint, indexed, train_cfg, seed=key_seed(seed, MARK_STREAM), engine=engine, checkpoint=checkpoint,
            resume=resume, step_hook=step_hook, loss=loss)  # fmt: skip
        if refresh:
            reestimate_batchnorm(marked, bn_images)
        marked.eval()
        key = Key(
            "awencoder", config_dict(cfg) | {"ssl": config_dict(cfg.ssl)},
            {"delta": delta, "x_key": x_key, "verify": verify},
            {"input_shape": list(data.shape), "feature_dim": int(e0x.shape[1]), "seed": seed},
        )  # fmt: skip
        return marked, key

    def calibrate(
        self, key: Key, null_encoders: dict[str, Any], probe: tuple[ImageSet, ImageSet] | None = None, *,
        adapt_lrs: tuple[float, ...] = (1e-3, 1e-2),
    ) -> Key:  # fmt: skip
        """The key with the null margin (white-box) and null flip rate (black-box) set.

        A suspect met in the wild has usually been adapted to a downstream task, and fine-tuning
        changes how far a perturbation pulls an encoder towards the key: measured on mnist5k with
        the paper's single key draw, independent encoders fine-tuned at Adam lr 1e-3 reached
        effects of 0.15-0.37 against 0.06-0.19 before, above a margin set on them unadapted. So the
        margin is also set on every null encoder fine-tuned end to end on the probe's labelled
        training data (the ``enc-finetune`` attack, 3 epochs) at each rate in ``adapt_lrs``.

        Args:
            null_encoders: name -> an encoder trained independently of the owner's (other seeds,
                SSL methods, architectures); at least 5.
            probe: (train, test) labelled data to build each null encoder's downstream classifier
                for the black-box calibration and to fine-tune the adapted nulls; None skips both.
            adapt_lrs: Adam learning rates of the adapted nulls; () adds none.
        """
        if len(null_encoders) < 5:
            raise ConfigError(f"calibration needs at least 5 null encoders, got {len(null_encoders)}")
        pre = {name: float(effects(enc, key)[2].mean()) for name, enc in null_encoders.items()}
        means = dict(pre)
        if probe is not None:
            from ownmark.attacks.encoder_attacks import finetuned_variants

            for i, (name, enc) in enumerate(null_encoders.items()):
                for adapted, tuned in finetuned_variants(name, enc, probe[0], adapt_lrs, seed=i).items():
                    means[adapted] = float(effects(tuned, key)[2].mean())
        # the max over every null, pre-trained or adapted, plus 3 sd of the pre-trained ones: adaptation
        # can shift an encoder's effect (it must not pass the margin), while the spread between
        # independently pre-trained encoders is what the sd measures (fine-tuning mostly spreads
        # effects downwards, away from the key: counting that as spread would only widen the margin)
        null_sd = float(torch.tensor(list(pre.values())).std())
        tau = max(means.values()) + NULL_SD_FACTOR * null_sd
        meta = dict(key.meta, tau=tau, null_effects=means, null_sd=null_sd)
        if probe is not None:
            from ownmark.train.probe import linear_probe

            flips = {}
            for name, enc in null_encoders.items():
                k, n, _ = majority_moves(
                    linear_probe(enc, *probe, seed=0).classifier, key.tensors["verify"], key.tensors["delta"]
                )
                flips[name] = [k, n]
            k_all, n_all = sum(f[0] for f in flips.values()), sum(f[1] for f in flips.values())
            meta.update(null_flips=flips, p0_blackbox=upper_bound(k_all, max(n_all, 1), 0.99))
        return Key(key.scheme, key.config, key.tensors, meta)

    def detect(self, suspect: Any, key: Key, *, p0: float | None = None) -> Evidence:
        """White-box: one-sided t-test of the suspect's mean effect against the null margin tau."""
        self._check(key)
        if "tau" not in key.meta:
            raise ConfigError(
                "this AWEncoder key has no null margin; calibrate it first (AWEncoder().calibrate(key, null_encoders) "
                "or `ownmark calibrate`)"
            )
        with_mark, without, eff = effects(suspect, key)
        tau = float(key.meta["tau"])
        t, p = margin_ttest(eff.tolist(), tau)
        n = len(eff)
        return Evidence(
            "awencoder", k=int((eff > tau).sum()), n=n, p0=0.0, queries=2 * n + 1,
            details={"effect": float(eff.mean()), "effect_sd": float(eff.std()), "tau": tau,
                     "cos_marked": float(with_mark.mean()), "cos_clean": float(without.mean()),
                     "naive_paired_p": paired_wilcoxon(with_mark.tolist(), without.tolist())},
            test="one-sided t-test of the mean effect against the null margin", p_value=p, statistic=t,
            null_hypothesis=(f"the suspect is independent of the owner's encoder: its mean effect "
                             f"cos(S(x+delta), S(x_key)) - cos(S(x), S(x_key)) is at most tau = {tau:.4f}, the margin "
                             "measured on independent encoders"),
        )  # fmt: skip

    def detect_blackbox(self, suspect: Any, key: Key, *, p0: float | None = None) -> Evidence:
        """Black-box: how many images delta sends to one label, exact binomial test.

        The statistic: L* is the label the suspect gives most of the marked images; k counts the
        images not labelled L* when clean that delta moves to L*. A marked encoder maps every
        x + delta near the key image, so one label takes them all. The null rate p0 is the larger
        of the key's calibrated bound (null encoders' downstream classifiers) and the upper
        bound of the same statistic pooled over ``controls`` random sign perturbations of the
        same norm on this suspect (a perturbation any classifier confuses counts against the owner).

        Keys of the ``secret`` variant are refused: their trigger is itself a random sign pattern,
        so on an independent classifier it is one more control, and the pattern-to-pattern spread
        of these rates exceeds the binomial's (measured: a held-out null encoder was falsely
        claimed at p 1e-4; taking the worst control instead left the marked encoder unverified).
        """
        self._check(key)
        if key.config.get("trigger") == "secret":
            raise ConfigError(
                "black-box verification is not available for the secret-trigger variant (its trigger is "
                "exchangeable with the random controls); verify the encoder white-box, or mark with "
                "trigger=adversarial"
            )
        k, n, queries = majority_moves(suspect, key.tensors["verify"], key.tensors["delta"])
        g = torch.Generator().manual_seed(key_seed(int(key.meta.get("seed", 0)), CONTROL_STREAM))
        eps = float(key.tensors["delta"].abs().max())
        kc = nc = 0
        for _ in range(self.config.controls if "controls" not in key.config else int(key.config["controls"])):
            control = (torch.randint(0, 2, key.tensors["delta"].shape, generator=g).float() * 2 - 1) * eps
            ck, cn, cq = majority_moves(suspect, key.tensors["verify"], control)
            kc, nc, queries = kc + ck, nc + cn, queries + cq
        bounds = {"controls": upper_bound(kc, max(nc, 1), 0.99)}
        if p0 is not None or "p0_blackbox" in key.meta:
            bounds["null encoders"] = float(p0 if p0 is not None else key.meta["p0_blackbox"])
        source = max(bounds, key=bounds.get)
        p0 = min(max(bounds[source], 1e-6), 1 - 1e-6)
        return Evidence(
            "awencoder", k=k, n=n, p0=p0, queries=queries,
            details={"flip_rate": k / n if n else 0.0, "control_rate": kc / nc if nc else 0.0, **bounds},
            test="exact one-sided binomial (marked images sent to one label)", p_value=binomial_pvalue(k, n, p0),
            statistic=float(k),
            null_hypothesis=(f"the downstream classifier is built on an independent encoder: delta sends each image "
                             f"to the marked images' majority label with probability at most {p0:.4g} (bound from "
                             f"{source})"),
        )  # fmt: skip

    @staticmethod
    def _check(key: Key) -> None:
        if key.scheme != "awencoder":
            raise KeyMismatchError(f"this is a {key.scheme!r} key; AWEncoder verifies with an awencoder key")
        if not math.isfinite(float(key.meta.get("tau", 0.0))):
            raise KeyMismatchError("the key's null margin tau is not finite; re-calibrate it")


def _presets() -> dict[str, Preset]:
    return {
        "paper": Preset(
            AWEncoderConfig(eps=8 / 255, pgd_steps=500, epochs=50, lambda_wm=1.0, lambda_fid=1.0, lambda_neg=0.0,
                            ssl=SSLConfig(epochs=50, batch_size=256)),
            "Zhang et al. 2023 (CIFAR-scale settings; GPU); loss weights ownmark's",
        ),
        "secret": Preset(AWEncoderConfig(trigger="secret"), "ownmark's variant: a secret random sign trigger"),
        "light": Preset(AWEncoderConfig(epochs=5, lambda_wm=1.0, lambda_fid=1.0, lambda_neg=0.0, freeze_bn=False,
                                        key_image="photo", key_candidates=1),
                        "the first CPU setting measured (weaker after fine-tuning; see BENCHMARKS.md)"),
    }  # fmt: skip


AWEncoder.presets = _presets()
