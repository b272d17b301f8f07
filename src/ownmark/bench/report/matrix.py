"""The benchmark report: what each attack does to each scheme, as Markdown and one HTML page.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and written
twice: ``report.md`` links the figures it writes to ``figures/``, ``report.html`` embeds them as
base64 PNG so the page stands alone. Every stored cell is counted; nothing is dropped or smoothed.

An attack *removes* a scheme in a cell when the marked model was owned before the attack
(``marked_p_value <= alpha``) and the attacked model is not (``owned`` is false). The removal
table gives, per scheme and attack, the least clean-accuracy cost of such a cell among those that
cost at most ``MAX_COST_POINTS`` accuracy points, which is the price a thief actually pays.
"""

from __future__ import annotations

import base64
import html
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import torch

from ownmark.bench.report.plots import mean, robustness_png, scheme_colors, strength_key, triggers_png, utility_png
from ownmark.errors import ShapeError, check_images
from ownmark.io import atomic_write_bytes, atomic_write_text
from ownmark.verify import upper_bound

Row = dict[str, Any]
MAX_COST_POINTS = 5.0  # a removal that costs more clean accuracy than this ruins the stolen model
CONFIDENCE = 0.95  # Clopper-Pearson bounds on the false- and true-positive rates
NA = "n/a"


@dataclass(frozen=True)
class Removal:
    """The cheapest removal of one scheme by one attack, over all strengths and seeds.

    ``outcome`` is "survives" (no cell flipped), "removed" (a flip within ``MAX_COST_POINTS``),
    "costly" (flips, all dearer), "unknown cost" (flips without accuracies) or "not owned"
    (no marked model was owned before the attack, so there was nothing to remove).
    ``least_cost`` is in accuracy points; ``flipped`` of ``seeds`` cells flipped at ``setting``.
    """

    scheme: str
    attack: str
    outcome: str
    least_cost: float | None
    setting: str | None
    flipped: int
    seeds: int
    settings: int
    cells: int

    def text(self) -> str:
        """The outcome in words, as the report prints it."""
        if self.outcome == "survives":
            return "survives every tried strength"
        if self.outcome == "removed":
            return f"removed with <= {MAX_COST_POINTS:g}-point accuracy loss"
        if self.outcome == "costly":
            return f"removed only with > {MAX_COST_POINTS:g}-point accuracy loss (least: {self.least_cost:.1f} points)"
        if self.outcome == "unknown cost":
            return "removed; accuracy cost not recorded"
        return "not owned even before the attack"


@dataclass(frozen=True)
class Detection:
    """False positives on null models next to true positives on marked models, for one scheme."""

    scheme: str
    nulls: int
    false_pos: int
    max_null_rate: float | None
    marked: int
    true_pos: int
    tpr_source: str

    @property
    def fpr(self) -> float | None:
        return self.false_pos / self.nulls if self.nulls else None

    @property
    def fpr_upper(self) -> float | None:
        return upper_bound(self.false_pos, self.nulls, CONFIDENCE) if self.nulls else None

    @property
    def tpr(self) -> float | None:
        return self.true_pos / self.marked if self.marked else None

    @property
    def tpr_lower(self) -> float | None:
        return 1 - upper_bound(self.marked - self.true_pos, self.marked, CONFIDENCE) if self.marked else None


def points(row: Row) -> float | None:
    """Clean accuracy lost to the attack, in points (negative when the attack helped)."""
    marked, attacked = row.get("acc_marked"), row.get("acc_attacked")
    return None if marked is None or attacked is None else 100 * (marked - attacked)


def owned_before(row: Row) -> bool:
    """Whether the marked model was owned before the attack (True when the row does not say)."""
    p, alpha = row.get("marked_p_value"), row.get("alpha")
    return p is None or alpha is None or p <= alpha


def attack_key(row: Row) -> str:
    """The attack a row belongs to: its attack's name, or for a chain the chain's name (``fineprune+ftal``;
    rows record it as ``attack_chain``; older rows only in a label that joins the names with ``+``)."""
    if row.get("attack_chain"):
        return str(row["attack_chain"])
    base = str(row.get("attack_label") or row["attack"]).split(" ")[0]
    return base if "+" in base else row["attack"]


