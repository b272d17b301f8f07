"""The ``image2image`` bench: deep output watermarking measured against the paper's goals.

``ownmark bench image2image --preset NAME`` runs the matching matrix preset (``image2image``; ``smoke``:
``image2image-smoke``; ``paper``: ``image2image-paper``; :mod:`ownmark.bench.presets` holds the grid) with
:func:`~ownmark.bench.run.run_matrix` into ``OUT/matrix`` (resumable: stored rows are reused) and reads
its rows: the marked model of each deepwm form (barrier, absorbed), the attacker's surrogates, the output
perturbations and adaptive attacks are cells, the independently trained models null rows. The study
measures only what is not a grid cell, on the clean and marked models and keys the matrix stored: each
form's fidelity (PSNR and SSIM of marked against clean outputs), the negative controls that are not
models (the key's probe inputs, the clean target's outputs), the fidelity-weight sweep for the strength
trade-off (cached beside the rows), and target vs barrier vs absorbed latency side by side. It writes
``results.json``, ``report.md`` with figures, and a BENCHMARKS.md section.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from ownmark.bench.plan import Executor, MatrixConfig, load_config, scheme_family
from ownmark.bench.report.benchmarks import machine
from ownmark.bench.report.plots import to_png
from ownmark.io import atomic_write_bytes, atomic_write_text, load_json, save_json
from ownmark.train.image2image import predict
from ownmark.verify import decide
from ownmark.verify.metrics import psnr, ssim
from ownmark.watermarks import config_dict
from ownmark.watermarks.deepwm import DeepWM

NOTES = (
    "History (written by hand). The run of 2026-12-07 is the first on the matrix engine's rows (the grid of preset "
    "`image2image`: 38 cells, 3 null models, 10.5 min on 2 local workers; the study's sweep and latency 6 more min,"
    " the whole call 16.7 min): barrier marked outputs and every control as in the run before it (96.9%, p 5.5e-19;"
    " controls p 1); the absorbed form, now embedded by the matrix's task, reads less crisply (37.5% success, 62/64"
    " bits, p 3.1e-16; was 51.6%, 63/64); surrogates claimed 7 of 8 per form as before (all but the augmented one)."
    " New attacks: output bit-depth squeezing and output noise at 0.01 / 0.05 keep the bits, the thief's own deepwm"
    " (overwrite) does not remove the owner's (p 5.5e-19 barrier, 4.1e-6 absorbed), and a surrogate trained on "
    "JPEG-50-purified outputs does (p 1 barrier, 0.026 absorbed), as the augmented surrogate does. The run of "
    "2026-12-06 was the first with the exact bit test of issue 14: H and R train on random balanced messages and "
    "never read the secret, so the p-value is exact for any model made without it (smallest 5.5e-19). Against the "
    "run before it (9.7 min alone; that one took 58.7 min because four other benches shared the two cores, and its "
    "latency ratios are side by side as always), the universal extractor reads each output less crisply: barrier "
    "marked outputs still pass (96.9%), absorbed ones fall to 51.6% (bits 63/64, p 1.8e-17), and no surrogate of "
    "either form reaches 90% success (4 and 5 of 8 did), while the verdict, which decides on the bits, claims 7 of "
    "8 surrogates of each form at p <= 1.1e-11 (all but the augmented one, p 1); JPEG 75 on the outputs now keeps "
    "the bits (p 1.4e-8 barrier, 1.4e-6 absorbed). Success at NC > 0.95 is the paper's figure, kept for comparison;"
    " the verdict does not use it. What changed since the run of 2026-11-23 (18.6 min: barrier 1.92x the target, "
    "marked success 0% at centred NC 0.926, PSNR 26.6 dB / SSIM 0.73, 0 of 8 surrogates at >= 90%), each step "
    "measured on this task and seed: (1) H is `lite`, three 3x3 convolutions of width 8 (1.2k weights against the "
    "target's 190k) that add a residual, b' = b + H(b, delta); the UNet H ran a second target-sized network per "
    "query. (2) Marked outputs missed the 0.95 threshold (bits 99% right per image, centred NC 0.93) because R "
    "lagged behind H: joint training moves the mark under R until its last epoch. Ten epochs of R alone with H "
    "frozen (`extractor_epochs`) lift marked centred NC from 0.86 to 0.998 (success 0% to 98%) with H unchanged; a "
    "sigmoid output on R (`extractor_head`), bounding it to [0, 1] like the watermark and the blank, lets H settle "
    "on a fainter mark (27.3 to 31.1 dB at fidelity weight 30). Threshold (0.95) and metric (centred NC per output)"
    " are unchanged. (3) Fidelity weight 50 (was 30): PSNR over 30 dB while at least three unseen surrogates carry "
    "the mark; the sweep above shows the trade-off. SSIM misses 0.95 by about 0.08: on these 32x32 patches each "
    "setting tried that moves towards it costs surrogates (one run each, 7 surrogates unless said): fidelity weight"
    " 100 gives 37.7 dB, SSIM 0.939, 98% on marked outputs, but 1 of 4 surrogates tried >= 90% (unet/ssim+gan, the "
    "sweep's row); an SSIM term of weight 0.5 at fidelity 30 gives 32.6 dB, SSIM 0.932, 98% marked, 3 of 7; the "
    "same term at fidelity 50 gives 35.9 dB, SSIM 0.941, 94% marked, 1 of 7; weight 1 at fidelity 20 meets SSIM "
    "(0.959, 34.8 dB) but gives 91% marked and 0 of 7 (best 86%, bits p <= 4e-14 on all 7); at weight 3 (fidelity "
    "30) H collapsed to no mark while R learned to emit a half-watermark for every image, so every negative control"
    " passed centred NC (why controls are reported beside every figure). The encdec surrogates of the barrier form "
    "carry the bits (p 2e-15) but reach centred NC 0.90-0.91, under the threshold. The fainter mark does not "
    "survive JPEG 75 on the outputs (p 0.08 barrier, 0.73 absorbed; the 26.6 dB mark of the earlier run kept its "
    "bits, p 2e-15, at 0% success), nor surrogates trained with rotate/crop/resize augmentation, as the paper "
    "reports. The absorbed form costs no latency (1.0x)."
)
GOALS = {"psnr": 30.0, "ssim": 0.95, "marked_success": 0.95, "surrogate_success": 0.90, "p": 1e-6, "control": 0.05}
SWEEP_CACHE = "image2image-bench-sweep.json"  # the sweep's points, cached beside the matrix's rows


@dataclass(frozen=True)
class I2IBenchConfig:
    """What one bench run measures beside the grid of the matrix preset ``matrix``."""

    name: str
    matrix: str
    sweep: tuple[float, ...] = (10.0, 100.0)  # fidelity weights embedded beside the preset's own
    latency_batch: int = 64
    latency_repeats: int = 50
    threads: int = 1  # torch threads of the study's own measurements (the matrix sets its own)


PRESETS = {
    "image2image": I2IBenchConfig("image2image", "image2image"),
    "smoke": I2IBenchConfig("smoke", "image2image-smoke", sweep=(), latency_repeats=2),
    "paper": I2IBenchConfig("paper", "image2image-paper", sweep=(1.0, 10.0, 100.0), threads=8),
}


def run_bench(
    cfg: I2IBenchConfig,
    out: str | Path,
    *,
    executor: Executor | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the matrix preset of ``cfg`` under ``out / "matrix"`` (serial by default), measure
    what is not a grid cell; write results.json, report.md and figures under ``out``; return the results."""
    from ownmark.bench.executors import serial
    from ownmark.bench.run import run_matrix

    out = Path(out)
    start = time.perf_counter()
    config = load_config(cfg.matrix)
    work = out / "matrix"
    say(f"matrix preset {cfg.matrix} in {work}")
    written = run_matrix(config, work, executor=executor or serial(), say=say)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        results = _study(cfg, config, work, out, say)
    finally:
        torch.set_num_threads(threads)
    results |= {"cells_written": written, "minutes": (time.perf_counter() - start) / 60}
    save_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results))
    return results


