"""The validity benchmark's report: false-claim rates with Clopper-Pearson bounds, the empirical CDF
of null p-values against the diagonal, the markdown section, and the rows as JSON and CSV.

Rows come from :mod:`ownmark.bench.studies.validity`: one per (scheme, test, key draw, suspect), with
``role`` ``null`` (a suspect made without the secret), ``marked`` or ``attacked``, and ``p_value``.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

ALPHAS = (1e-3, 1e-2, 5e-2)
Row = dict[str, Any]


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

    ``valid`` controls its own false alarms: it makes one check per alpha of the overall rate and
    of every suspect's rate (the worst decides), so each lower bound is taken at the Bonferroni level
    0.05 / (alphas x (suspects + 1)). Without that, an exact test (each suspect claimed exactly alpha
    of the time) would be flagged about 40% of the time at each alpha with 24 suspects x 200 keys,
    since the worst of 24 binomial rates lies above alpha by chance that often.

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
        smallest = [r["smallest_p"] for r in nulls if r.get("smallest_p") is not None]
        entry["smallest_p"] = min(smallest) if smallest else None
        entry["min_null_p"] = min((r["p_value"] for r in nulls), default=None)
        valid = True
        checks = len(alphas) * (len({r["suspect"] for r in nulls}) + 1)
        strict = 1 - 2 * 0.05 / checks  # two-sided level whose lower tail is 0.05 / checks
        for alpha in alphas:
            k = sum(reaches(r["p_value"], alpha) for r in nulls)
            lo, hi = clopper_pearson(k, len(nulls))
            per_suspect: dict[str, list[bool]] = defaultdict(list)
            for r in nulls:
                per_suspect[r["suspect"]].append(reaches(r["p_value"], alpha))
            worst = max(per_suspect.items(), key=lambda kv: (sum(kv[1]) / len(kv[1]), kv[0]), default=("", []))
            worst_k = sum(worst[1])
            worst_lo = clopper_pearson(worst_k, len(worst[1]), strict)[0] if worst[1] else 0.0
            entry |= {
                f"claims@{alpha:g}": k,
                f"rate@{alpha:g}": k / len(nulls) if nulls else math.nan,
                f"upper@{alpha:g}": hi,
                f"lower@{alpha:g}": lo,
                f"worst@{alpha:g}": worst[0],
                f"worst_rate@{alpha:g}": worst_k / len(worst[1]) if worst[1] else math.nan,
            }
            valid &= clopper_pearson(k, len(nulls), strict)[0] <= alpha and worst_lo <= alpha
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

    from ownmark.bench.report.plots import to_png

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
    workers: int | None = None,
    errors: dict[str, str] | None = None,
    alphas: tuple[float, ...] = ALPHAS,
    family: str = "classifier",
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
        f"## Validity ({_PLURAL.get(family, family + 's')}): verdicts on models made without the secret",
        "",
        "Null p-values of each scheme's test over key draws (`draw_key`) x suspects made without the secret "
        "(`ownmark.bench.studies.nulls_zoo`, `ownmark.bench.studies.validity_families`). A valid test is claimed at "
        "most alpha "
        "of the time; `valid` fails when the "
        "Clopper-Pearson interval of the overall or of the worst suspect's false-claim rate lies above alpha (lower "
        "bounds at a Bonferroni level over alphas x suspects, so an exact test is flagged at most 5% of the time). "
        "Null rows may verify with reduced sets (fewer decoys or triggers: a rank test stays valid at any size, "
        "only its smallest possible p rises); the true-positive rates (TPR) are of models really marked, verified "
        "at the scheme's own sizes, unattacked and after the preset's attack.",
        "",
        f"| scheme | test | keys x suspects | smallest possible null p | {head} | worst suspect @ 0.01 | {tpr} "
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
        run = {k: v for k, v in seconds.items() if k in _RUN_TIMES}
        per = {k: v for k, v in seconds.items() if k not in _RUN_TIMES}
        text = ", ".join(f"{k} {v:.0f}" for k, v in run.items())
        lines.append(f"\nTime of this run (s{', ' + str(workers) + ' workers' if workers else ''}): {text}.")
        if per:
            lines.append(
                "Compute per scheme as first measured, summed over its row groups (s): "
                + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
                + "."
            )
    return "\n".join(lines) + "\n"


_PLURAL = {"image2image": "image-to-image networks"}
_RUN_TIMES = ("models", "keys", "wall", "cpu")


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
    settings: dict[str, Any],
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
        {"summary": summary, "errors": errors, "seconds": seconds, "settings": settings},
    )
    atomic_write_bytes(workdir / "validity-ecdf.png", ecdf_figure(rows))
    alphas = tuple(settings.get("alphas", ALPHAS))
    section = validity_section(
        summary, seconds=seconds, errors=errors, alphas=alphas, family=settings.get("family", "classifier"),
        workers=settings.get("workers"),
    )  # fmt: skip
    atomic_write_text(workdir / "validity.md", section)
    return files
