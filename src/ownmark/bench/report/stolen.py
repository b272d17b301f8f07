"""The StolenEncoder bench's report: must-hold checks, Markdown tables and figures.

Inputs are the results dictionary of :func:`ownmark.bench.studies.stolen.run_stolen_bench` (accuracies
as fractions, drawn and printed in percent).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ownmark.bench.report.plots import to_png

Results = dict[str, Any]


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _ms(values: list[float], pct: bool = True) -> str:
    """'mean ± sd' of fractions, in percent unless ``pct`` is False."""
    scale = 100 if pct else 1
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * _mean(values):.1f} ± {scale * sd:.1f}" if pct else f"{_mean(values):.3f} ± {sd:.3f}"


def _col(results: Results, *path: str) -> list[float]:
    out = []
    for row in results["seeds"]:
        value: Any = row
        for part in path:
            value = value[part]
        out.append(float(value))
    return out


def queries_to_reach(results: Results, share: float = 0.9) -> dict[str, Any] | None:
    """Smallest budget (first seed) whose SA reaches ``share`` x TA on both probes; None if none does."""
    first = results["seeds"][0]
    points = [*results["budget_curve"], {"budget": first["queries"], "query_fraction": first["query_fraction"],
                                         "sa": first["sa"]}]  # fmt: skip
    for point in sorted(points, key=lambda p: p["budget"]):
        if all(point["sa"][p] >= share * first["ta"][p] for p in ("full", "few")):
            return point
    return None


def checks(results: Results) -> list[dict[str, Any]]:
    """The issue's must-holds, each with the measured value and whether it holds (means over seeds)."""
    ta_few, px_few = _mean(_col(results, "ta", "few")), _mean([p["few"] for p in results["pixels"].values()])
    out = [{"name": "target beats raw pixels (few-shot)", "value": f"TA {100 * ta_few:.1f} vs pixels "
            f"{100 * px_few:.1f}", "holds": ta_few > px_few}]  # fmt: skip
    for p in ("full", "few"):
        ratio = _mean([s / t for s, t in zip(_col(results, "sa", p), _col(results, "ta", p), strict=True)])
        rec = _mean(_col(results, f"recovered_{p}"))
        out.append({"name": f"SA >= 0.9 TA ({p})", "value": f"SA/TA {ratio:.3f}", "holds": ratio >= 0.9})
        out.append({"name": f"(SA-RA)/(TA-RA) >= 0.85 ({p})", "value": f"{rec:.3f}", "holds": rec >= 0.85})
    for p in ("full", "few"):
        sa, sa0, pa = (
            _mean(_col(results, "sa", p)),
            _mean(_col(results, "sa_lambda0", p)),
            _mean(_col(results, "pa", p)),
        )
        out.append({"name": f"lambda 20 beats lambda 0 ({p})", "value": f"{100 * sa:.1f} vs {100 * sa0:.1f}",
                    "holds": sa > sa0})  # fmt: skip
        out.append({"name": f"PA < SA ({p})", "value": f"PA {100 * pa:.1f} vs SA {100 * sa:.1f}", "holds": pa < sa})
    fraction = results["seeds"][0]["query_fraction"]
    budget = results["config"]["attack"]["budget"]
    exact = all(r["queries"] == budget for r in results["defenses"]) and all(
        r["queries"] == budget for r in results["seeds"]
    )
    out.append({"name": "queries <= 10% of the pre-training set", "value": f"{100 * fraction:.1f}%",
                "holds": fraction <= 0.10})  # fmt: skip
    out.append({"name": "budget exact (queries answered == budget, every run)", "value": str(budget), "holds": exact})
    families = defaultdict(set)
    for r in results["defenses"]:
        if r["defense"] != "none":
            families[r["defense"].split(":")[0]].add(r["defense"])
    counts = ", ".join(f"{k} {len(v)}" for k, v in sorted(families.items()))
    out.append({"name": ">= 3 strengths per defense", "value": counts,
                "holds": len(families) == 3 and all(len(v) >= 3 for v in families.values())})  # fmt: skip
    return out