def _study(cfg: I2IBenchConfig, config: MatrixConfig, work: Path, out: Path, say: Callable[[str], None]) -> dict:
    from ownmark.bench.store import ResultStore
    from ownmark.families import FAMILIES
    from ownmark.io import load_key
    from ownmark.models import load_model

    family = FAMILIES.get("image2image")
    seed, models = config.seeds[0], work / "models"
    data = family.load(config)
    x_test = data.splits.test.x
    clean = load_model(models / family.clean_name(seed))[0].eval()
    clean_test = predict(clean, x_test)
    store = ResultStore(work / "results.sqlite")
    cells = {(r["scheme"], r["attack_label"], r["seed"]): r for r in store.rows("cell")}
    nulls = store.rows("null")
    forms: dict[str, dict[str, Any]] = {}
    marked_models: dict[str, tuple[str, Any, nn.Module, Any]] = {}
    rows: list[dict[str, Any]] = []
    grid: dict[str, tuple[torch.Tensor, ...]] = {}
    for scheme in config.schemes:
        if scheme_family(config.schemes, scheme) != family.name:
            continue
        conf = config.scheme_config(scheme)
        form = conf.form if conf.form not in forms else scheme
        marked = load_model(models / f"{scheme}-seed{seed}")[0].eval()
        key = load_key(models / f"{scheme}-seed{seed}-key")
        marked_test = predict(marked, x_test)
        forms[form] = {"scheme": scheme, "psnr": psnr(marked_test, clean_test), "ssim": ssim(marked_test, clean_test),
                       "config": config_dict(conf)}  # fmt: skip
        marked_models[form] = (scheme, conf, marked, key)
        for s, label, setting, cell_seed in config.cells():
            if s == scheme and cell_seed == seed and (s, label, seed) in cells:
                name = "marked outputs" if setting["name"] == "none" else label
                rows.append(_row(form, name, _kind(setting), cells[(s, label, seed)]))
        for name, model in (("control: probe inputs", nn.Identity()), ("control: clean outputs", clean)):
            rows.append(_row(form, name, "control", _verify(family, key, model, data, config, config.alpha)))
        rows += [
            _row(form, f"null: {r['model']}", "null", r) for r in nulls if (r["scheme"], r["seed"]) == (scheme, seed)
        ]
        grid[f"{form}: target"] = (x_test[:4], clean_test[:4], marked_test[:4], DeepWM().extract(marked, key)[:4])
        f = forms[form]
        say(f"{form} ({scheme}): PSNR {f['psnr']:.2f} dB, SSIM {f['ssim']:.3f} against clean outputs")
    sweep = _sweep(cfg, config, work, data, clean, clean_test, forms, marked_models, cells, say)
    latency = _latency(cfg, clean, {form: m for form, (_, _, m, _) in marked_models.items()})
    _figures(out, grid, sweep)
    settings = family.settings(config)
    return {
        "preset": cfg.name, "matrix": config.name, "workdir": str(work), "task": settings.task,
        "target": settings.arch, "target_epochs": settings.epochs, "seed": seed, "alpha": config.alpha,
        "machine": machine(), "forms": forms, "rows": rows, "sweep": sweep, "latency": latency, "goals": GOALS,
        "matrix_minutes": sum(r["seconds"] for r in store.rows("run")) / 60,
    }  # fmt: skip


