import base64
import re
from pathlib import Path

import pytest
import torch

from ownmark.bench.report.matrix import detection_summary, group_summary, removal_summary, render_report
from ownmark.errors import ShapeError

ALPHA = 0.01


def cell(
    scheme: str, attack: str, seed: int, *, owned: bool, cost: float, strength: float | None = None,
    param: str | None = None, wm_rate: float = 0.9, p_value: float = 1e-6, marked_p: float = 1e-8,
) -> dict:  # fmt: skip
    """A matrix row whose attack costs ``cost`` accuracy points from a marked accuracy of 95%."""
    label = attack if strength is None else f"{attack} {param}={strength}"
    return {
        "scheme": scheme, "attack": attack, "attack_label": label, "strength_param": param, "strength": strength,
        "seed": seed, "alpha": ALPHA, "acc_clean": 0.96, "acc_marked": 0.95, "acc_attacked": 0.95 - cost / 100,
        "wm_k": round(50 * wm_rate), "wm_n": 50, "wm_rate": wm_rate, "p0": 0.1, "p_value": p_value, "owned": owned,
        "marked_k": 50, "marked_p_value": marked_p, "cost_epochs": 1.0, "cost_seconds": 2.5, "cost_queries": 0,
        "cell_seconds": 3.0,
    }  # fmt: skip


def null(scheme: str, seed: int, owned: bool, k: int) -> dict:
    return {"scheme": scheme, "seed": seed, "model": f"m{seed}", "k": k, "n": 50, "p0": 0.1,
            "p_value": 1e-4 if owned else 0.5, "owned": owned, "alpha": ALPHA}  # fmt: skip


def matrix() -> list[dict]:
    rows = []
    for seed in range(3):
        rows.append(cell("adi", "none", seed, owned=True, cost=0.0, wm_rate=1.0))
        # prune never removes adi, even at 8 points of accuracy
        for amount, cost in ((0.2, 0.5), (0.5, 2.0), (0.8, 8.0)):
            rows.append(cell("adi", "prune", seed, owned=True, cost=cost, strength=amount, param="amount"))
        # finetune: no flip at 1 epoch; flips in seeds 0 and 1 at 2 epochs for 2 points; all flip at 4 epochs
        rows.append(cell("adi", "finetune", seed, owned=True, cost=1.0, strength=1, param="epochs"))
        rows.append(cell("adi", "finetune", seed, owned=seed == 2, cost=2.0, strength=2, param="epochs", wm_rate=0.3,
                         p_value=0.2))  # fmt: skip
        rows.append(cell("adi", "finetune", seed, owned=False, cost=4.0, strength=4, param="epochs", wm_rate=0.1,
                         p_value=0.6))  # fmt: skip
        # distillation removes adi only at 20 points
        rows.append(cell("adi", "distill", seed, owned=False, cost=20.0 + seed, wm_rate=0.1, p_value=0.7))
        # fcw: seed 0's marked model was never owned, so its cheap "flip" is no removal
        marked_p = 0.5 if seed == 0 else 1e-8
        rows.append(cell("fcw", "finetune", seed, owned=seed != 0, cost=1.0, strength=1, param="epochs",
                         marked_p=marked_p))  # fmt: skip
        # weak: no marked model was ever owned, so nothing can be removed
        rows.append(cell("weak", "noise", seed, owned=False, cost=0.5, strength=0.1, param="std", marked_p=0.5))
    return rows


