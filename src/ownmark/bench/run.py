"""Run a plan: every missing task of a :class:`~ownmark.bench.plan.MatrixConfig`, resumable, in parallel
processes or on Ray (see :mod:`ownmark.bench.plan` for the phases).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ownmark.bench.plan import Executor, MatrixConfig, Task, cell_id


def run_matrix(
    config: MatrixConfig,
    workdir: str | Path,
    *,
    executor: Executor,
    say: Callable[[str], None] = lambda _m: None,
    executor_name: str = "serial",
    workers: int = 1,
) -> int:
    """Run every missing cell of ``config``; return the number of rows written in this call."""
    from dataclasses import asdict

    from ownmark.bench.store import ResultStore
    from ownmark.bench.tasks import run_task
    from ownmark.families import FAMILIES

    workdir = Path(workdir)
    store = ResultStore(workdir / "results.sqlite")
    done = {d for d in store.done() if not d.startswith("run|")}
    common = {"config": config, "workdir": str(workdir)}  # the typed config itself: checked once, never re-parsed
    cells = [
        Task("cell", cell_id(s, label, seed), {**common, "scheme": s, "label": label, "setting": setting, "seed": seed})
        for s, label, setting, seed in config.cells()
    ]
    nulls = [Task("null", f"null|{n.name}", {**common, "null": asdict(n)}) for n in config.null_names()]
    todo = [t for t in cells if t.key not in done] + [
        t for t in nulls if not _null_done(t.key, done, _keys_of(config, t.args["null"]["family"]))
    ]
    if not todo:
        say("every cell is already stored")
        return 0
    seeds_needed = sorted({t.args["seed"] for t in todo if t.phase == "cell"} | (set(config.seeds) if nulls else set()))
    families = config.families()
    calibration = [n for f in families for n in FAMILIES.get(f).calibration(config)]
    phases = [
        [Task("clean", f"clean|{f}|{seed}", {**common, "family": f, "seed": seed}) for f in families
         for seed in seeds_needed]
        + [Task("calib", f"calib|{n.name}", {**common, "null": asdict(n)}) for n in calibration],
        [
            Task("embed", f"embed|{s}|{seed}", {**common, "scheme": s, "seed": seed})
            for s in config.schemes
            for seed in seeds_needed
        ],
        # null models first: each trains a model from scratch, so started early they run beside the cells
        # instead of leaving one worker alone with the last (a resnet null encoder) after the cells are done
        [t for t in todo if t.phase == "null"] + [t for t in todo if t.phase == "cell"],
    ]  # fmt: skip
    written = 0
    start = time.perf_counter()
    phase_seconds = {}
    for name, phase in zip(("models", "embedding", "cells and nulls"), phases, strict=True):
        begun = time.perf_counter()
        for rows in executor(run_task, phase):
            store.extend(rows)
            written += len(rows)
            for row_id, _, _ in rows:
                say(f"stored {row_id} ({time.perf_counter() - start:.0f} s)")
        phase_seconds[name] = time.perf_counter() - begun
    run = {
        "seconds": time.perf_counter() - start, "rows": written, "executor": executor_name, "workers": workers,
        "phase_seconds": phase_seconds,  # clean + calibration models, embedding, attack cells with null models
    }  # fmt: skip
    store.put(f"run|{time.time_ns()}", "run", run)  # wall time of this call, for BENCHMARKS.md
    return written


def _keys_of(config: MatrixConfig, family: str) -> list[tuple[str, int]]:
    """The (scheme, seed) keys a null model of ``family`` is verified against."""
    from ownmark.bench.plan import scheme_family

    return [(s, seed) for s in config.schemes if scheme_family(config.schemes, s) == family for seed in config.seeds]


def _null_done(key: str, done: set[str], keys: list[tuple[str, int]]) -> bool:
    """Whether a null model's rows are stored for every key: a scheme added to a run's config later gets
    its null rows on the next call (the model is trained again; rows already stored stay as they are)."""
    return all(f"{key}|{scheme}|{seed}" in done for scheme, seed in keys)