def _kind(setting: dict[str, Any]) -> str:
    """How the report groups a cell: the marked model, a surrogate, an output perturbation, or another attack."""
    if setting["name"] == "none":
        return "marked"
    if setting.get("then"):
        return "adaptive"
    if setting["name"] == "surrogate":
        return "surrogate"
    return "perturbed" if setting["name"].startswith("output-") else "adaptive"


def _row(form: str, name: str, kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A report row out of a matrix row (cell or null; fields the family's ``extra_evidence`` adds)."""
    fields = ("centred_nc", "raw_nc", "bit_accuracy", "bit_accuracy_per_image", "p_value", "owned", "task_psnr")
    return {"form": form, "name": name, "kind": kind, "success": row.get("nc_success"),
            **{f: row.get(f) for f in fields}, "ssim": row.get("acc_attacked")}  # fmt: skip


def _verify(family: Any, key: Any, model: Any, data: Any, config: MatrixConfig, alpha: float) -> dict[str, Any]:
    """The fields of a matrix row for a suspect the grid does not hold (a control, a sweep surrogate)."""
    scheme = DeepWM()
    evidence = scheme.detect(model, key)
    verdict = decide(evidence, alpha)
    suspect = family.prepare_suspect(model, data, config)
    return {"p_value": verdict.p_value, "owned": verdict.owned,
            **family.extra_evidence(scheme, key, evidence, suspect, config, alpha)}  # fmt: skip


def _sweep_attack(config: MatrixConfig, scheme: str) -> tuple[str, dict[str, Any]] | None:
    """The grid's last plain surrogate of ``scheme`` (no augmentation, no chain): the sweep's attacker."""
    found = None
    for s, label, setting, _seed in config.cells():
        if s == scheme and setting["name"] == "surrogate" and not setting.get("then"):
            if not setting["set"].get("augment"):
                found = (label, setting)
    return found


def _sweep(cfg, config, work, data, clean, clean_test, forms, marked_models, cells, say) -> list[dict[str, Any]]:
    """The strength trade-off (barrier form): the preset's fidelity weight is the grid's row; each other weight
    of ``cfg.sweep`` is embedded into the stored clean target and met by the grid's last plain surrogate."""
    from ownmark.attacks import ATTACKS
    from ownmark.families import FAMILIES
    from ownmark.train import Engine
    from ownmark.watermarks import apply_overrides

    found = _sweep_attack(config, marked_models["barrier"][0]) if "barrier" in marked_models else None
    if found is None:
        return []
    (scheme, conf, _, _), (label, setting), seed = marked_models["barrier"], found, config.seeds[0]
    family, splits = FAMILIES.get("image2image"), data.splits
    points = []
    if (scheme, label, seed) in cells:
        base = _row("barrier", label, "surrogate", cells[(scheme, label, seed)])
        points.append({"w_fidelity": conf.w_fidelity, "psnr": forms["barrier"]["psnr"], "fit_psnr": None, **base})
    path = work / SWEEP_CACHE
    cache = load_json(path) if path.is_file() else {}
    for w in cfg.sweep:
        if w == conf.w_fidelity:
            continue
        conf_w = replace(conf, w_fidelity=w)
        what = [config.name, seed, config.image2image, config_dict(conf_w), setting, config.alpha]
        tag = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if tag not in cache:
            engine = Engine(accelerator=config.accelerator)
            scheme_w = DeepWM(conf_w)
            marked, key = scheme_w.embed(clean, splits.owner, seed=seed, engine=engine)
            marked_test = predict(marked.eval(), splits.test.x)
            cls = ATTACKS.get(setting["name"])
            attacked, _ = cls(apply_overrides(cls.config_class(), setting["set"]))(
                marked, splits.attacker, seed=seed, engine=engine
            )
            found_row = {**_verify(family, key, attacked, data, config, config.alpha),
                         "acc_attacked": family.utility(attacked, splits)}  # fmt: skip
            row = _row("barrier", label, "surrogate", found_row)
            cache[tag] = {"w_fidelity": w, "psnr": psnr(marked_test, clean_test),
                          "fit_psnr": psnr(predict(attacked, splits.test.x), marked_test), **row}  # fmt: skip
            save_json(path, cache)
        point = cache[tag]
        points.append(point)
        say(f"sweep w_fidelity={w}: PSNR {point['psnr']:.2f}, {label} p {point['p_value']:.1e}")
    return sorted(points, key=lambda r: r["w_fidelity"])


def _latency(cfg: I2IBenchConfig, target: nn.Module, forms: dict[str, nn.Module]) -> dict[str, float]:
    x = torch.rand(cfg.latency_batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    models = {"target": target, **forms}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(cfg.latency_repeats):  # alternate, so load drifts hit all alike
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def _figures(out: Path, grid: dict[str, tuple[torch.Tensor, ...]], sweep: list[dict[str, Any]]) -> None:
    rows = list(grid.items())
    fig = Figure(figsize=(8, 1.0 * 4 * len(rows) / 2 + 1), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, (name, images) in zip(axes, rows, strict=True):
        for ax, img, title in zip(ax_row, images, ("input", "clean output", "marked output", "extracted"), strict=True):
            strip = torch.cat(list(img.clamp(0, 1)), dim=2).permute(1, 2, 0).numpy()
            ax.imshow(strip)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        ax_row[0].set_ylabel(name, fontsize=6, rotation=0, ha="right")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "grid.png", to_png(fig))
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    ws = [r["w_fidelity"] for r in sweep]
    ax.plot(ws, [r["success"] or 0 for r in sweep], "o-", label="surrogate success")
    ax.plot(ws, [r["bit_accuracy"] or 0 for r in sweep], "s--", label="surrogate bit accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("fidelity weight")
    ax.set_ylim(-0.05, 1.05)
    for r in sweep:
        fit = f"\nfit {r['fit_psnr']:.1f} dB" if r.get("fit_psnr") is not None else ""
        ax.annotate(f"b' {r['psnr']:.1f} dB{fit}", (r["w_fidelity"], r["success"] or 0), fontsize=6)
    if sweep:
        ax.legend(fontsize=7)
    atomic_write_bytes(out / "strength.png", to_png(fig))


def render(results: dict[str, Any], *, benchmarks_md: bool = False) -> str:
    """The report (or the BENCHMARKS.md section) as Markdown."""
    g, alpha = results["goals"], results["alpha"]
    lines = [
        "## Image-to-image: deep output watermarking" if benchmarks_md else "# Image-to-image bench",
        "",
        f"Written by `ownmark bench image2image --preset {results['preset']}` in {results['minutes']:.1f} min; its "
        f"grid is the rows of the matrix preset `{results['matrix']}` (cells and null models; the matrix runs that "
        f"wrote them took {results['matrix_minutes']:.1f} min in all, {results['cells_written']} rows in this call). "
        f"Machine: {results['machine']}. Task `{results['task']}`, target `{results['target']}` "
        f"({results['target_epochs']} epochs), 32x32 photo patches, seed {results['seed']}.",
        "",
        "| form | PSNR b' vs b (goal >= 30) | SSIM (goal >= 0.95) |",
        "|---|---|---|",
    ]
    for form, f in results["forms"].items():
        lines.append(f"| {form} | {f['psnr']:.2f} | {f['ssim']:.3f} |")
    lines += [
        "",
        "Success = share of probe outputs whose extracted image has centred NC > 0.95 with the watermark "
        f"(goals: marked >= {g['marked_success']:.0%}, surrogates >= {g['surrogate_success']:.0%} with "
        f"p <= {g['p']:g}, controls <= {g['control']:.0%}). p: exact test of the 64 bits decoded from R's mean "
        "extraction against the secret balanced bits, which R never saw (smallest p 5.5e-19); claimed: the "
        f"verdict at alpha {alpha:g}. Controls: the key's probe inputs and the clean target's outputs; null: "
        "a model trained independently of the owner's (another seed or architecture, the attacker's pairs). "
        "PSNR / SSIM: the suspect's outputs against the ground truth on the test pairs (the matrix keeps no "
        "attacked model, so a surrogate's fit to the marked outputs is reported only in the sweep).",
        "",
        "| form | suspect | claimed | success | centred NC | raw NC | bit acc | per-image bit acc | p-value "
        "| PSNR | SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['form']} | {r['name']} | {'yes' if r['owned'] else 'no'} | {_num(r['success'], '.1%')} "
            f"| {_num(r['centred_nc'], '.3f')} | {_num(r['raw_nc'], '.3f')} | {_num(r['bit_accuracy'], '.3f')} "
            f"| {_num(r['bit_accuracy_per_image'], '.3f')} | {r['p_value']:.1e} | {_num(r['task_psnr'], '.1f')} "
            f"| {_num(r['ssim'], '.3f')} |"
        )
    lat = results["latency"]
    lines += ["", "Latency (median ms per batch, measured side by side in one run):", ""]
    lines += ["| model | ms | ratio to target | goal |", "|---|---|---|---|"]
    for name, ms in lat.items():
        goal = {"barrier": "<= 1.2x", "absorbed": "1.0x"}.get(name, "")
        lines.append(f"| {name} | {ms:.2f} | {ms / lat['target']:.2f}x | {goal} |")
    if results["sweep"]:
        lines += ["", f"Strength trade-off ({results['sweep'][0]['name']}, barrier form; the preset's weight is the "
                  "grid's row, the others embedded and attacked by this study):", ""]  # fmt: skip
        lines += ["| fidelity weight | PSNR b' vs b | surrogate fit dB | success | bit acc | p-value |"]
        lines += ["|---|---|---|---|---|---|"]
        for s in results["sweep"]:
            lines.append(
                f"| {s['w_fidelity']:g} | {s['psnr']:.2f} | {_num(s.get('fit_psnr'), '.1f')} "
                f"| {_num(s['success'], '.1%')} | {_num(s['bit_accuracy'], '.3f')} | {s['p_value']:.1e} |"
            )
    lines += ["", *goal_lines(results), "", NOTES]
    if not benchmarks_md:
        lines += ["", "![input / clean / marked / extracted](grid.png)", "", "![strength](strength.png)"]
    return "\n".join(lines) + "\n"


def goal_lines(results: dict[str, Any]) -> list[str]:
    """One line per goal: met or missed, and by how much."""
    g, rows, out = results["goals"], results["rows"], ["Goals:", ""]
    for form, f in results["forms"].items():
        out.append(f"- {form} PSNR {f['psnr']:.2f} dB vs >= {g['psnr']}: {_met(f['psnr'] >= g['psnr'])}")
        out.append(f"- {form} SSIM {f['ssim']:.3f} vs >= {g['ssim']}: {_met(f['ssim'] >= g['ssim'])}")
    for form in results["forms"]:
        mine = [r for r in rows if r["form"] == form]
        marked = next((r for r in mine if r["kind"] == "marked"), None)
        if marked is not None and marked["success"] is not None:
            out.append(f"- {form} marked success {marked['success']:.1%} vs >= 95%: "
                       f"{_met(marked['success'] >= g['marked_success'])}")  # fmt: skip
        surrogates = [r for r in mine if r["kind"] == "surrogate"]
        good = [r for r in surrogates if (r["success"] or 0) >= g["surrogate_success"] and r["p_value"] <= g["p"]]
        out.append(f"- {form} surrogates with success >= 90% and p <= 1e-6: {len(good)} of {len(surrogates)} "
                   f"(goal >= 3): {_met(len(good) >= 3)}")  # fmt: skip
        p_ok = [r for r in surrogates if r["p_value"] <= g["p"]]
        out.append(f"- {form} surrogates with bit-string p <= 1e-6 (success aside): {len(p_ok)} of {len(surrogates)}")
        claimed = sum(bool(r["owned"]) for r in surrogates)
        out.append(f"- {form} surrogates claimed at alpha {results['alpha']:g}: {claimed} of {len(surrogates)}")
        controls = [r for r in mine if r["kind"] in ("control", "null")]
        successes = [r["success"] for r in controls if r["success"] is not None]
        if successes:
            worst = max(successes)
            out.append(f"- {form} worst negative control success {worst:.1%} vs <= 5%: {_met(worst <= g['control'])}")
        wrong = sum(bool(r["owned"]) for r in controls)
        out.append(f"- {form} negative controls and null models claimed: {wrong} of {len(controls)} (goal 0): "
                   f"{_met(wrong == 0)}")  # fmt: skip
    return out


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def load_results(path: str | Path) -> dict[str, Any]:
    """Results of an earlier run (results.json)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
