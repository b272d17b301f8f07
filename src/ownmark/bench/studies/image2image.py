"""The ``image2image`` bench: deep output watermarking measured against the paper's goals.

One run trains a target on a task's owner split, embeds deepwm in the barrier and the absorbed
form, trains the attacker's surrogate matrix (architectures x losses, an augmented one) on the
attacker split, perturbs outputs with noise and JPEG, and verifies everything beside its negative
controls (probe inputs, clean outputs, a surrogate trained on clean pairs). It sweeps the fidelity
weight for the strength trade-off, times target vs barrier vs absorbed side by side, and writes
``results.json``, ``report.md`` with figures, and a BENCHMARKS.md section.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from ownmark.attacks.surrogate import (
    OutputJpeg,
    OutputJpegConfig,
    OutputNoise,
    OutputNoiseConfig,
    Surrogate,
    SurrogateConfig,
)
from ownmark.bench.report.benchmarks import machine
from ownmark.bench.report.plots import to_png
from ownmark.data.image2image import load_task
from ownmark.io import atomic_write_bytes, atomic_write_text, save_json
from ownmark.models import ModelSpec
from ownmark.train.image2image import I2ITrainConfig, fit_i2i, predict, seeded
from ownmark.verify import decide
from ownmark.verify.metrics import psnr, ssim
from ownmark.watermarks import config_dict
from ownmark.watermarks.deepwm import DeepWM, DeepWMConfig

NOTES = (
    "This run (2026-12-06) is the first with the exact bit test of issue 14: H and R train on random balanced "
    "messages and never read the secret, so the p-value is exact for any model made without it (smallest "
    "5.5e-19). Against the run before it (9.7 min alone; this one took 58.7 min because four other benches "
    "shared the two cores, and its latency ratios are side by side as always), the universal extractor reads "
    "each output less crisply: barrier marked outputs still pass (96.9%), absorbed ones fall to 51.6% (bits "
    "63/64, p 1.8e-17), and no surrogate of either form reaches 90% success (4 and 5 of 8 did), while the "
    "verdict, which decides on the bits, claims 7 of 8 surrogates of each form at p <= 1.1e-11 (all but the "
    "augmented one, p 1); JPEG 75 on the outputs now keeps the bits (p 1.4e-8 barrier, 1.4e-6 absorbed). "
    "Success at NC > 0.95 is the paper's figure, kept for comparison; the verdict does not use it. "
    "What changed since the run of 2026-11-23 (18.6 min: barrier 1.92x the target, marked success 0% at centred NC "
    "0.926, PSNR 26.6 dB / SSIM 0.73, 0 of 8 surrogates at >= 90%), each step measured on this task and seed: "
    "(1) H is `lite`, three 3x3 convolutions of width 8 (1.2k weights against the target's 190k) that add a "
    "residual, b' = b + H(b, delta); the UNet H ran a second target-sized network per query. "
    "(2) Marked outputs missed the 0.95 threshold (bits 99% right per image, centred NC 0.93) because R lagged "
    "behind H: joint training moves the mark under R until its last epoch. Ten epochs of R alone with H frozen "
    "(`extractor_epochs`) lift marked centred NC from 0.86 to 0.998 (success 0% to 98%) with H unchanged; a sigmoid "
    "output on R (`extractor_head`), bounding it to [0, 1] like the watermark and the blank, lets H settle on a "
    "fainter mark (27.3 to 31.1 dB at fidelity weight 30). Threshold (0.95) and metric (centred NC per output) are "
    "unchanged. (3) Fidelity weight 50 (was 30): PSNR over 30 dB while at least three unseen surrogates carry the "
    "mark; the sweep above shows the trade-off. SSIM misses 0.95 by about 0.08: on these 32x32 patches each "
    "setting tried that moves towards it costs surrogates (one run each, 7 surrogates unless said): fidelity weight "
    "100 gives 37.7 dB, SSIM 0.939, 98% on marked outputs, but 1 of 4 surrogates tried >= 90% (unet/ssim+gan, the "
    "sweep's row); an SSIM term of weight 0.5 at fidelity 30 gives 32.6 dB, SSIM 0.932, 98% marked, 3 of 7; the "
    "same term at fidelity 50 gives 35.9 dB, SSIM 0.941, 94% marked, 1 of 7; weight 1 at fidelity 20 meets SSIM "
    "(0.959, 34.8 dB) but gives 91% marked and 0 of 7 (best 86%, bits p <= 4e-14 on all 7); at weight 3 "
    "(fidelity 30) H collapsed to no mark while R learned to emit a half-watermark for every image, so every "
    "negative control passed centred NC (why controls are reported beside every figure). The encdec surrogates of "
    "the barrier form carry the bits (p 2e-15) but reach centred NC 0.90-0.91, under the threshold. The fainter "
    "mark does not survive JPEG 75 on the outputs (p 0.08 barrier, 0.73 absorbed; the 26.6 dB mark of the earlier "
    "run kept its bits, p 2e-15, at 0% success), nor surrogates trained with rotate/crop/resize augmentation, as "
    "the paper reports. The absorbed form costs no latency (1.0x)."
)
GOALS = {"psnr": 30.0, "ssim": 0.95, "marked_success": 0.95, "surrogate_success": 0.90, "p": 1e-6, "control": 0.05}


@dataclass(frozen=True)
class I2IBenchConfig:
    """What one bench run trains and measures."""

    name: str
    task: str = "deblur"
    target: str = "encdec"
    target_epochs: int = 10
    scheme: DeepWMConfig = DeepWMConfig()
    surrogates: tuple[tuple[str, str], ...] = (
        ("encdec", "l1"), ("encdec", "l2"), ("resnet-i2i", "l2"), ("resnet-i2i", "l2+gan"),
        ("unet", "l1"), ("unet", "l2+gan"), ("unet", "ssim+gan"),
    )  # fmt: skip
    surrogate_epochs: int = 10
    sweep: tuple[float, ...] = (10.0, 100.0)
    absorbed: bool = True
    latency_batch: int = 64
    latency_repeats: int = 50
    threads: int = 1
    seed: int = 0


PRESETS = {
    "image2image": I2IBenchConfig("image2image"),
    "smoke": I2IBenchConfig(
        "smoke", target="conv3", target_epochs=1,
        scheme=replace(DeepWMConfig(), epochs=1, surrogate_epochs=1, finetune_epochs=1, absorb_epochs=1,
                       embedder="conv3", extractor="conv3", surrogate_arch="conv3", n_probe=16, w_adv=0.0),
        surrogates=(("conv3", "l2"),), surrogate_epochs=1, sweep=(), absorbed=True, latency_repeats=2,
    ),
    "paper": I2IBenchConfig(
        "paper", target="unet", target_epochs=100, scheme=DeepWM.presets["paper"].config,
        surrogates=tuple((a, lo) for a in ("encdec", "resnet-i2i", "unet") for lo in ("l1", "l2", "l2+gan", "ssim+gan")),  # noqa: E501
        surrogate_epochs=100, sweep=(1.0, 10.0, 100.0), threads=8,
    ),
}  # fmt: skip


@dataclass
class _Run:
    rows: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, torch.Tensor] = field(default_factory=dict)


def run_bench(cfg: I2IBenchConfig, out: str | Path, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the bench ``cfg``; write results.json, report.md and figures under ``out``; return the results."""
    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        results = _run(cfg, out, say)
    finally:
        torch.set_num_threads(threads)
    save_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render(results))
    return results


