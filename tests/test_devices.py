"""Every family trains, embeds, is attacked and verified on the engine's device, and comes back as a CPU model
(issue 16 item 5). The same round trip runs on the CPU here and on CUDA where a GPU is present (the `gpu`
tests, deselected by make test; run them on a GPU machine with `pytest -m gpu tests/test_devices.py`)."""

from __future__ import annotations

import pytest
import torch

import ownmark as om
from ownmark.data.toy import toy_images
from ownmark.families import FAMILIES
from ownmark.models.encoder import engine_device, inference_on
from ownmark.train import Engine, TrainConfig, fit

ROUND_TRIP = {  # family: (arch, scheme and toy settings, attack and toy settings)
    "classifier": ("cnn2", ("fcw", {"n_embed": 4, "n_verify": 2, "epochs": 1, "batch_size": 16,
                                    "triggers_per_batch": 2}), ("ftal", {"epochs": 1})),
    "encoder": ("conv4", ("awencoder", {"epochs": 1, "pgd_steps": 2, "n_verify": 8, "decoys": 9,
                                        "key_candidates": 2}), ("enc-finetune", {"epochs": 1})),
    "image2image": ("conv3", ("deepwm", {"epochs": 1, "extractor_epochs": 1, "surrogate_epochs": 1,
                                         "finetune_epochs": 1, "embedder": "conv3", "extractor": "conv3",
                                         "surrogate_arch": "conv3", "n_probe": 4, "batch_size": 8, "w_adv": 0}),
                    ("surrogate", {"arch": "conv3", "epochs": 1})),
}  # fmt: skip


