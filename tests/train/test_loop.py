import copy
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, IntegrityError
from ownmark.io import load_checkpoint
from ownmark.models import ModelSpec
from ownmark.train import Engine, TrainConfig, accuracy, fit, key_seed, lr_at, predict_logits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two
    spinning threads per process slow training down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def initial_model() -> nn.Module:
    torch.manual_seed(0)
    return ModelSpec("cnn2", 3, 4, 16).build()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_lowers_the_loss_and_learns() -> None:
    model = initial_model()
    before = accuracy(model, toy_images(1))
    result = fit(model, toy_images(), TrainConfig(epochs=4, batch_size=8, lr=0.03), seed=0)
    assert result.epochs_run == 4 and result.images == 4 * 64 and len(result.losses) == 4
    assert result.seconds > 0 and result.images_per_second > 0
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert accuracy(model, toy_images(1)) >= 0.9 > before
    assert not model.training


def test_same_seed_gives_bit_identical_weights() -> None:
    start = initial_model()
    a, b, c = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    config = TrainConfig(epochs=2, batch_size=16)
    fit(a, toy_images(), config, seed=3)
    fit(b, toy_images(), config, seed=3)
    fit(c, toy_images(), config, seed=4)
    assert same_weights(a, b)
    assert not same_weights(a, c)  # the seed really drives the batch order
    assert not same_weights(a, start)


def test_hooks_see_every_step_in_order() -> None:
    steps, batches = [], []

    def batch_hook(x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batches.append((step, len(y)))
        return x, y

    fit(initial_model(), toy_images(n=40), TrainConfig(epochs=2, batch_size=16), seed=0,
        batch_hook=batch_hook, step_hook=lambda model, step: steps.append(step))  # fmt: skip
    assert steps == list(range(6))  # ceil(40 / 16) = 3 steps per epoch
    assert batches == [(0, 16), (1, 16), (2, 8), (3, 16), (4, 16), (5, 8)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("batch_size", 0),
        ("batch_size", 8.0),
        ("lr", 0),
        ("lr", -0.1),
        ("gamma", 0.0),
        ("momentum", -0.5),
        ("weight_decay", -1e-4),
        ("optimizer", "rmsprop"),
        ("milestones", (0.0,)),
        ("milestones", (0.5, 1.0)),
        ("milestones", (1.5,)),
    ],
)
def test_train_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        TrainConfig(**{field: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("devices", 0), ("num_nodes", -1)])
def test_engine_rejects_bad_values(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"Engine.{field}"):
        Engine(**{field: value})


def test_lr_at_steps_down_at_milestones() -> None:
    config = TrainConfig(epochs=40, lr=0.1, gamma=0.1, milestones=(0.375, 0.625, 0.875))  # FCW: 15/25/35 of 40
    expected = {0: 0.1, 14: 0.1, 15: 0.01, 24: 0.01, 25: 0.001, 34: 0.001, 35: 0.0001, 39: 0.0001}
    for epoch, lr in expected.items():
        assert lr_at(config, epoch) == pytest.approx(lr, rel=1e-12), epoch
    assert lr_at(TrainConfig(epochs=10, lr=0.05), 9) == 0.05  # no milestones: constant
    assert lr_at(TrainConfig(epochs=10, lr=1.0, gamma=0.5, milestones=(0.5, 0.5)), 5) == 0.25  # drops stack


def test_key_seed() -> None:
    assert key_seed(0, 1) == key_seed(0, 1)
    assert len({key_seed(0, e) for e in range(100)} | {key_seed(1, e) for e in range(100)}) == 200
    assert 0 <= key_seed(2**64 - 1, -1) < 2**63
    # a seed beyond 64 bits would be cut to its low bits (2**70 would replay seed 0): refused
    with pytest.raises(ConfigError, match="does not fit in 64 bits"):
        key_seed(2**70, 1)


def test_engine_refuses_an_unknown_accelerator() -> None:
    with pytest.raises(ConfigError, match="accelerator must be one of"):
        Engine(accelerator="tpu")