def _run(cfg: I2IBenchConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    start = time.perf_counter()
    splits = load_task(cfg.task)
    x_test = splits.test.x
    spec = ModelSpec(cfg.target, 3, 3, x_test.shape[-1], family="image2image")
    target = seeded(spec.build, cfg.seed)
    fit_i2i(target, splits.owner.x, splits.owner.y, I2ITrainConfig(epochs=cfg.target_epochs), seed=cfg.seed)
    clean_test = predict(target, x_test)
    say(f"target {cfg.target} on {cfg.task}: PSNR {psnr(clean_test, splits.test.y):.2f} dB vs ground truth")
    forms = {"barrier": DeepWM(cfg.scheme).embed(target, splits.owner, seed=cfg.seed)}
    if cfg.absorbed:
        forms["absorbed"] = DeepWM(replace(cfg.scheme, form="absorbed")).embed(target, splits.owner, seed=cfg.seed)
    run = _Run()
    forms_out = {}
    for form, (marked, key) in forms.items():
        say(f"{form}: embedded; attacking")
        forms_out[form] = _evaluate(cfg, form, target, marked, key, splits, run, say)
    sweep = []
    for w in cfg.sweep:
        marked, key = DeepWM(replace(cfg.scheme, w_fidelity=w)).embed(target, splits.owner, seed=cfg.seed)
        marked_test = predict(marked, x_test)
        arch, loss = cfg.surrogates[-1]
        row = _surrogate_row(cfg, arch, loss, False, marked, key, splits, marked_test)
        row.pop("_model")
        sweep.append({"w_fidelity": w, "psnr": psnr(marked_test, clean_test), **row})
        say(f"sweep w_fidelity={w}: PSNR {sweep[-1]['psnr']:.2f}, surrogate success {row['success']:.2f}")
    base = forms_out["barrier"]
    base_row = {"w_fidelity": cfg.scheme.w_fidelity, "psnr": base["psnr"]}
    sweep.append({**base_row, **next(r for r in run.rows if r["form"] == "barrier" and r["name"] == _name(
        *cfg.surrogates[-1], False))})  # fmt: skip
    sweep.sort(key=lambda r: r["w_fidelity"])
    latency = _latency(cfg, target, forms)
    _figures(out, run, sweep)
    return {
        "preset": cfg.name, "task": cfg.task, "target": cfg.target, "machine": machine(),
        "scheme": config_dict(cfg.scheme), "forms": forms_out, "rows": run.rows,
        "sweep": sweep, "latency": latency, "goals": GOALS, "minutes": (time.perf_counter() - start) / 60,
    }  # fmt: skip


def _name(arch: str, loss: str, augment: bool) -> str:
    return f"surrogate {arch}/{loss}" + (" +aug" if augment else "")


def _verify(model: Any, key: Any) -> dict[str, Any]:
    evidence = DeepWM().detect(model, key)
    d = evidence.details
    return {
        "success": d["success"], "centred_nc": d["centred_nc"], "raw_nc": d["raw_nc"],
        "raw_success": d["raw_success"], "bit_accuracy": d.get("bit_accuracy"),
        "bit_accuracy_per_image": d.get("bit_accuracy_per_image"), "p_value": decide(evidence).p_value,
        "owned": decide(evidence).owned,
    }  # fmt: skip


def _surrogate_row(cfg, arch, loss, augment, marked, key, splits, marked_test) -> dict[str, Any]:
    conf = SurrogateConfig(arch=arch, loss=loss, epochs=cfg.surrogate_epochs, augment=augment)
    model, cost = Surrogate(conf)(marked, splits.attacker, seed=cfg.seed + 1)
    out = predict(model, splits.test.x)
    return {
        "name": _name(arch, loss, augment), "kind": "surrogate", "fit_psnr": psnr(out, marked_test),
        "task_psnr": psnr(out, splits.test.y), "seconds": cost.seconds, **_verify(model, key), "_model": model,
    }  # fmt: skip


def _evaluate(cfg, form, target, marked, key, splits, run: _Run, say) -> dict[str, Any]:
    x_test = splits.test.x
    clean_test, marked_test = predict(target, x_test), predict(marked, x_test)
    fidelity = {"psnr": psnr(marked_test, clean_test), "ssim": ssim(marked_test, clean_test)}
    rows = [{"name": "marked outputs", "kind": "marked", **_verify(marked, key)}]
    ext = DeepWM().extract
    grid = {f"{form}: target": (x_test[:4], clean_test[:4], marked_test[:4], ext(marked, key)[:4])}
    for c_name, c_model in (("inputs", nn.Identity()), ("clean outputs", target)):
        rows.append({"name": f"control: {c_name}", "kind": "control", **_verify(c_model, key)})
    clean_sur, _ = Surrogate(SurrogateConfig(arch=cfg.surrogates[-1][0], epochs=cfg.surrogate_epochs))(
        target, splits.attacker, seed=cfg.seed + 2
    )
    rows.append({"name": "control: surrogate on clean pairs", "kind": "control", **_verify(clean_sur, key)})
    for arch, loss in cfg.surrogates:
        row = _surrogate_row(cfg, arch, loss, False, marked, key, splits, marked_test)
        model = row.pop("_model")
        grid[f"{form}: {row['name']}"] = (x_test[:4], clean_test[:4], predict(model, x_test[:4]), ext(model, key)[:4])
        rows.append(row)
        say(f"  {row['name']}: success {row['success']:.2f}, fit {row['fit_psnr']:.1f} dB, p {row['p_value']:.1e}")
    arch, loss = cfg.surrogates[-1]
    aug = _surrogate_row(cfg, arch, loss, True, marked, key, splits, marked_test)
    aug.pop("_model")
    rows.append(aug)
    for attack, name in ((OutputNoise(OutputNoiseConfig(0.02)), "output noise 0.02"),
                         (OutputJpeg(OutputJpegConfig(75)), "output JPEG 75")):  # fmt: skip
        rows.append({"name": name, "kind": "perturbed", **_verify(attack(marked, None, seed=cfg.seed)[0], key)})
    for r in rows:
        r["form"] = form
    run.rows.extend(rows)
    run.grid.update(grid)
    return fidelity


def _latency(cfg: I2IBenchConfig, target: nn.Module, forms: dict[str, Any]) -> dict[str, float]:
    x = torch.rand(cfg.latency_batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    models = {"target": target, **{form: m for form, (m, _) in forms.items()}}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(cfg.latency_repeats):  # alternate, so load drifts hit all alike
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def _figures(out: Path, run: _Run, sweep: list[dict[str, Any]]) -> None:
    rows = list(run.grid.items())
    fig = Figure(figsize=(8, 1.0 * 4 * len(rows) / 2 + 1), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, (name, images) in zip(axes, rows, strict=True):
        for ax, img, title in zip(ax_row, images, ("input", "clean output", "output", "extracted"), strict=True):
            strip = torch.cat(list(img.clamp(0, 1)), dim=2).permute(1, 2, 0).numpy()
            ax.imshow(strip)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        ax_row[0].set_ylabel(name, fontsize=6, rotation=0, ha="right")
    atomic_write_bytes(out / "grid.png", to_png(fig))
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    ws = [r["w_fidelity"] for r in sweep]
    ax.plot(ws, [r["success"] for r in sweep], "o-", label="surrogate success")
    ax.plot(ws, [r["bit_accuracy"] or 0 for r in sweep], "s--", label="surrogate bit accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("fidelity weight")
    ax.set_ylim(-0.05, 1.05)
    for r in sweep:
        ax.annotate(f"b' {r['psnr']:.1f} dB\nfit {r['fit_psnr']:.1f} dB", (r["w_fidelity"], r["success"]), fontsize=6)
    ax.legend(fontsize=7)
    atomic_write_bytes(out / "strength.png", to_png(fig))


def render(results: dict[str, Any], *, benchmarks_md: bool = False) -> str:
    """The report (or the BENCHMARKS.md section) as Markdown."""
    g = results["goals"]
    lines = [
        "## Image-to-image: deep output watermarking" if benchmarks_md else "# Image-to-image bench",
        "",
        f"Written by `ownmark bench image2image --preset {results['preset']}` in {results['minutes']:.1f} min. "
        f"Machine: {results['machine']}. Task `{results['task']}`, target `{results['target']}`, 32x32 photo patches.",
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
        "extraction against the secret balanced bits, which R never saw (smallest p 5.5e-19). fit: the surrogate's "
        "PSNR against the marked outputs.",
        "",
        "| form | suspect | success | centred NC | raw NC | bit acc | per-image bit acc | p-value | fit dB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        fit = f"{r['fit_psnr']:.1f}" if "fit_psnr" in r else "-"
        bits = f"{r['bit_accuracy']:.3f}" if r.get("bit_accuracy") is not None else "-"
        per = f"{r['bit_accuracy_per_image']:.3f}" if r.get("bit_accuracy_per_image") is not None else "-"
        lines.append(
            f"| {r['form']} | {r['name']} | {r['success']:.1%} | {r['centred_nc']:.3f} | {r['raw_nc']:.3f} | {bits} "
            f"| {per} | {r['p_value']:.1e} | {fit} |"
        )
    lat = results["latency"]
    lines += ["", "Latency (median ms per batch, measured side by side in one run):", ""]
    lines += ["| model | ms | ratio to target | goal |", "|---|---|---|---|"]
    for name, ms in lat.items():
        goal = {"barrier": "<= 1.2x", "absorbed": "1.0x"}.get(name, "")
        lines.append(f"| {name} | {ms:.2f} | {ms / lat['target']:.2f}x | {goal} |")
    if results["sweep"]:
        lines += ["", f"Strength trade-off ({results['sweep'][0]['name']}, barrier form):", ""]
        lines += ["| fidelity weight | PSNR b' vs b | surrogate fit dB | success | bit acc | p-value |"]
        lines += ["|---|---|---|---|---|---|"]
        for s in results["sweep"]:
            bits = f"{s['bit_accuracy']:.3f}" if s.get("bit_accuracy") is not None else "-"
            lines.append(
                f"| {s['w_fidelity']:g} | {s['psnr']:.2f} | {s['fit_psnr']:.1f} | {s['success']:.1%} | {bits} | "
                f"{s['p_value']:.1e} |"
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
        marked = next(r for r in mine if r["kind"] == "marked")
        out.append(f"- {form} marked success {marked['success']:.1%} vs >= 95%: {_met(marked['success'] >= 0.95)}")
        good = [r for r in mine if r["kind"] == "surrogate" and r["success"] >= g["surrogate_success"]
                and r["p_value"] <= g["p"]]  # fmt: skip
        n_sur = sum(r["kind"] == "surrogate" for r in mine)
        out.append(f"- {form} surrogates with success >= 90% and p <= 1e-6: {len(good)} of {n_sur} (goal >= 3): "
                   f"{_met(len(good) >= 3)}")  # fmt: skip
        p_ok = [r for r in mine if r["kind"] == "surrogate" and r["p_value"] <= g["p"]]
        out.append(f"- {form} surrogates with bit-string p <= 1e-6 (success aside): {len(p_ok)} of {n_sur}")
        worst = max(r["success"] for r in mine if r["kind"] == "control")
        out.append(f"- {form} worst negative control success {worst:.1%} vs <= 5%: {_met(worst <= g['control'])}")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def load_results(path: str | Path) -> dict[str, Any]:
    """Results of an earlier run (results.json)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