def _on_cpu(model: torch.nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def round_trip(family_name: str, accelerator: str) -> None:
    family = FAMILIES.get(family_name)
    arch, (scheme_name, scheme_set), (attack_name, attack_set) = ROUND_TRIP[family_name]
    engine = Engine(accelerator=accelerator)
    _, data = family.toy(seed=0)
    config = family.train_config({"epochs": 1, **({"batch_size": 16} if family_name == "encoder" else {})})
    model = family.fit(
        arch, data, seed=0, config=config, engine=engine, out_dim=16 if family_name == "encoder" else None
    )
    assert _on_cpu(model)
    scheme = om.create_scheme(scheme_name, **scheme_set)
    marked, key = scheme.embed(model, data, seed=0, engine=engine)
    assert _on_cpu(marked)
    attacked, _ = om.create_attack(attack_name, **attack_set)(marked, data, seed=0, engine=engine)
    assert _on_cpu(attacked)
    for suspect in (marked, attacked):
        verdict = om.verify(suspect, key)
        assert 0 < verdict.p_value <= 1
        with inference_on(engine_device(accelerator)):  # the queries answered on the device
            there = om.verify(suspect, key)
        assert _on_cpu(suspect)  # moved back after every call
        # the same verdict (a device's kernels round differently, which can move a rank test by a step)
        assert there.owned == verdict.owned and 0 < there.p_value <= 1


def interrupted_resume(loop: str, accelerator: str, tmp_path, monkeypatch) -> None:
    """Train 3 epochs whole; train again, killed right after the checkpoint of epoch 2, and resume: the same
    weights to the bit (SGD momentum for classifiers; Adam and the PatchGAN's state for image-to-image)."""
    import ownmark.train.image2image as i2i_module
    import ownmark.train.loop as loop_module
    from ownmark.train.image2image import I2ITrainConfig, fit_i2i, seeded

    engine = Engine(accelerator=accelerator)
    if loop == "classifier":
        data = toy_images(seed=0, n=96)
        spec, module = FAMILIES.get("classifier").spec("cnn2", data), loop_module

        def build():
            return seeded(spec.build, 0)

        def train(model, **kw):
            return fit(model, data, TrainConfig(epochs=3, batch_size=32, lr=0.05), seed=0, engine=engine, **kw)
    else:
        _, pairs = FAMILIES.get("image2image").toy(seed=0)
        spec, module = FAMILIES.get("image2image").spec("conv3", pairs), i2i_module
        cfg = I2ITrainConfig(epochs=3, batch_size=8, loss="l2+gan")

        def build():
            return seeded(spec.build, 0)

        def train(model, **kw):
            return fit_i2i(model, pairs.x, pairs.y, cfg, seed=0, engine=engine, **kw)

    whole = build()
    train(whole)
    real_save = module.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(build(), checkpoint=tmp_path / "c.ckpt")
    monkeypatch.setattr(module, "save_checkpoint", real_save)
    resumed = build()
    assert train(resumed, checkpoint=tmp_path / "c.ckpt", resume=True).epochs_run == 1
    assert _on_cpu(resumed)
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


@pytest.mark.parametrize("loop", ["classifier", "image2image"])
def test_resume_on_the_cpu_is_bit_identical(loop: str, tmp_path, monkeypatch) -> None:
    interrupted_resume(loop, "cpu", tmp_path, monkeypatch)


@pytest.mark.parametrize("loop", ["classifier", "image2image"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_is_bit_identical(loop: str, tmp_path, monkeypatch) -> None:
    interrupted_resume(loop, "cuda", tmp_path, monkeypatch)


@pytest.mark.parametrize("family_name", sorted(ROUND_TRIP))
def test_round_trip_on_the_cpu(family_name: str) -> None:
    round_trip(family_name, "cpu")


@pytest.mark.parametrize("family_name", sorted(ROUND_TRIP))
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_round_trip_on_cuda(family_name: str) -> None:
    round_trip(family_name, "cuda")


def test_an_inference_device_belongs_to_the_thread_that_set_it() -> None:
    """Python-API users may verify in several threads: one thread's ``inference_on`` must not move the models
    another thread runs, and blocks that end out of order across threads leave each thread its own."""
    import threading

    from ownmark.models.encoder import inference_device

    inside, leave, seen = threading.Event(), threading.Event(), {}

    def other() -> None:
        with inference_on("meta"):
            seen["other, inside"] = inference_device()
            inside.set()
            leave.wait(30)
        seen["other, after"] = inference_device()

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(30)
    assert inference_device() is None  # this thread never entered a block
    with inference_on("meta"), inference_on("cpu"):
        assert inference_device() is None  # the innermost block: "cpu", where the model is
        leave.set()
        thread.join(30)  # the other thread's block ends while this one's are open
        assert inference_device() is None
    with inference_on("meta"):
        assert inference_device() == torch.device("meta")
    assert inference_device() is None
    assert seen == {"other, inside": torch.device("meta"), "other, after": None}


class _Recorder(torch.nn.Module):
    """Records where it is sent instead of going (no GPU needed to test who moves a model when)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.moves: list[str] = []

    def to(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self.moves.append(str(args[0]))
        return self


def test_a_model_verified_in_two_threads_on_a_device_stays_there_until_both_end() -> None:
    """Each call moved the model to the device and back: the call that ended first sent it home under the
    other's forward pass (a CUDA batch against CPU weights). The first call moves it, the last sends it home."""
    import threading

    from ownmark.models.encoder import on_inference_device

    model = _Recorder()
    first_in, first_out, seen = threading.Event(), threading.Event(), {}

    def first() -> None:
        with inference_on("meta"), on_inference_device(model) as device:
            seen["first"] = device
            first_in.set()
            assert seen_second.wait(30)
        first_out.set()

    seen_second = threading.Event()
    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(30)
    with inference_on("meta"), on_inference_device(model) as device:
        seen["second"] = device
        seen_second.set()
        assert first_out.wait(30)
        assert model.moves == ["meta"]  # the first call has ended and left the model where this one runs it
    thread.join(30)
    assert model.moves == ["meta", "cpu"] and seen == {"first": torch.device("meta"), "second": torch.device("meta")}