NULLS = [null("adi", s, owned=s == 0, k=20 if s == 0 else 5) for s in range(20)]
NULLS += [null("fcw", s, owned=False, k=3 + s % 2) for s in range(10)]
EXAMPLES = {"adi": torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
            "fcw": torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return render_report(matrix(), NULLS, tmp_path_factory.mktemp("report"), examples=EXAMPLES, title="test run")


def table_line(md: str, section: str, *cells: str) -> str:
    """The one row of the table under the heading starting with ``section`` that starts with ``cells``."""
    (text,) = [part for part in md.split("\n## ") if part.startswith(section)]
    prefix = "| " + " | ".join(cells) + " |"
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return line


def test_writes_markdown_html_and_figures(report: tuple[Path, Path]) -> None:
    md, page = report
    assert md.name == "report.md" and page.name == "report.html" and md.parent == page.parent
    figures = sorted(p.name for p in (md.parent / "figures").iterdir())
    assert figures == [
        "heatmap.png",
        "robustness-finetune-epochs.png",
        "robustness-prune-amount.png",
        "triggers.png",
        "utility.png",
    ]
    assert all((md.parent / "figures" / f).read_bytes().startswith(b"\x89PNG") for f in figures)
    text = md.read_text()
    assert text.startswith("# test run\n")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [f"figures/{f}" for f in figures]
    assert not list(md.parent.glob("**/*.tmp"))


def test_html_is_self_contained(report: tuple[Path, Path]) -> None:
    page = report[1].read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert "href=" not in page and "<script" not in page and "<link" not in page and "figures/" not in page


def test_removal_outcomes() -> None:
    found = {(m.scheme, m.attack): m for m in removal_summary(matrix())}
    assert set(found) == {("adi", "prune"), ("adi", "finetune"), ("adi", "distill"), ("fcw", "finetune"),
                          ("weak", "noise")}  # fmt: skip
    assert found["adi", "prune"].outcome == "survives" and found["adi", "prune"].least_cost is None
    fine = found["adi", "finetune"]
    assert fine.outcome == "removed" and fine.least_cost == pytest.approx(2.0)
    assert (fine.setting, fine.flipped, fine.seeds, fine.settings, fine.cells) == ("finetune epochs=2", 2, 3, 3, 9)
    assert found["adi", "distill"].outcome == "costly" and found["adi", "distill"].least_cost == pytest.approx(20.0)
    assert found["fcw", "finetune"].outcome == "survives"  # the flip of a never-owned model does not count
    assert found["weak", "noise"].outcome == "not owned"


def test_heatmap_counts_removing_attacks_per_group(report: tuple[Path, Path]) -> None:
    """The heat-map's cells: prune is a model modification, distill an extraction, "finetune" is not a
    registered attack (other); the never-owned scheme has no cell; a chain counts as combined."""
    assert group_summary(matrix()) == {
        ("adi", "modification"): (0, 1), ("adi", "other"): (1, 1), ("adi", "extraction"): (0, 1),
        ("fcw", "other"): (0, 1),
    }  # fmt: skip
    chain = cell("adi", "fineprune", 0, owned=False, cost=1.0) | {"attack_label": "fineprune+ftal"}
    assert group_summary([chain])[("adi", "combined")] == (1, 1)
    # a chain under a label of its own (the image-to-image preset's purified-surrogate: output-jpeg, then a
    # surrogate) is a combined attack too: rows record the chain, not just the first stage's name
    named = cell("adi", "output-jpeg", 0, owned=False, cost=1.0) | {
        "attack_label": "purified-surrogate", "attack_chain": "output-jpeg+surrogate"}  # fmt: skip
    assert group_summary([named]) == {("adi", "combined"): (1, 1)}
    md = report[0].read_text()
    assert md.index("## At a glance") < md.index("## Removal")
    assert table_line(md, "At a glance", "adi") == "| adi | modification | extraction | other |".replace(
        "modification | extraction | other", "0/1 | 0/1 | 1/1"
    )


def test_removal_table_wording(report: tuple[Path, Path]) -> None:
    md = report[0].read_text()
    assert "survives every tried strength" in table_line(md, "Removal", "adi", "prune")
    assert "| removed with <= 5-point accuracy loss | 2.0 | finetune epochs=2 | 2/3 |" in table_line(
        md, "Removal", "adi", "finetune"
    )
    assert "removed only with > 5-point accuracy loss (least: 20.0 points) | 20.0 | distill | 3/3 |" in table_line(
        md, "Removal", "adi", "distill"
    )
    assert "not owned even before the attack" in table_line(md, "Removal", "weak", "noise")


def test_false_and_true_positive_rates(report: tuple[Path, Path]) -> None:
    found = {d.scheme: d for d in detection_summary(matrix(), NULLS)}
    adi, fcw = found["adi"], found["fcw"]
    assert (adi.nulls, adi.false_pos, adi.fpr, adi.max_null_rate) == (20, 1, 0.05, 0.4)
    assert (adi.marked, adi.true_pos, adi.tpr) == (3, 3, 1.0)
    assert adi.tpr_lower == pytest.approx(0.05 ** (1 / 3))  # Clopper-Pearson with all n hits: (1 - c)^(1/n)
    assert fcw.fpr == 0 and fcw.fpr_upper == pytest.approx(1 - 0.05 ** (1 / 10))  # no hits: 1 - (1 - c)^(1/n)
    assert (fcw.marked, fcw.true_pos, fcw.tpr_source) == (3, 2, "marked models before the attack")
    md = report[0].read_text()
    assert table_line(md, "Detection", "adi", "20", "1", "0.050")
    assert f"| fcw | 10 | 0 | 0.000 | {1 - 0.05**0.1:.3f} | 0.08 | 3 | 2 | 0.667 |" in md


def test_summary_table(report: tuple[Path, Path]) -> None:
    md = report[0].read_text()
    assert table_line(md, "Summary", "adi", "none", "3", "1.000", "3/3", "95.0", "0.0", "1.0e-06")
    assert table_line(md, "Summary", "adi", "finetune epochs=2", "3", "0.300", "1/3", "93.0", "2.0", "2.0e-01")
    assert "| 2.5 | 1 | 0 |" in table_line(md, "Summary", "adi", "prune amount=0.5")


@pytest.mark.parametrize("nulls", [[], NULLS])
def test_empty_inputs(tmp_path: Path, nulls: list[dict]) -> None:
    md, page = render_report([], nulls, tmp_path, examples={})
    text = md.read_text()
    assert "No data: no attacked cells." in text and "No example triggers." in text
    assert not (tmp_path / "figures").exists() and "<img" not in page.read_text()


def test_no_nulls_and_no_sweep(tmp_path: Path) -> None:
    cells = [cell("adi", "distill", s, owned=True, cost=1.0) for s in range(2)]
    md, _ = render_report(cells, [], tmp_path)
    text = md.read_text()
    assert "the false-positive rate is unknown" in text
    assert "No data: no attack was run at several strengths." in text
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["heatmap.png", "utility.png"]


def test_non_numeric_strengths(tmp_path: Path) -> None:
    cells = [cell("adi", "distill", 0, owned=o, cost=1.0, strength=s, param="output")
             for s, o in (("labels", True), ("probs", False))]  # fmt: skip
    render_report(cells, [], tmp_path)
    assert (tmp_path / "figures" / "robustness-distill-output.png").is_file()


def test_rejects_bad_examples(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match="1 or 3 channels"):
        render_report([], [], tmp_path, examples={"adi": torch.rand(2, 2, 8, 8)})
    with pytest.raises(ShapeError, match="N, C, H, W"):
        render_report([], [], tmp_path, examples={"adi": torch.rand(8, 8)})
    with pytest.raises(TypeError, match="torch.Tensor"):
        render_report([], [], tmp_path, examples={"adi": [[0.5]]})