def attack_group(attack: str) -> str:
    """The SoK group of an attack key (:data:`ownmark.attacks.base.GROUPS`; ``other``: no longer registered)."""
    if "+" in attack:
        return "combined"
    from ownmark.attacks import ATTACKS

    return getattr(ATTACKS.get(attack), "group", "other") if attack in ATTACKS.names() else "other"


def removal_summary(cells: list[Row]) -> list[Removal]:
    """One :class:`Removal` per scheme and attack (the unattacked "none" rows excluded); a chain of
    attacks counts as its own attack."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in cells:
        if r["attack"] != "none":
            groups[r["scheme"], attack_key(r)].append(r)
    out = []
    for (scheme, attack), rows in sorted(groups.items()):
        valid = [r for r in rows if owned_before(r)]
        flips = [r for r in valid if not r.get("owned")]
        costed = sorted(
            (points(r), strength_key(r.get("strength")), r["attack_label"]) for r in flips if points(r) is not None
        )
        cheap = [c for c in costed if c[0] <= MAX_COST_POINTS + 1e-9]
        best = (cheap or costed or [None])[0]
        outcome = "removed" if cheap else "costly" if costed else "unknown cost" if flips else "survives"
        label = best[2] if best else None
        at = [r for r in valid if r["attack_label"] == label]
        out.append(Removal(
            scheme, attack, outcome if valid else "not owned", best[0] if best else None, label,
            sum(not r.get("owned") for r in at), len(at), len({r["attack_label"] for r in rows}), len(rows),
        ))  # fmt: skip
    return out


def detection_summary(cells: list[Row], nulls: list[Row]) -> list[Detection]:
    """One :class:`Detection` per scheme seen in either list.

    True positives come from the unattacked ("none") cells when there are any, else from the
    marked models' own verdicts before the attack (``marked_p_value``, one per seed).
    """
    out = []
    for scheme in sorted({r["scheme"] for r in cells} | {r["scheme"] for r in nulls}):
        null = [r for r in nulls if r["scheme"] == scheme]
        rates = [r["k"] / r["n"] for r in null if r.get("n")]
        plain = [r for r in cells if r["scheme"] == scheme and r["attack"] == "none"]
        if plain:
            marked, tp, source = len(plain), sum(bool(r.get("owned")) for r in plain), 'cells of attack "none"'
        else:
            seeds = {r["seed"]: r for r in cells if r["scheme"] == scheme and r.get("marked_p_value") is not None}
            marked, tp = len(seeds), sum(owned_before(r) for r in seeds.values())
            source = "marked models before the attack" if seeds else NA
        fp = sum(bool(r.get("owned")) for r in null)
        out.append(Detection(scheme, len(null), fp, max(rates) if rates else None, marked, tp, source))
    return out


# ----------------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class _Para:
    text: str


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class _Image:
    name: str  # file name under figures/
    png: bytes
    alt: str


Block = _Heading | _Para | _Table | _Image


def group_summary(cells: list[Row]) -> dict[tuple[str, str], tuple[int, int]]:
    """(scheme, attack group) -> (attacks of the group that remove the scheme within ``MAX_COST_POINTS``,
    attacks of the group tried on marked models the scheme owned)."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for m in removal_summary(cells):
        if m.outcome == "not owned":
            continue
        cell = out[m.scheme, attack_group(m.attack)]
        cell[0] += m.outcome == "removed"
        cell[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def _heatmap_section(cells: list[Row]) -> list[Block]:
    from ownmark.attacks.base import GROUPS
    from ownmark.bench.report.plots import heatmap_png

    summary = group_summary(cells)
    if not summary:
        return []
    schemes = sorted({s for s, _ in summary})
    groups = [g for g in (*GROUPS, "other") if any(g == h for _, h in summary)]
    counts = [[summary.get((s, g)) for g in groups] for s in schemes]
    rows = [[s, *(f"{c[0]}/{c[1]}" if c else NA for c in row)] for s, row in zip(schemes, counts, strict=True)]
    return [
        _Heading("At a glance: which attack groups remove each watermark"),
        _Para(
            f"Per scheme and attack group (after Lukas et al., S&P 2022): how many of the group's attacks remove the "
            f"mark at some tried strength while costing at most {MAX_COST_POINTS:g} accuracy points, of those tried "
            "on marked models owned before the attack. 0/n: the mark survives every attack of the group here."
        ),
        _Image("heatmap.png", heatmap_png(schemes, groups, counts), "removals per scheme and attack group"),
        _Table(["scheme", *groups], rows),
    ]


def _fmt(value: float | None, spec: str) -> str:
    return NA if value is None or value != value else format(value, spec)


def _intro(cells: list[Row], nulls: list[Row]) -> list[Block]:
    if not cells:
        return [_Para(f"No matrix cells were given; {len(nulls)} null-model rows.")]
    alphas = ", ".join(f"{a:g}" for a in sorted({r["alpha"] for r in cells if r.get("alpha") is not None}))
    lost = sum(not owned_before(r) for r in cells)
    text = (
        f"{len(cells)} cells: {len({r['scheme'] for r in cells})} schemes, "
        f"{len({r['attack_label'] for r in cells})} attack settings, {len({r['seed'] for r in cells})} seeds; "
        f"{len(nulls)} verdicts on {len({r.get('model') for r in nulls})} null models. "
        f"A verdict is 'owned' when the p-value is at most alpha ({alphas or NA}). "
        f"Accuracies are clean test accuracy in percent; costs and drops are in accuracy points."
    )
    from ownmark.families import FAMILIES

    present = {r.get("family") or "classifier" for r in cells}
    text += "".join(" " + FAMILIES.get(name).report_note for name in FAMILIES.names() if name in present)
    if lost:
        text += f" In {lost} cells the marked model was not owned even before the attack; no removal is credited there."
    return [_Para(text)]


def _removal_section(cells: list[Row]) -> list[Block]:
    blocks: list[Block] = [_Heading("Removal: the least accuracy cost of erasing each watermark")]
    removals = removal_summary(cells)
    if not removals:
        return blocks + [_Para("No data: no attacked cells.")]
    blocks.append(_Para(
        f"Per scheme and attack, over every strength and seed: the cheapest cell in which the verdict flipped "
        f"(owned before the attack, not after) while clean accuracy fell by at most {MAX_COST_POINTS:g} points."
    ))  # fmt: skip
    header = ["scheme", "attack", "outcome", "least cost (pts)", "at setting", "flipped there", "settings", "cells"]
    rows = [
        [m.scheme, m.attack, m.text(), _fmt(m.least_cost, ".1f"), m.setting or NA,
         f"{m.flipped}/{m.seeds}" if m.setting else NA, str(m.settings), str(m.cells)]
        for m in removals
    ]  # fmt: skip
    return blocks + [_Table(header, rows)]


def _detection_section(cells: list[Row], nulls: list[Row]) -> list[Block]:
    blocks: list[Block] = [_Heading("Detection: false positives on null models, true positives on marked models")]
    found = detection_summary(cells, nulls)
    if not found:
        return blocks + [_Para("No data.")]
    if not nulls:
        blocks.append(_Para("No data on null models: the false-positive rate is unknown."))
    blocks.append(_Para(
        f"Null models never saw the watermark; a false positive is an 'owned' verdict on one. Bounds are one-sided "
        f"{CONFIDENCE:.0%} Clopper-Pearson."
    ))  # fmt: skip
    header = ["scheme", "null models", "false pos.", "FPR", f"FPR upper {CONFIDENCE:.0%}", "max null rate",
              "marked", "owned", "TPR", f"TPR lower {CONFIDENCE:.0%}", "TPR from"]  # fmt: skip
    rows = [
        [d.scheme, str(d.nulls), str(d.false_pos), _fmt(d.fpr, ".3f"), _fmt(d.fpr_upper, ".3f"),
         _fmt(d.max_null_rate, ".2f"), str(d.marked), str(d.true_pos), _fmt(d.tpr, ".3f"), _fmt(d.tpr_lower, ".3f"),
         d.tpr_source]
        for d in found
    ]  # fmt: skip
    return blocks + [_Table(header, rows)]


def _summary_section(cells: list[Row]) -> list[Block]:
    blocks: list[Block] = [_Heading("Summary per scheme and attack setting")]
    if not cells:
        return blocks + [_Para("No data.")]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in cells:
        key = (r["scheme"], r["attack"] != "none", r["attack"], strength_key(r.get("strength")), r["attack_label"])
        groups[key].append(r)
    header = ["scheme", "attack", "seeds", "wm rate", "owned", "acc (%)", "acc drop (pts)", "median p",
              "seconds", "epochs", "queries"]  # fmt: skip
    rows = []
    for (scheme, *_, label), g in sorted(groups.items()):
        ps = [r["p_value"] for r in g if r.get("p_value") is not None]
        rows.append([
            scheme, label, str(len(g)), _fmt(mean(r.get("wm_rate") for r in g), ".3f"),
            f"{sum(bool(r.get('owned')) for r in g)}/{len(g)}",
            _fmt(100 * mean(r.get("acc_attacked") for r in g), ".1f"),
            _fmt(mean(points(r) for r in g), ".1f"), _fmt(median(ps) if ps else None, ".1e"),
            _fmt(mean(r.get("cost_seconds") for r in g), ".1f"), _fmt(mean(r.get("cost_epochs") for r in g), ".3g"),
            _fmt(mean(r.get("cost_queries") for r in g), ",.0f"),
        ])  # fmt: skip
    return blocks + [_Table(header, rows)]


def _blackbox_section(cells: list[Row], nulls: list[Row]) -> list[Block]:
    """Black-box verdicts, where the rows carry them (encoders with ``encoder.blackbox``)."""
    cells = [r for r in cells if r.get("p_black") is not None]
    nulls = [r for r in nulls if r.get("p_black") is not None]
    if not cells and not nulls:
        return []
    blocks: list[Block] = [
        _Heading("Black-box verdicts: through a downstream classifier, labels only"),
        _Para(
            "Each suspect encoder is deployed as a downstream user would (a linear classifier fitted on the "
            "attacker's labelled split over its frozen features) and verified from labels alone; nulls are the "
            "null encoders (and their fine-tuned copies) against every key."
        ),
    ]
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in cells:
        groups[
            (r["scheme"], r["attack"] != "none", r["attack"], strength_key(r.get("strength")), r["attack_label"])
        ].append(r)

    def counts(g: list[Row]) -> list[str]:
        return [f"{sum(bool(r['owned']) for r in g)}/{len(g)}", f"{sum(bool(r['owned_black']) for r in g)}/{len(g)}"]

    rows = [
        [scheme, label, *counts(g), _fmt(median(r["p_black"] for r in g), ".2g")]
        for (scheme, *_, label), g in sorted(groups.items())
    ]
    for scheme in sorted({r["scheme"] for r in nulls}):
        g = [r for r in nulls if r["scheme"] == scheme]
        rows.append([scheme, "null models", *counts(g), _fmt(min(r["p_black"] for r in g), ".2g")])
    header = ["scheme", "attack / suspects", "owned white-box", "owned black-box", "median p black (nulls: least)"]
    return blocks + [_Table(header, rows)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _figure_sections(cells: list[Row], examples: dict[str, torch.Tensor] | None) -> list[Block]:
    colors = scheme_colors([r["scheme"] for r in cells])
    blocks: list[Block] = [_Heading("Robustness curves")]
    swept: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in cells:
        if r["attack"] != "none" and r.get("strength_param") is not None and r.get("strength") is not None:
            swept[r["attack"], r["strength_param"]].append(r)
    curves = {k: v for k, v in sorted(swept.items()) if len({r["strength"] for r in v}) > 1}
    if not curves:
        blocks.append(_Para("No data: no attack was run at several strengths."))
    for (attack, param), rows in curves.items():
        png = robustness_png(rows, param, colors)
        blocks += [_Heading(f"{attack} ({param})", 3), _Image(f"robustness-{_slug(attack)}-{_slug(param)}.png", png,
                   f"watermark rate and clean accuracy against {param} of {attack}")]  # fmt: skip
    if curves:
        blocks.append(_Para(
            "Filled markers: every seed still owned; hollow: lost in some seeds; cross: lost in all. "
            f"Dotted lines: {MAX_COST_POINTS:g} points below the scheme's marked accuracy."
        ))  # fmt: skip
    blocks.append(_Heading("Utility against watermark retention"))
    png = utility_png(cells, colors)
    blocks.append(_Image("utility.png", png, "clean accuracy against watermark rate") if png else _Para("No data."))
    blocks.append(_Heading("Example triggers"))
    png = triggers_png(examples) if examples else None
    blocks.append(_Image("triggers.png", png, "trigger images per scheme") if png else _Para("No example triggers."))
    return blocks


# -------------------------------------------------------------------------------------- rendering
def _markdown(title: str, blocks: list[Block]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, _Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, _Para):
            lines += [b.text, ""]
        elif isinstance(b, _Table):
            lines.append("| " + " | ".join(map(cell, b.header)) + " |")
            lines.append("|" + "---|" * len(b.header))
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in b.rows] + [""]
        elif isinstance(b, _Image):
            lines += [f"![{b.alt}](figures/{b.name})", ""]
    return "\n".join(lines)


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 8px}"
    "th{background:#f0f0f0}td{text-align:right}td:nth-child(-n+3){text-align:left}img{max-width:100%}"
)


