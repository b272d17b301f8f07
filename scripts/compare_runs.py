"""Compare the verdicts of two matrix runs of one config (e.g. on the CPU and on a GPU): issue 16's must-hold
"the same cell, on CPU and on GPU, gives the same verdict on the bundled data".

    python scripts/compare_runs.py WORKDIR_A WORKDIR_B

Prints one line per row (cell or null row) found in either run: its verdict and p-value in each, and the utility
figure the row has (accuracy, SSIM or probe accuracy). Bit-identity across devices is not expected (kernels
round differently), so p-values may move; a verdict may not. Exit code 0 when every row is in both runs with the
same verdict, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ownmark.bench.store import ResultStore


def rows(workdir: Path) -> dict[str, dict]:
    """The run's rows by their id (``cell|scheme|attack|seed`` or ``null|model|scheme|seed``)."""
    path = workdir / "results.sqlite"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; give the --workdir of a finished `ownmark bench run`")
    store = ResultStore(path)
    out = {}
    for kind in ("cell", "null"):
        for row in store.rows(kind):
            if kind == "cell":
                out[f"cell|{row['scheme']}|{row['attack_label']}|{row['seed']}"] = row
            else:
                out[f"null|{row['model']}|{row['scheme']}|{row['seed']}"] = row
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = (rows(Path(p)) for p in argv)
    same = True
    ids = sorted(a.keys() | b.keys())
    width = max((len(rid) for rid in ids), default=3)
    print(f"{'row':{width}} {'A':>14} {'B':>14}  utility A / B")
    for rid in ids:
        ra, rb = a.get(rid), b.get(rid)
        cells = []
        for r in (ra, rb):
            cells.append("missing" if r is None else f"{'OWNED' if r['owned'] else 'not'} {r['p_value']:.2g}")
        util = " / ".join(
            f"{r['acc_attacked']:.3f}" if r and r.get("acc_attacked") is not None else "-" for r in (ra, rb)
        )
        agree = ra is not None and rb is not None and bool(ra["owned"]) == bool(rb["owned"])
        same &= agree
        print(f"{rid:{width}} {cells[0]:>14} {cells[1]:>14}  {util}{'' if agree else '  <- differs'}")
    print("every verdict agrees" if same else "VERDICTS DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
