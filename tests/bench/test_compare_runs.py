"""scripts/compare_runs.py: the CPU-vs-GPU verdict comparison the GPU check prints (issue 16's must-hold)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ownmark.bench.store import ResultStore

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_runs.py"


def _compare():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(folder: Path, owned: bool, p: float, null: bool = True) -> Path:
    folder.mkdir()
    store = ResultStore(folder / "results.sqlite")
    store.put("cell|fcw|none|0", "cell", {"scheme": "fcw", "attack_label": "none", "seed": 0, "owned": owned,
                                          "p_value": p, "acc_attacked": 0.92})  # fmt: skip
    if null:
        store.put("null|cnn2-seed1|fcw|0", "null", {"model": "cnn2-seed1", "scheme": "fcw", "seed": 0, "owned": False,
                                                    "p_value": 0.4})  # fmt: skip
    return folder


def test_verdicts_that_agree_pass_and_a_flipped_or_missing_row_fails(tmp_path: Path, capsys) -> None:
    main = _compare()
    cpu = _run(tmp_path / "cpu", True, 0.0028)
    assert main([str(cpu), str(_run(tmp_path / "gpu", True, 0.0056))]) == 0  # p moved a step, the verdict held
    out = capsys.readouterr().out
    assert "every verdict agrees" in out and "OWNED 0.0028" in out and "OWNED 0.0056" in out
    assert main([str(cpu), str(_run(tmp_path / "flipped", False, 0.02))]) == 1
    assert "<- differs" in capsys.readouterr().out
    assert main([str(cpu), str(_run(tmp_path / "short", True, 0.0028, null=False))]) == 1  # a row never ran
    assert "missing" in capsys.readouterr().out
