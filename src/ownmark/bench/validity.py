"""The validity benchmark: do verdicts keep their promise on models made without the secret?

A verdict promises that a model made without the owner's secret is judged OWNED with probability at
most alpha (METHODS.md, "What a verdict promises"; issue 14). The benchmark measures that promise
instead of assuming it: per scheme it draws many keys by the scheme's own procedure
(``scheme.draw_key``, which draws the key ``embed`` would, without training a marked model), verifies
every key against every suspect of a null zoo (:mod:`ownmark.bench.nulls_zoo`: other seeds and
architectures, the attacker's split, fine-tuned nulls, the owner's unmarked model, constant and
label-biased answerers, surrogates distilled from the unmarked model in and out of distribution,
scikit-learn models), and collects ``decide(scheme.detect(suspect, key)).p_value``. For a valid
test the null p-values are super-uniform: their empirical CDF lies at or below the diagonal, and the
false-claim rate at alpha is at most alpha. Beside them stand the true-positive rates on models
really marked with a few keys, unattacked and fine-tuned.

Rows of one (key, suspect) pair are not independent of other rows of the same suspect (or key), so
the Clopper-Pearson bound over all pairs is a yardstick, not a proof; the report therefore also
names the worst suspect and its own claim rate over the key draws, which for a valid test is at
most alpha up to its own binomial bound (keys are independent draws for one fixed suspect).

A test may be added beside a scheme's own ``detect`` to show the benchmark catches an invalid one:
``binomial-1/K`` counts matches of the held-out triggers with their label and runs the exact
binomial against ``p0 = 1/K`` (the trigger-set evidence of the old FCW and of the baselines), which
any model that reads fused or patched images as one label defeats.

Plug points per family: :data:`ownmark.bench.nulls_zoo.ZOOS` (the suspects) and
:func:`draw_key` (the keys). Only classifiers are implemented: encoder keys (AWEncoder) need a
trained encoder per key draw unless the scheme's ``draw_key`` lands, and image-to-image keys
(deepwm) need a trained extractor per key; their zoos (SSL encoders of other seeds and methods,
independently trained image-to-image targets) exist in :mod:`ownmark.bench.families` as the
matrix's null specs and can be plugged in the same way.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

ALPHAS = (1e-3, 1e-2, 5e-2)
OWN_TEST = "detect"
INVALID_TEST = "binomial-1/K"
Row = dict[str, Any]


def draw_key(scheme: Any, model: nn.Module, data: Any, *, seed: int) -> Key:
    """The key ``scheme.embed(model, data, seed=seed)`` would make, without training a marked model.

    Uses the scheme's ``draw_key``; trigger-set baselines that lack it fall back to their
    ``make_triggers`` (the same tensors and meta ``embed`` stores). Other schemes raise ConfigError.
    """
    if hasattr(scheme, "draw_key"):
        return scheme.draw_key(model, data, seed=seed)
    from ownmark.watermarks.base import config_dict
    from ownmark.watermarks.baselines import TriggerSetBaseline

    if isinstance(scheme, TriggerSetBaseline):
        trig, target = scheme.make_triggers(data, seed=seed)
        meta = {
            "num_classes": data.num_classes,
            "input_shape": list(data.shape),
            "dataset": data.name,
            "target": target,
        }
        return Key(scheme.name, config_dict(scheme.config), trig, meta)
    raise ConfigError(f"{type(scheme).__name__} has no draw_key; the validity bench cannot redraw its keys cheaply")


def binomial_one_over_k(scheme: Any, suspect: Any, key: Key) -> Evidence:
    """The deliberately invalid test: held-out triggers answered with their label, exact binomial
    against ``p0 = 1/K`` (counts images of one model as independent evidence)."""
    from ownmark.verify import LabelOracle
    from ownmark.watermarks.triggers import count_matches

    if "verify_x" not in key.tensors or "verify_y" not in key.tensors:
        raise ConfigError(f"{INVALID_TEST} needs a trigger-set key (verify_x, verify_y); {key.scheme} keys have none")
    num_classes = int(key.meta["num_classes"])
    oracle = LabelOracle(suspect, num_classes=num_classes)
    k = count_matches(oracle, key.tensors["verify_x"], key.tensors["verify_y"])
    return Evidence(key.scheme, k=k, n=len(key.tensors["verify_x"]), p0=1 / num_classes, queries=oracle.queries)


TESTS = {OWN_TEST: lambda scheme, suspect, key: scheme.detect(suspect, key), INVALID_TEST: binomial_one_over_k}


@dataclass(frozen=True)
class ValiditySettings:
    """What one validity run measures.

    Attributes:
        schemes: scheme label -> ``{"scheme": registry name (default: the label), "preset": ...,
            "set": {field: value}}``. The CPU default shrinks the expensive verification sets (FCW's
            pool, PTYNet's decoys) so 200 keys x 24 suspects finish in time; the validity of a rank
            test does not depend on these sizes, only its power and smallest p do.
        tests: scheme label -> extra tests run beside its own ``detect`` (e.g. ``binomial-1/K``).
        n_keys: key draws per scheme, seeds ``key_seed0 + i``.
        zoo: ``default`` (24 suspects) or ``tiny`` (8).
        marked_seeds: keys really embedded (the true-positive rate); ``attack``: the attack run on
            each marked model (``none`` to skip).
        clean_epochs: training epochs of the owner's model and of the trained suspects.
    """

    dataset: str = "mnist5k"
    split_seed: int = 0
    arch: str = "lenet"
    owner_seed: int = 0
    schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests: dict[str, tuple[str, ...]] = field(default_factory=dict)
    n_keys: int = 200
    key_seed0: int = 10_000
    zoo: str = "default"
    marked_seeds: tuple[int, ...] = (0, 1)
    attack: str = "ftal"
    clean_epochs: int = 10
    alphas: tuple[float, ...] = ALPHAS

    def __post_init__(self) -> None:
        if not isinstance(self.n_keys, int) or self.n_keys < 1:
            raise ConfigError(f"ValiditySettings.n_keys must be a positive int, got {self.n_keys!r}")
        for label, tests in self.tests.items():
            unknown = set(tests) - set(TESTS)
            if unknown:
                raise ConfigError(f"unknown tests {sorted(unknown)} for {label!r}; known: {sorted(TESTS)}")


CLASSIFIER_SCHEMES: dict[str, dict[str, Any]] = {
    "fcw": {"set": {"n_verify": 10}},  # 90 fused pairs x 10 = 900 queries per verdict
    "content": {},
    "noise": {},
    "unrelated": {},
    "ptynet": {"set": {"n_verify": 20, "n_decoys": 99}},  # 100 candidates x 20 queries
}
PRESETS: dict[str, ValiditySettings] = {
    "default": ValiditySettings(schemes=CLASSIFIER_SCHEMES, tests={"fcw": (INVALID_TEST,)}),
    "tiny": ValiditySettings(
        schemes={"fcw": {"set": {"n_verify": 5, "n_embed": 20, "epochs": 3}}},
        tests={"fcw": (INVALID_TEST,)},
        n_keys=24,
        zoo="tiny",
        marked_seeds=(0,),
        attack="none",
        clean_epochs=3,
    ),
}


@dataclass
class ValidityReport:
    """Everything a run measured: rows, their summary per (scheme, test), errors and files."""

    rows: list[Row]
    summary: list[Row]
    errors: dict[str, str]
    seconds: dict[str, float]
    files: dict[str, str]
    settings: dict[str, Any]


def run_validity(
    workdir: str | Path,
    *,
    preset: str = "default",
    schemes: list[str] | None = None,
    n_keys: int | None = None,
    family: str = "classifier",
) -> ValidityReport:
    """Run the validity benchmark and write its rows, summary, ECDF figure and markdown section.

    Trained models (owner, suspects, marked models) and finished (scheme, test, suspect) row groups
    are cached under ``workdir``, so an interrupted run resumes where it stopped.

    Args:
        workdir: output and cache folder; writes ``validity-rows.json``, ``validity-rows.csv``,
            ``validity-summary.json``, ``validity-ecdf.png`` and ``validity.md``.
        preset: a key of :data:`PRESETS` (``default``: 200 keys x 24 suspects per scheme).
        schemes: run only these scheme labels of the preset.
        n_keys: override the preset's key draws per scheme.
        family: only ``classifier`` is implemented.
    """
    if family != "classifier":
        raise ConfigError(f"the validity bench implements the classifier family only, got {family!r}")
    if preset not in PRESETS:
        raise UnknownNameError(f"no validity preset {preset!r}; known: {sorted(PRESETS)}")
    settings = PRESETS[preset]
    if schemes is not None:
        unknown = set(schemes) - set(settings.schemes)
        if unknown:
            raise ConfigError(
                f"schemes {sorted(unknown)} are not in preset {preset!r}; known: {sorted(settings.schemes)}"
            )
        settings = replace(settings, schemes={s: settings.schemes[s] for s in schemes})
    if n_keys is not None:
        settings = replace(settings, n_keys=n_keys)
    return measure(settings, Path(workdir))


def measure(settings: ValiditySettings, workdir: Path) -> ValidityReport:
    """:func:`run_validity` on explicit settings."""
    from ownmark.bench.experiment import CLEAN_TRAINING, Context, train_model
    from ownmark.bench.nulls_zoo import build_classifier_zoo, classifier_specs

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ctx = Context.load(settings.dataset, settings.split_seed)
    training = replace(CLEAN_TRAINING, epochs=settings.clean_epochs)
    models = workdir / "models"
    owner = _cached_model(
        models / "owner-clean",
        lambda: train_model(ctx.spec(settings.arch), ctx.splits.owner, seed=settings.owner_seed, config=training),
    )
    zoo = build_classifier_zoo(
        ctx, owner, classifier_specs(settings.arch, size=settings.zoo), models / "zoo", training=training
    )
    kinds = {s.name: s.kind for s in classifier_specs(settings.arch, size=settings.zoo)}
    seconds["models"] = time.perf_counter() - start
    rows: list[Row] = []
    errors: dict[str, str] = {}
    for label, spec in settings.schemes.items():
        t0 = time.perf_counter()
        try:
            rows += _scheme_rows(settings, label, spec, ctx, owner, zoo, kinds, workdir)
        except Exception as err:  # a scheme in flux must not sink the others; the report names it
            log.exception("validity: scheme %s failed", label)
            errors[label] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        seconds[label] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    summary = summarise(rows, settings.alphas)
    files = write_outputs(workdir, rows, summary, settings, errors, seconds)
    return ValidityReport(rows, summary, errors, seconds, files, _settings_dict(settings))


def _settings_dict(settings: ValiditySettings) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def _cached_model(path: Path, build) -> nn.Module:
    from ownmark.io import artefact_paths
    from ownmark.models import load_model, save_model

    if artefact_paths(path)[1].is_file():
        return load_model(path)[0]
    model = build().eval()
    save_model(path, model, info={"validity": path.name})
    return model


def make_scheme(spec: dict[str, Any], label: str) -> Any:
    """The scheme object a settings entry describes."""
    from ownmark.watermarks import WATERMARKS, resolve_config

    cls = WATERMARKS.get(spec.get("scheme", label))
    if getattr(cls, "family", "classifier") != "classifier":
        raise ConfigError(f"scheme {label!r} is of family {cls.family!r}; the validity bench runs classifiers only")
    return cls(resolve_config(cls, spec.get("preset"), spec.get("set", {})))


def fingerprint(scheme: Any, n_keys: int, key_seed0: int) -> str:
    """What a cached row group depends on: the scheme's config and source code, and the key draws."""
    from ownmark.watermarks.base import config_dict

    source = inspect.getsource(inspect.getmodule(type(scheme)))
    text = f"{type(scheme).__name__}|{sorted(config_dict(scheme.config).items())}|{n_keys}|{key_seed0}|{source}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _scheme_rows(
    settings: ValiditySettings,
    label: str,
    spec: dict[str, Any],
    ctx: Any,
    owner: nn.Module,
    zoo: dict[str, Any],
    kinds: dict[str, str],
    workdir: Path,
) -> list[Row]:
    from ownmark.io import load_json, save_json

    scheme = make_scheme(spec, label)
    seeds = [settings.key_seed0 + i for i in range(settings.n_keys)]
    keys = [draw_key(scheme, owner, ctx.splits.owner, seed=s) for s in seeds]
    stamp = fingerprint(scheme, settings.n_keys, settings.key_seed0)
    rows: list[Row] = []
    for test in (OWN_TEST, *settings.tests.get(label, ())):
        for name, suspect in zoo.items():
            path = workdir / "rows" / label / test.replace("/", "_") / f"{name}.json"
            if path.is_file() and (cached := load_json(path)).get("fingerprint") == stamp:
                rows += cached["rows"]
                continue
            group = [
                _verify(
                    scheme,
                    TESTS[test],
                    suspect,
                    key,
                    base={
                        "family": "classifier",
                        "scheme": label,
                        "test": test,
                        "role": "null",
                        "suspect": name,
                        "kind": kinds[name],
                        "key_seed": seed,
                    },
                )
                for seed, key in zip(seeds, keys, strict=True)
            ]
            save_json(path, {"fingerprint": stamp, "rows": group})
            rows += group
        rows += _marked_rows(settings, label, scheme, test, ctx, owner, keys[0], workdir, stamp)
    return rows