def test_predict_logits_restores_mode() -> None:
    model = initial_model().train()
    x = toy_images().x
    out = predict_logits(model, x, batch_size=10)
    assert out.shape == (64, 4) and model.training
    with torch.no_grad():
        assert torch.allclose(out, model.eval()(x), atol=1e-6)


def test_resume_with_another_seed_or_config_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(epochs=2, batch_size=16)
    fit(initial_model(), toy_images(), config, seed=0, checkpoint=ckpt)
    assert load_checkpoint(ckpt)["epoch"] == 2
    with pytest.raises(IntegrityError, match="another seed or config") as info:
        fit(initial_model(), toy_images(), config, seed=1, checkpoint=ckpt, resume=True)
    assert "\n" not in str(info.value)
    with pytest.raises(IntegrityError, match="another seed or config"):
        fit(initial_model(), toy_images(), TrainConfig(epochs=2, batch_size=16, lr=0.02), seed=0,
            checkpoint=ckpt, resume=True)  # fmt: skip


def test_resume_of_a_finished_run_trains_nothing(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(epochs=2, batch_size=16)
    done = initial_model()
    fit(done, toy_images(), config, seed=0, checkpoint=ckpt)
    again = initial_model()
    result = fit(again, toy_images(), config, seed=0, checkpoint=ckpt, resume=True)
    assert result.epochs_run == 0 and same_weights(done, again)


def test_checkpoint_without_resume_starts_over(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(epochs=1, batch_size=16)
    fit(initial_model(), toy_images(), config, seed=0, checkpoint=ckpt)
    result = fit(initial_model(), toy_images(), config, seed=1, checkpoint=ckpt)  # no resume: no seed check
    assert result.epochs_run == 1 and load_checkpoint(ckpt)["seed"] == 1


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    from ownmark.data.toy import toy_images
    from ownmark.models import ModelSpec
    from ownmark.train import TrainConfig, fit
    torch.manual_seed(0)
    model = ModelSpec("cnn2", 3, 4, 16).build()
    # the sleep only slows the run so that it is still going when the test kills it;
    # it touches no weights and no random state
    fit(model, toy_images(), TrainConfig(epochs=30, batch_size=8), seed=0, checkpoint=sys.argv[1],
        step_hook=lambda model, step: time.sleep(0.05))
    """
)


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(epochs=30, batch_size=8)
    log = (tmp_path / "child.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(ckpt), str(torch.get_num_threads())],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the training subprocess wrote no checkpoint of epoch >= 2 in 120 s"
            assert proc.poll() is None, f"the run ended before it was killed: {(tmp_path / 'child.log').read_text()}"
            if ckpt.is_file() and load_checkpoint(ckpt)["epoch"] >= 2:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(ckpt)["epoch"]  # atomic writes: the last complete checkpoint
    assert 2 <= killed_at < 30

    resumed = initial_model()
    result = fit(resumed, toy_images(), config, seed=0, checkpoint=ckpt, resume=True)
    assert result.epochs_run == 30 - killed_at
    assert load_checkpoint(ckpt)["epoch"] == 30

    straight = initial_model()
    fit(straight, toy_images(), config, seed=0)
    assert same_weights(resumed, straight)
    assert not same_weights(resumed, initial_model())


class _UserBlock(nn.Module):
    """A user's own module that flattens with .view, which a channels-last activation refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).view(len(x), -1)


def test_cpu_channels_last_applies_to_library_conv_nets_on_the_cpu_only() -> None:
    from ownmark.models import cpu_channels_last

    net, user, dense = initial_model(), _UserBlock(), nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    before = copy.deepcopy(net)
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    with cpu_channels_last(net, user, dense, None):
        assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
        assert user.conv.weight.is_contiguous()  # the user's module keeps the default layout
        assert user(torch.rand(2, 3, 5, 5)).shape == (2, 36)
    assert all(w.is_contiguous() for w in convs) and same_weights(net, before)  # back, values unchanged
    with cpu_channels_last(net, device="cuda") as switched:  # a GPU run is left to the engine (no GPU needed)
        assert not switched and all(w.is_contiguous() for w in convs)
    with cpu_channels_last(user) as switched:
        assert not switched  # the caller keeps its images in the default layout too


def test_inference_answers_for_a_users_module_that_views_its_activations() -> None:
    """Batched inference (predict_logits / encode: every verification) once switched any CPU conv net to
    channels-last, and a user's module that flattens with .view failed ("view size is not compatible")."""
    from ownmark.train import predict_logits

    user, x = _UserBlock(), torch.rand(6, 3, 5, 5)
    with torch.no_grad():
        expected = user(x)
    assert torch.equal(predict_logits(user, x, batch_size=4), expected)  # the default layout: the same bits


def test_a_few_images_of_a_large_model_are_answered_without_switching_the_layout(monkeypatch) -> None:
    """The switch copies every conv weight there and back: one image through a CPU ResNet-18 took 40 ms with
    it against 18 ms without. A call switches when it has an image per CHANNELS_LAST_WEIGHTS_PER_IMAGE conv
    weight values (a ResNet-18 from 112 images, cnn2 or conv4 from one)."""
    import ownmark.models.encoder as encoder_module
    from ownmark.models import encode

    net = initial_model()
    convs = sum(p.numel() for p in net.parameters() if p.dim() == 4)
    monkeypatch.setattr(encoder_module, "CHANNELS_LAST_WEIGHTS_PER_IMAGE", convs // 8)  # a "large" model: 8+ images
    seen: list[bool] = []
    net[0].register_forward_pre_hook(
        lambda m, _x: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last))
    )
    small, large = torch.rand(7, 3, 16, 16), torch.rand(9, 3, 16, 16)
    encode(net, small, batch_size=4)
    assert seen == [False, False]
    seen.clear()
    encode(net, large, batch_size=4)
    assert seen == [True] * 3
    assert torch.allclose(encode(net, small), encode(net, torch.cat([small, large]))[: len(small)], atol=1e-5)
    monkeypatch.undo()
    seen.clear()
    encode(net, small[:1])  # the library's threshold: a small model switches for one image
    assert seen == [True] and encoder_module.CHANNELS_LAST_WEIGHTS_PER_IMAGE >= convs


def test_an_evaluation_inside_a_channels_last_block_keeps_the_blocks_layout() -> None:
    from ownmark.models import cpu_channels_last, encode

    net = initial_model()
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    x = torch.rand(5, 3, 16, 16)
    plain = encode(net, x)
    assert all(w.is_contiguous() for w in convs)
    with cpu_channels_last(net):
        inner = encode(net, x)  # as fit's validation does inside the training block
        assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    assert all(w.is_contiguous() for w in convs)
    assert torch.allclose(inner, plain, atol=1e-5)


def test_a_block_in_another_thread_keeps_the_layout_until_the_last_block_ends() -> None:
    """The HTTP service answers one model from several threads: a query's weights must not switch back to
    the default layout mid-forward because a query in another thread ended first."""
    import threading

    from ownmark.models import cpu_channels_last, encode

    net = initial_model()
    convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    inside, leave = threading.Event(), threading.Event()

    def first() -> None:
        with cpu_channels_last(net):
            inside.set()
            leave.wait(30)

    other = threading.Thread(target=first)
    other.start()
    assert inside.wait(30)
    with cpu_channels_last(net) as switched:
        leave.set()
        other.join(30)  # the first block has ended
        assert switched and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(w.is_contiguous() for w in convs)

    x = torch.rand(64, 3, 16, 16)
    alone = encode(net, x, batch_size=8)
    answers: list[torch.Tensor] = [torch.empty(0)] * 6

    def ask(i: int) -> None:
        answers[i] = encode(net, x, batch_size=8)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(torch.equal(a, alone) for a in answers)  # every concurrent query: the bits of a query alone
    assert all(w.is_contiguous() for w in convs)


class _Gate(nn.Module):
    """Orders two threads' forward passes: "first" waits here until "second" has arrived, "second" until
    ``first_done`` is set (after the first's whole call has returned)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_arrived, self.second_arrived, self.first_done = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = threading.current_thread().name
        if name == "first":
            self.first_arrived.set()
            assert self.second_arrived.wait(30)
        elif name == "second":
            self.second_arrived.set()
            assert self.first_done.wait(30)
        return x


def test_a_concurrent_call_ending_first_leaves_the_other_in_eval_mode() -> None:
    """encode switched a model to eval and back per call: of two threads on a model in training mode, the one
    that began first and ended first put it back in training mode under the other's forward pass (batch
    statistics of the batch, running statistics updated), and the other then left it in eval mode for good."""
    from ownmark.models import encode

    gate = _Gate()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), gate, nn.BatchNorm2d(4), nn.Flatten())
    x = torch.rand(8, 3, 6, 6)
    with torch.no_grad():
        expected = net.eval()(x)
    net.train()
    stats = net[2].running_mean.clone()
    got: dict[str, torch.Tensor] = {}

    def first() -> None:
        got["first"] = encode(net, x)
        gate.first_done.set()

    threads = [threading.Thread(target=first, name="first"),
               threading.Thread(target=lambda: got.update(second=encode(net, x)), name="second")]  # fmt: skip
    threads[0].start()
    assert gate.first_arrived.wait(30)  # the first call is in eval mode, waiting at the gate, when the second begins
    threads[1].start()
    for t in threads:
        t.join(30)
    assert torch.allclose(got["first"], expected, atol=1e-6) and torch.allclose(got["second"], expected, atol=1e-6)
    assert torch.equal(net[2].running_mean, stats)  # no batch statistics were taken
    assert net.training and all(m.training for m in net.modules())  # the caller's mode, restored once


def test_fcw_masking_zeroes_the_same_weights_in_either_layout() -> None:
    from ownmark.watermarks.fcw import random_mask_hook

    hook = random_mask_hook(0.3, 1, seed=5)
    plain, last = initial_model(), initial_model().to(memory_format=torch.channels_last)
    hook(plain, 0)
    hook(last, 0)
    zeroed = sum(int((p == 0).sum()) for p in plain.parameters())
    assert zeroed > 0.2 * sum(p.numel() for p in plain.parameters()) and same_weights(plain, last)


def test_fit_trains_a_library_net_channels_last_and_hands_it_back_in_the_default_layout() -> None:
    layouts = []

    def look(model: nn.Module, step: int) -> None:
        layouts.append(model[0].weight.is_contiguous(memory_format=torch.channels_last))

    model = initial_model()
    fit(model, toy_images(), TrainConfig(epochs=1, batch_size=16), seed=0, step_hook=look)
    assert layouts == [True] * 4 and all(p.is_contiguous() for p in model.parameters())


DDP_RUN = textwrap.dedent(
    """
    import os
    import torch
    torch.set_num_threads(1)
    from ownmark.data.toy import toy_images
    from ownmark.models import ModelSpec
    from ownmark.train import Engine, TrainConfig, fit
    torch.manual_seed(0)
    model = ModelSpec("cnn2", 3, 4, 16).build()
    result = fit(model, toy_images(seed=0, n=257), TrainConfig(epochs=2, batch_size=128), seed=0,
                 engine=Engine(accelerator="cpu", devices=2))
    total = sum(float(p.double().sum()) for p in model.parameters())
    with open(f"done-{os.getpid()}.txt", "w") as out:  # a file each: the processes share stdout
        out.write(f"{result.epochs_run} {result.images} {total!r}")
    """
)


@pytest.mark.slow
def test_ddp_on_two_processes_finishes_when_the_data_does_not_split_evenly(tmp_path: Path) -> None:
    """257 images, 2 processes, batch 128: one process had a batch more and waited forever at the next sync
    (`--devices 2` hung). Each now draws 129 per epoch (the epoch's first image fills the last row), and the
    two end with the same weights."""
    script = tmp_path / "ddp_run.py"  # a file: Fabric starts the second process by running it again
    script.write_text(DDP_RUN)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    lines = [path.read_text().split() for path in sorted(tmp_path.glob("done-*.txt"))]
    assert done.returncode == 0 and len(lines) == 2, done.stdout + done.stderr
    assert all(line[:2] == ["2", "258"] for line in lines)  # 2 epochs of 129 images on each process
    assert lines[0][2] == lines[1][2]  # DDP kept the processes' weights equal