def _html(title: str, blocks: list[Block]) -> str:
    esc = html.escape
    parts = [f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
             f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]  # fmt: skip
    for b in blocks:
        if isinstance(b, _Heading):
            parts.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            parts.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, _Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, _Image):
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<p><img alt="{esc(b.alt)}" src="data:image/png;base64,{data}"></p>')
    return "\n".join(parts + ["</body></html>\n"])


def render_report(
    cells: list[Row], nulls: list[Row], out_dir: str | Path, *,
    examples: dict[str, torch.Tensor] | None = None, title: str = "ownmark benchmark",
) -> tuple[Path, Path]:  # fmt: skip
    """Write ``report.md`` (with its figures in ``figures/``) and a self-contained ``report.html``.

    Args:
        cells: matrix rows (``ResultStore.rows("cell")``; fields in :mod:`ownmark.bench.store`).
        nulls: null-model rows (``ResultStore.rows("null")``).
        out_dir: folder to write to; created if missing, files replaced atomically.
        examples: scheme name -> trigger images (N, C, H, W) in [0, 1], C of 1 or 3; up to 8 are shown.

    Returns:
        The paths of the Markdown and the HTML report.

    Example:
        >>> import tempfile
        >>> cell = {"scheme": "adi", "attack": "none", "attack_label": "none", "seed": 0, "owned": True}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     md, page = render_report([cell], [], tmp)
        ...     md.read_text().splitlines()[0], page.name
        ('# ownmark benchmark', 'report.html')
    """
    for name, x in (examples or {}).items():
        check_images(f"examples[{name!r}]", x)
        if x.shape[1] not in (1, 3):
            raise ShapeError(f"examples[{name!r}] must have 1 or 3 channels, got shape {tuple(x.shape)}")
    out_dir = Path(out_dir)
    blocks = _intro(cells, nulls) + _heatmap_section(cells) + _removal_section(cells) + _detection_section(cells, nulls)
    blocks += _blackbox_section(cells, nulls) + _summary_section(cells) + _figure_sections(cells, examples)
    for b in blocks:
        if isinstance(b, _Image):
            atomic_write_bytes(out_dir / "figures" / b.name, b.png)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, _markdown(title, blocks))
    atomic_write_text(page, _html(title, blocks))
    return md, page