def tradeoff_png(results: Results) -> bytes:
    """SA under each defense against the legitimate users' accuracy, full and few-shot panels."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    rows = results["defenses"]
    none = [r for r in rows if r["defense"] == "none"]
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["defense"] != "none":
            by_family[r["defense"].split(":")[0]].append(r)
    for ax, p in zip(axes, ("full", "few"), strict=True):
        for i, (family, frows) in enumerate(sorted(by_family.items())):
            xs, ys = [100 * r["legit"][p] for r in frows], [100 * r["sa"][p] for r in frows]
            ax.plot(xs, ys, "o-", color=f"C{i}", label=family)
            for r, x, y in zip(frows, xs, ys, strict=True):
                ax.annotate(
                    r["defense"].split(":", 1)[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        for r in none:
            ax.plot([100 * r["legit"][p]], [100 * r["sa"][p]], "k*", markersize=10, label="no defense")
        lo = min(min(100 * r["legit"][p], 100 * r["sa"][p]) for r in rows) - 2
        ax.plot([lo, 100], [lo, 100], ":", color="grey", linewidth=1)
        ax.set(xlabel=f"legitimate users' accuracy, {p} probe (%)", ylabel="stolen encoder's accuracy SA (%)",
               title=f"{p} linear probe" if p == "full" else "few-shot probe (10 per class)")  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return to_png(fig)


def budget_png(results: Results) -> bytes:
    """SA (first seed) against queries as a share of the pre-training set, with TA and 0.9 TA."""
    first = results["seeds"][0]
    points = sorted([*results["budget_curve"], {"query_fraction": first["query_fraction"], "sa": first["sa"]}],
                    key=lambda r: r["query_fraction"])  # fmt: skip
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for i, p in enumerate(("full", "few")):
        xs = [100 * r["query_fraction"] for r in points]
        ax.plot(xs, [100 * r["sa"][p] for r in points], "o-", color=f"C{i}", label=f"SA {p}")
        ax.axhline(100 * first["ta"][p], color=f"C{i}", linestyle="--", linewidth=1, label=f"TA {p}")
        ax.axhline(90 * first["ta"][p], color=f"C{i}", linestyle=":", linewidth=1, label=f"0.9 TA {p}")
    ax.set(xlabel="queries (% of the pre-training set)", ylabel="downstream accuracy (%)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return to_png(fig)


def headline_table(results: Results) -> list[str]:
    """Mean ± sd over seeds of every feature source on both probes."""
    rows = [("target (TA)", "ta"), ("stolen, lambda 20 (SA)", "sa"), ("stolen, lambda 0", "sa_lambda0"),
            ("pre-trained on the surrogate images (PA)", "pa"), ("random encoder (RA)", "ra")]  # fmt: skip
    lines = ["| features | full linear probe (%) | few-shot, 10 per class (%) |", "|---|---|---|"]
    for label, name in rows:
        lines.append(f"| {label} | {_ms(_col(results, name, 'full'))} | {_ms(_col(results, name, 'few'))} |")
    px = list(results["pixels"].values())
    lines.append(f"| raw pixels | {_ms([p['full'] for p in px])} | {_ms([p['few'] for p in px])} |")
    return lines


def _theft_lines(results: Results) -> list[str]:
    seeds = results["seeds"]
    return [
        "- Share of the target's gain recovered, (SA - RA) / (TA - RA): full "
        f"{_ms(_col(results, 'recovered_full'), False)}, few-shot {_ms(_col(results, 'recovered_few'), False)}.",
        f"- Agreement of the downstream classifiers on target vs stolen features (test images): full "
        f"{_ms(_col(results, 'agreement_full'))}%, few-shot {_ms(_col(results, 'agreement_few'))}%.",
        f"- Feature similarity: linear CKA {_ms(_col(results, 'cka'), False)} (raw mean cosine "
        f"{_ms(_col(results, 'cosine'), False)}, inflated by the direction all ReLU + pooling features share).",
        f"- Queries: {seeds[0]['queries']} images = {100 * seeds[0]['query_fraction']:.0f}% of the "
        f"{results['owner_size']}-image pre-training set (the owner's part); augmented views cost no queries.",
        f"- Compute: attack {_ms([r['attack_seconds'] for r in seeds], False)} s vs pre-training "
        f"{_ms([r['pretrain_seconds'] for r in seeds], False)} s = {_ms(_col(results, 'compute_fraction'), False)} of "
        f"pre-training wall time; {_mean(_col(results, 'pass_fraction')):.3f} of its image passes.",
    ]  # fmt: skip


def _defense_table(results: Results) -> list[str]:
    scale = results["feature_scale"]
    lines = [
        f"Noise std is relative to each answer's RMS ({scale['rms']:.3f} for the target's features); the "
        f"features' own spread across images is {scale['spread']:.3f} per component, so `noise:0.25` is already "
        f"about {0.25 * scale['rms'] / scale['spread']:.1f}x that spread. Rounding is to decimals of the raw "
        "features (in [0, 1.3] here); top-k keeps k of 128 entries.",
        "",
        "| defense | legit full (%) | legit few (%) | SA full (%) | SA few (%) |",
        "|---|---|---|---|---|",
    ]
    for r in results["defenses"]:
        cells = [r["legit"]["full"], r["legit"]["few"], r["sa"]["full"], r["sa"]["few"]]
        lines.append(f"| `{r['defense']}` (seed {r['seed']}) | " + " | ".join(f"{100 * v:.1f}" for v in cells) + " |")
    return lines


def _watermark_lines(results: Results) -> list[str]:
    wm = results.get("watermark")
    if wm is None:
        return ["Not run in this bench (watermark=False)."]
    lines = [
        f"AWEncoder (default config) embedded in the seed-{results['seeds'][0]['seed']} target, calibrated on "
        f"{results['config']['nulls']} independent encoders (tau {wm['tau']:.4f}, black-box p0 "
        f"{wm['p0_blackbox']:.4f}), then stolen with {wm['queries']} queries. Utility: marked "
        f"{100 * wm['utility']['marked']['full']:.1f}/{100 * wm['utility']['marked']['few']:.1f}%, stolen "
        f"{100 * wm['utility']['stolen']['full']:.1f}/{100 * wm['utility']['stolen']['few']:.1f}% (full/few-shot).",
        "",
        "| suspect | white-box effect | p | verdict | black-box flip rate | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("marked", "stolen from marked", "stolen from unmarked"):
        w, b = wm[name]["white_box"], wm[name]["black_box"]
        verdicts = ["owned" if v["owned"] else "not owned" for v in (w, b)]
        lines.append(f"| {name} | {w['effect']:.4f} | {w['p_value']:.2g} | {verdicts[0]} | "
                     f"{b['flip_rate']:.3f} | {b['p_value']:.2g} | {verdicts[1]} |")  # fmt: skip
    stolen = wm["stolen from marked"]
    survived = [k for k in ("white_box", "black_box") if stolen[k]["owned"]]
    control = wm["stolen from unmarked"]["white_box"]["effect"]
    control_owned = [k for k in ("white_box", "black_box") if wm["stolen from unmarked"][k]["owned"]]
    both = [k for k in survived if k in control_owned]
    if both:  # the control verifies too: the verdict follows the target itself, not the embedded mark
        outcome = (
            f"does not demonstrably survive the theft: the stolen copy verifies ({', '.join(survived)}), "
            f"but so does the encoder stolen from the unmarked target ({', '.join(both)}), so that verdict "
            "follows the target's own response to the adversarial delta (a fingerprint that theft carries "
            "over), not the embedded mark."
        )
    elif survived:
        outcome = f"survives the theft ({', '.join(survived)} verification)."
    else:
        outcome = "does not survive the theft: neither verification flags the stolen copy."
    lines += ["", "Outcome: the watermark " + outcome,
              "", f"White-box margin: the stolen copy's effect {stolen['white_box']['effect']:.4f} against tau "
              f"{wm['tau']:.4f} and {control:.4f} for an encoder stolen from the unmarked target (the negative "
              f"control); black-box flip rate {stolen['black_box']['flip_rate']:.3f} against p0 "
              f"{wm['p0_blackbox']:.4f}."]  # fmt: skip
    return lines


def markdown(results: Results, out: Path) -> str:
    """The full report; writes its figures next to it."""
    (out / "stolen_defenses.png").write_bytes(tradeoff_png(results))
    (out / "stolen_budget.png").write_bytes(budget_png(results))
    cfg = results["config"]
    lines = [
        "# StolenEncoder on mnist5k", "",
        f"Seeds {cfg['seeds']}; targets: {cfg['arch']} ({cfg['dim']}-d) pre-trained with SimCLR for "
        f"{cfg['pretrain_epochs']} epochs on the owner's part; attack: {cfg['attack']['budget']} queries, lambda "
        f"{cfg['attack']['lambda_value']:g}, k {cfg['attack']['k']}, {cfg['attack']['distance']} distance, "
        f"{cfg['attack']['optimizer']} lr {cfg['attack']['lr']:g}, {cfg['attack']['epochs']} epochs. Probes: linear, "
        "trained on the attacker's labelled part, measured on the test part. Machine: "
        f"{results['machine']}; total {results['seconds'] / 60:.1f} min.", "",
        *headline_table(results), "", *_theft_lines(results), "", "## Must-holds", "",
        "| check | measured | holds |", "|---|---|---|",
        *[f"| {c['name']} | {c['value']} | {'yes' if c['holds'] else '**no**'} |" for c in results["checks"]], "",
        "## Queries needed", "", *_budget_lines(results), "", "![budget](stolen_budget.png)", "",
        "## API-side defenses", "", *_defense_table(results), "", "![defenses](stolen_defenses.png)", "",
        "## Theft of a watermarked encoder", "", *_watermark_lines(results),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _budget_lines(results: Results) -> list[str]:
    reach = queries_to_reach(results)
    first = results["seeds"][0]
    lines = ["| queries | % of pre-training set | SA full (%) | SA few (%) |", "|---|---|---|---|"]
    for r in sorted(results["budget_curve"], key=lambda r: r["budget"]):
        lines.append(f"| {r['budget']} | {100 * r['query_fraction']:.1f} | {100 * r['sa']['full']:.1f} | "
                     f"{100 * r['sa']['few']:.1f} |")  # fmt: skip
    lines.append(f"| {first['queries']} | {100 * first['query_fraction']:.1f} | {100 * first['sa']['full']:.1f} | "
                 f"{100 * first['sa']['few']:.1f} |")  # fmt: skip
    text = (f"SA >= 0.9 TA on both probes first at {reach['budget']} queries = "
            f"{100 * reach['query_fraction']:.1f}% of the pre-training set (goal <= 5%)."
            if reach else "No budget measured reaches SA >= 0.9 TA on both probes.")  # fmt: skip
    return [f"First seed; smaller budgets train for as many optimiser steps as the main one. {text}", "", *lines]


def section(results: Results, out: Path) -> str:
    """The ``stolenencoder`` section of BENCHMARKS.md."""
    reach = queries_to_reach(results)
    reached = f"{reach['budget']} queries = {100 * reach['query_fraction']:.1f}%" if reach else "not reached"
    held = sum(c["holds"] for c in results["checks"])
    lines = [
        "## StolenEncoder (encoder stealing through the feature API)", "",
        f"Written by `ownmark bench stolen` (report: `{out / 'stolen.md'}`). Machine: {results['machine']}. "
        f"Total {results['seconds'] / 60:.1f} min (wall times include other jobs sharing the CPU; each fraction "
        "compares times taken in the same run).", "",
        f"- Queries to reach SA >= 0.9 TA (full and few-shot probe), as a share of the {results['owner_size']}-image "
        f"pre-training set: **{reached}** (goal <= 5%; first seed, every budget trained for the same number of "
        "optimiser steps).",
        "- Attack compute as a share of pre-training compute, same run: "
        f"**{_ms(_col(results, 'compute_fraction'), False)}** of wall time "
        f"({_mean(_col(results, 'pass_fraction')):.3f} of image passes).",
        f"- Must-holds met: {held} of {len(results['checks'])}"
        + "".join(f"; missed: {c['name']} ({c['value']})" for c in results["checks"] if not c["holds"]) + ".",
        "", *headline_table(results), "", *_theft_lines(results),
    ]  # fmt: skip
    if results.get("watermark"):
        wm = _watermark_lines(results)
        outcome = " ".join(x for x in wm[-3:] if x).replace("Outcome: t", "t")
        lines += [f"- Theft x watermark (AWEncoder, first seed): {outcome}"]
    return "\n".join(lines)