def _verify(scheme: Any, test, suspect: Any, key: Key, *, base: Row) -> Row:
    from ownmark.verify import decide

    t0 = time.perf_counter()
    verdict = decide(test(scheme, suspect, key), 0.01)
    return {
        **base,
        "p_value": verdict.p_value,
        "smallest_p": verdict.smallest_p,
        "statistic": verdict.statistic,
        "queries": verdict.queries,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _marked_rows(
    settings: ValiditySettings,
    label: str,
    scheme: Any,
    test: str,
    ctx: Any,
    owner: nn.Module,
    probe: Key,
    workdir: Path,
    stamp: str,
) -> list[Row]:
    """Rows of models really marked with ``marked_seeds``' keys, unattacked and attacked."""
    from ownmark.io import artefact_paths, key_digest, load_json, load_key, save_json, save_key
    from ownmark.models import load_model, save_model

    rows = []
    for seed in settings.marked_seeds:
        path = workdir / "rows" / label / test.replace("/", "_") / f"marked-seed{seed}.json"
        if path.is_file() and (cached := load_json(path)).get("fingerprint") == stamp:
            rows += cached["rows"]
            continue
        base = workdir / "models" / f"marked-{label}-seed{seed}"
        if artefact_paths(base.with_name(base.name + "-key"))[1].is_file():
            marked, key = load_model(base)[0], load_key(base.with_name(base.name + "-key"))
        else:
            marked, key = scheme.embed(owner, ctx.splits.owner, seed=seed)
            save_model(base, marked.eval(), info={"scheme": label, "seed": seed})
            save_key(base.with_name(base.name + "-key"), key)
        drawn = draw_key(scheme, owner, ctx.splits.owner, seed=seed)
        same = all(torch.equal(drawn.tensors[n], key.tensors[n]) for n in drawn.tensors if n in key.tensors)
        info = {
            "family": "classifier",
            "scheme": label,
            "test": test,
            "key_seed": seed,
            "kind": "marked",
            "draw_key_matches_embed": same,
            "key_digest": key_digest(key)[:16],
        }
        group = [_verify(scheme, TESTS[test], marked.eval(), key, base={**info, "role": "marked", "suspect": "marked"})]
        if settings.attack != "none":
            attacked = _attacked(settings.attack, marked, ctx, seed, base.with_name(base.name + f"-{settings.attack}"))
            group.append(
                _verify(
                    scheme,
                    TESTS[test],
                    attacked,
                    key,
                    base={**info, "role": "attacked", "suspect": f"marked+{settings.attack}"},
                )
            )
        save_json(path, {"fingerprint": stamp, "rows": group})
        rows += group
    return rows


def _attacked(name: str, marked: nn.Module, ctx: Any, seed: int, path: Path) -> nn.Module:
    """``ftal`` is the zoo's own all-layer fine-tuning (the attack's defaults, no registry import);
    any other name is an attack of ``ownmark.attacks`` at its default config."""
    if name == "ftal":
        from ownmark.bench.nulls_zoo import fine_tuned

        return _cached_model(path, lambda: fine_tuned(marked, ctx.splits.attacker, seed=seed))
    from ownmark.attacks import ATTACKS

    cls = ATTACKS.get(name)
    return _cached_model(path, lambda: cls()(marked, ctx.splits.attacker, seed=seed)[0])


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial rate ``k / n``.

    Example:
        >>> lo, hi = clopper_pearson(0, 200)
        >>> lo, round(hi, 4)
        (0.0, 0.0183)
    """
    from scipy.stats import beta

    if n == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return lo, hi


def reaches(p: float, alpha: float) -> bool:
    from ownmark.verify.tests import reaches as _reaches

    return _reaches(p, alpha)


def summarise(rows: list[Row], alphas: tuple[float, ...] = ALPHAS) -> list[Row]:
    """Per (scheme, test): null rows, false claims and their rate with the 95% Clopper-Pearson
    interval at each alpha, the worst suspect's own rate, the smallest p-value, the true-positive
    rates on marked and attacked models, and ``valid``: no alpha whose interval lies above alpha.

    Example:
        >>> rows = [{"scheme": "s", "test": "t", "role": "null", "suspect": "a", "p_value": p, "smallest_p": 0.01}
        ...         for p in (0.5, 0.02, 0.9, 0.3)]
        >>> s = summarise(rows, (0.01,))[0]
        >>> s["nulls"], s["claims@0.01"], s["valid"]
        (4, 0, True)
    """
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row["scheme"], row["test"])].append(row)
    out = []
    for (scheme, test), group in groups.items():
        nulls = [r for r in group if r["role"] == "null"]
        entry: Row = {
            "scheme": scheme,
            "test": test,
            "nulls": len(nulls),
            "keys": len({r.get("key_seed") for r in nulls}),
            "suspects": len({r["suspect"] for r in nulls}),
        }
        smallest = [r["smallest_p"] for r in group if r.get("smallest_p") is not None]
        entry["smallest_p"] = min(smallest) if smallest else None
        entry["min_null_p"] = min((r["p_value"] for r in nulls), default=None)
        valid = True
        for alpha in alphas:
            k = sum(reaches(r["p_value"], alpha) for r in nulls)
            lo, hi = clopper_pearson(k, len(nulls))
            per_suspect: dict[str, list[bool]] = defaultdict(list)
            for r in nulls:
                per_suspect[r["suspect"]].append(reaches(r["p_value"], alpha))
            worst = max(per_suspect.items(), key=lambda kv: (sum(kv[1]) / len(kv[1]), kv[0]), default=("", []))
            worst_k = sum(worst[1])
            worst_lo = clopper_pearson(worst_k, len(worst[1]))[0] if worst[1] else 0.0
            entry |= {
                f"claims@{alpha:g}": k,
                f"rate@{alpha:g}": k / len(nulls) if nulls else math.nan,
                f"upper@{alpha:g}": hi,
                f"lower@{alpha:g}": lo,
                f"worst@{alpha:g}": worst[0],
                f"worst_rate@{alpha:g}": worst_k / len(worst[1]) if worst[1] else math.nan,
            }
            valid &= lo <= alpha and worst_lo <= alpha
            for role in ("marked", "attacked"):
                pos = [r for r in group if r["role"] == role]
                entry[f"tpr_{role}@{alpha:g}"] = (
                    sum(reaches(r["p_value"], alpha) for r in pos) / len(pos) if pos else None
                )
        entry["valid"] = valid
        entry["max_ecdf_excess"] = ecdf_excess([r["p_value"] for r in nulls])
        out.append(entry)
    return out


def ecdf_excess(pvalues: list[float]) -> float:
    """``max_p (ECDF(p) - p)`` over the observed p-values: how far the null p-values' empirical CDF
    rises above the diagonal (0 or below for a super-uniform sample, up to sampling noise).

    Example:
        >>> ecdf_excess([0.001, 0.001, 0.5, 0.9])
        0.499
    """
    p = sorted(float(v) for v in pvalues)
    if not p:
        return math.nan
    n = len(p)
    best = -math.inf
    for i, v in enumerate(p):
        if i + 1 < n and p[i + 1] == v:
            continue  # the ECDF at v counts every tie
        best = max(best, (i + 1) / n - v)
    return round(best, 6)


def ecdf_figure(rows: list[Row]) -> bytes:
    """PNG: empirical CDF of the null p-values per (scheme, test) against the diagonal, log-log."""
    from matplotlib.figure import Figure

    from ownmark.bench.plots import to_png

    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["role"] == "null":
            groups[f"{row['scheme']} / {row['test']}"].append(max(float(row["p_value"]), 1e-6))
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    grid = [10 ** (-6 + 6 * i / 200) for i in range(201)]
    ax.plot(grid, grid, color="black", lw=1, ls="--", label="diagonal (valid: at or below)")
    for name, ps in sorted(groups.items()):
        ps.sort()
        n = len(ps)
        ys = [(i + 1) / n for i in range(n)]
        ax.step(ps, ys, where="post", lw=1.3, label=f"{name} (n={n})")
    for alpha in ALPHAS:
        ax.axvline(alpha, color="grey", lw=0.6, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(1e-6, 1),
        ylim=(1e-4, 1.05),
        xlabel="p",
        ylabel="share of null p-values <= p",
        title="Null p-values over key draws x suspects",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return to_png(fig)


def validity_section(
    summary: list[Row],
    *,
    seconds: dict[str, float] | None = None,
    errors: dict[str, str] | None = None,
    alphas: tuple[float, ...] = ALPHAS,
) -> str:
    """Markdown: false-claim rates at each alpha with 95% upper bounds, beside the true-positive rates.

    Example:
        >>> s = [{"scheme": "fcw", "test": "detect", "nulls": 10, "keys": 5, "suspects": 2, "smallest_p": 0.001,
        ...       "valid": True, "max_ecdf_excess": 0.0, **{f"{k}@0.01": v for k, v in (("claims", 0),
        ...       ("rate", 0.0), ("upper", 0.3), ("worst", "a"), ("worst_rate", 0.0), ("tpr_marked", 1.0),
        ...       ("tpr_attacked", None))}}]
        >>> "| fcw | detect | 5 x 2 |" in validity_section(s, alphas=(0.01,))
        True
    """
    head = " | ".join(f"false claims @ {a:g} (95% upper)" for a in alphas)
    tpr = " | ".join(f"TPR @ {a:g} marked / attacked" for a in alphas)
    lines = [
        "## Validity: verdicts on models made without the secret",
        "",
        "Null p-values of each scheme's test over key draws (`draw_key`) x suspects made without the secret "
        "(`ownmark.bench.nulls_zoo`). A valid test is claimed at most alpha of the time; `valid` fails when the "
        "95% Clopper-Pearson interval of the overall or of the worst suspect's false-claim rate lies above alpha.",
        "",
        f"| scheme | test | keys x suspects | smallest p | {head} | worst suspect @ 0.01 | {tpr} "
        "| ECDF excess | valid |",
        "|" + "---|" * (7 + 2 * len(alphas)),
    ]
    for s in summary:
        claims = " | ".join(f"{s[f'claims@{a:g}']}/{s['nulls']} ({_pct(s[f'upper@{a:g}'])})" for a in alphas)
        rates = " | ".join(
            f"{_share(s.get(f'tpr_marked@{a:g}'))} / {_share(s.get(f'tpr_attacked@{a:g}'))}" for a in alphas
        )
        worst = f"{s.get('worst@0.01', '')} ({_share(s.get('worst_rate@0.01'))})" if "worst@0.01" in s else "-"
        small = f"{s['smallest_p']:.2g}" if s.get("smallest_p") is not None else "-"
        lines.append(
            f"| {s['scheme']} | {s['test']} | {s['keys']} x {s['suspects']} | {small} | {claims} | "
            f"{worst} | {rates} | {s['max_ecdf_excess']:.3g} | {'yes' if s['valid'] else '**no**'} |"
        )
    for label, err in (errors or {}).items():
        lines.append(f"\n- {label}: not measured ({err})")
    if seconds:
        lines.append("\nWall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"<= {100 * x:.2g}%"


def _share(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def rows_csv(rows: list[Row]) -> str:
    """All rows as CSV text (columns: the union of the rows' keys, in first-seen order)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(
    workdir: Path,
    rows: list[Row],
    summary: list[Row],
    settings: ValiditySettings,
    errors: dict[str, str],
    seconds: dict[str, float],
) -> dict[str, str]:
    """Write rows (JSON and CSV), the summary, the ECDF figure and the markdown section, atomically."""
    from ownmark.io import atomic_write_bytes, atomic_write_text, save_json

    files = {
        name: str(workdir / name)
        for name in (
            "validity-rows.json",
            "validity-rows.csv",
            "validity-summary.json",
            "validity-ecdf.png",
            "validity.md",
        )
    }
    save_json(workdir / "validity-rows.json", rows)
    atomic_write_text(workdir / "validity-rows.csv", rows_csv(rows))
    save_json(
        workdir / "validity-summary.json",
        {"summary": summary, "errors": errors, "seconds": seconds, "settings": _settings_dict(settings)},
    )
    atomic_write_bytes(workdir / "validity-ecdf.png", ecdf_figure(rows))
    atomic_write_text(
        workdir / "validity.md", validity_section(summary, seconds=seconds, errors=errors, alphas=settings.alphas)
    )
    return files
