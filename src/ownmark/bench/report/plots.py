"""Figures of the benchmark report, rendered to PNG bytes.

Every figure is a ``matplotlib.figure.Figure`` saved through the Agg canvas, so no pyplot state
is touched and no display is needed. Inputs are matrix rows (see :mod:`ownmark.bench.store`);
accuracies arrive as fractions and are drawn in percent.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable
from statistics import fmean
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

Row = dict[str, Any]
DPI = 100
MAX_EXAMPLES = 8  # trigger images drawn per scheme


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no software tag, so equal figures give equal files)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def mean(values: Iterable[float | None]) -> float:
    """Mean of the values that are not None; NaN when there are none."""
    kept = [float(v) for v in values if v is not None]
    return fmean(kept) if kept else math.nan


def strength_key(value: Any) -> tuple:
    """Sort key that puts None first, then numbers by value, then anything else by text."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def scheme_colors(schemes: Iterable[str]) -> dict[str, str]:
    """One colour of matplotlib's default cycle per scheme, stable across all figures."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(set(schemes)))}


def robustness_png(rows: list[Row], param: str, colors: dict[str, str]) -> bytes:
    """Watermark rate and clean accuracy against attack strength, one line per scheme.

    Args:
        rows: cells of one attack swept over ``param``; each has a ``strength``.

    Markers show the verdict at each strength: filled where every seed stays owned, hollow where
    some seeds lose it, a cross where all do. The dotted line in the accuracy panel lies 5 points
    below the scheme's marked accuracy: removals below it cost more than the report allows.
    """
    strengths = sorted({r["strength"] for r in rows}, key=strength_key)
    numeric = all(strength_key(s)[0] == 1 for s in strengths)
    xpos = {s: (float(s) if numeric else i) for i, s in enumerate(strengths)}
    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    ax_wm, ax_acc = fig.subplots(1, 2, sharex=True)
    by_scheme: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_scheme[r["scheme"]].append(r)
    for scheme, srows in sorted(by_scheme.items()):
        color = colors[scheme]
        at = defaultdict(list)
        for r in srows:
            at[r["strength"]].append(r)
        xs = [xpos[s] for s in strengths if s in at]
        groups = [at[s] for s in strengths if s in at]
        wm = [mean(r.get("wm_rate") for r in g) for g in groups]
        acc = [100 * mean(r.get("acc_attacked") for r in g) for g in groups]
        kept = [sum(bool(r.get("owned")) for r in g) / len(g) for g in groups]
        ax_wm.plot(xs, wm, color=color, label=scheme)
        ax_acc.plot(xs, acc, color=color)
        for ax, ys in ((ax_wm, wm), (ax_acc, acc)):
            _verdict_markers(ax, xs, ys, kept, color)
        marked = mean(r.get("acc_marked") for r in srows)
        if not math.isnan(marked):
            ax_acc.axhline(100 * marked - 5, color=color, linestyle=":", linewidth=1)
    ax_wm.set(xlabel=param, ylabel="watermark rate (held-out triggers)", ylim=(-0.03, 1.03))
    ax_acc.set(xlabel=param, ylabel="clean accuracy after attack (%)")
    if not numeric:
        ax_acc.set_xticks(range(len(strengths)), [str(s) for s in strengths])
    handles = [Line2D([], [], color=colors[s], label=s) for s in sorted(by_scheme)] + _verdict_legend()
    ax_wm.legend(handles=handles, fontsize="small")
    ax_wm.grid(alpha=0.3)
    ax_acc.grid(alpha=0.3)
    return to_png(fig)


def _verdict_markers(ax: Any, xs: list[float], ys: list[float], kept: list[float], color: str) -> None:
    for x, y, share in zip(xs, ys, kept, strict=True):
        if share == 1:
            ax.plot([x], [y], "o", color=color)
        elif share > 0:
            ax.plot([x], [y], "o", markerfacecolor="white", markeredgecolor=color)
        else:
            ax.plot([x], [y], "x", color=color, markersize=8, markeredgewidth=2)


def _verdict_legend() -> list[Line2D]:
    return [
        Line2D([], [], marker="o", linestyle="", color="grey", label="owned in every seed"),
        Line2D([], [], marker="o", linestyle="", color="grey", markerfacecolor="white", label="lost in some seeds"),
        Line2D([], [], marker="x", linestyle="", color="grey", markeredgewidth=2, label="lost in every seed"),
    ]


def utility_png(cells: list[Row], colors: dict[str, str]) -> bytes | None:
    """Clean accuracy after the attack against watermark rate, every cell; None without data.

    Circles keep the verdict, crosses lose it.
    """
    usable = [r for r in cells if r.get("acc_attacked") is not None and r.get("wm_rate") is not None]
    if not usable:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for scheme in sorted({r["scheme"] for r in usable}):
        for owned, marker in ((True, "o"), (False, "x")):
            pts = [r for r in usable if r["scheme"] == scheme and bool(r.get("owned")) is owned]
            if pts:
                xs = [100 * r["acc_attacked"] for r in pts]
                ax.scatter(xs, [r["wm_rate"] for r in pts], color=colors[scheme], marker=marker, alpha=0.75)
    handles = [Line2D([], [], marker="s", linestyle="", color=colors[s], label=s) for s in sorted(colors)]
    handles += [
        Line2D([], [], marker="o", linestyle="", color="grey", label="verdict kept"),
        Line2D([], [], marker="x", linestyle="", color="grey", label="verdict lost"),
    ]
    ax.legend(handles=handles, fontsize="small")
    ax.set(xlabel="clean accuracy after attack (%)", ylabel="watermark rate (held-out triggers)", ylim=(-0.03, 1.03))
    ax.grid(alpha=0.3)
    return to_png(fig)


def triggers_png(examples: dict[str, torch.Tensor]) -> bytes | None:
    """A row of up to 8 trigger images per scheme; None when no scheme has any.

    Args:
        examples: scheme name -> images (N, C, H, W) in [0, 1] with C of 1 or 3.
    """
    shown = {name: x[:MAX_EXAMPLES] for name, x in sorted(examples.items()) if len(x)}
    if not shown:
        return None
    cols = max(len(x) for x in shown.values())
    fig = Figure(figsize=(1.1 * cols + 1.2, 1.2 * len(shown) + 0.2), layout="constrained")
    axes = fig.subplots(len(shown), cols, squeeze=False)
    for row, (name, x) in zip(axes, shown.items(), strict=True):
        images = x.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for i, ax in enumerate(row):
            if i >= len(images):
                ax.set_axis_off()
                continue
            img = images[i]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name)
    return to_png(fig)


def heatmap_png(schemes: list[str], groups: list[str], counts: list[list[tuple[int, int] | None]]) -> bytes:
    """Scheme x attack group: the share of the group's attacks that remove the mark, each cell labelled
    ``removed/tried`` (grey where the group was not tried on the scheme)."""
    import matplotlib
    import numpy as np

    share = np.array([[c[0] / c[1] if c and c[1] else np.nan for c in row] for row in counts], dtype=float)
    fig = Figure(figsize=(1.4 * len(groups) + 2.2, 0.45 * len(schemes) + 1.4))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdYlGn_r"].with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yticks(range(len(schemes)), schemes)
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            ax.text(j, i, f"{c[0]}/{c[1]}" if c else "-", ha="center", va="center", fontsize=9)
    ax.set_title("attacks that remove the mark (<= 5 points) / attacks tried")
    fig.tight_layout()
    return to_png(fig)
