import json
from pathlib import Path

import pytest
import torch

from ownmark.core import Key
from ownmark.errors import IntegrityError, MissingFileError
from ownmark.io import (
    artefact_paths,
    atomic_write_bytes,
    key_digest,
    load_checkpoint,
    load_json,
    load_key,
    load_tensors,
    save_checkpoint,
    save_json,
    save_key,
    tensor_digest,
)
from ownmark.models import MODELS, ModelSpec, load_model, save_model


def make_key() -> Key:
    g = torch.Generator().manual_seed(0)
    return Key(
        scheme="fcw",
        config={"epochs": 3, "lr": 0.01, "milestones": [0.5, 0.75], "name": "ä-unicode"},
        tensors={
            "embed_x": torch.rand(5, 3, 8, 8, generator=g),
            "embed_y": torch.randint(0, 4, (5,), generator=g),
            "mask": torch.rand(7, generator=g) > 0.5,
            "raw": torch.randint(0, 255, (4, 4), dtype=torch.uint8, generator=g),
            "half": torch.rand(3, generator=g).to(torch.float16),
            "empty": torch.zeros(0, 3),
        },
        meta={"num_classes": 4, "input_shape": [3, 8, 8], "dataset": "toy", "target": 2},
    )


def error_message(call) -> str:
    with pytest.raises(IntegrityError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_key_round_trip_is_bit_identical(tmp_path: Path) -> None:
    key = make_key()
    digest = save_key(tmp_path / "key", key)
    loaded = load_key(tmp_path / "key")
    assert loaded.scheme == key.scheme and loaded.config == key.config and loaded.meta == key.meta
    assert set(loaded.tensors) == set(key.tensors)
    for name, t in key.tensors.items():
        assert loaded.tensors[name].dtype == t.dtype and torch.equal(loaded.tensors[name], t), name
    assert digest == key_digest(key) == key_digest(loaded)
    manifest = json.loads((tmp_path / "key.json").read_text())
    assert manifest["kind"] == "key" and manifest["sha256"] == digest


def test_paths_with_either_suffix_name_the_same_artefact(tmp_path: Path) -> None:
    save_key(tmp_path / "k.safetensors", make_key())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", "k.safetensors"]
    assert load_key(tmp_path / "k.json").scheme == "fcw"
    assert artefact_paths("a/b") == artefact_paths("a/b.json") == (Path("a/b.safetensors"), Path("a/b.json"))


def test_digest_sees_names_dtypes_shapes_and_bytes() -> None:
    t = torch.arange(6, dtype=torch.float32)
    base = tensor_digest({"a": t})
    assert tensor_digest({"a": t.clone()}) == base
    assert tensor_digest({"b": t}) != base
    assert tensor_digest({"a": t.reshape(2, 3)}) != base
    assert tensor_digest({"a": t.to(torch.float64)}) != base
    changed = t.clone()
    changed[5] = 5.0000005
    assert tensor_digest({"a": changed}) != base


def test_key_with_a_scalar_tensor_round_trips(tmp_path: Path) -> None:
    key = Key("fcw", {}, {"target": torch.tensor(3)}, {})
    save_key(tmp_path / "key", key)
    assert torch.equal(load_key(tmp_path / "key").tensors["target"], torch.tensor(3))


def _model_round_trip(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ModelSpec(arch, 3, 4, 16).build().eval()
    save_model(tmp_path / "m", model, info={"note": "toy"})
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["kind"] == "model" and manifest["info"] == {"note": "toy"}
    spec = {"arch": arch, "in_channels": 3, "num_classes": 4, "image_size": 16, "family": "classifier"}
    assert manifest["spec"] == spec
    assert loaded.spec == model.spec and not loaded.training
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    "arch",
    MODELS.names(),
)
def test_model_round_trip_is_bit_identical(arch: str, tmp_path: Path) -> None:
    _model_round_trip(arch, tmp_path)


def test_save_model_refuses_foreign_models(tmp_path: Path) -> None:
    msg = error_message(lambda: save_model(tmp_path / "m", torch.nn.Linear(2, 2)))
    assert "ModelSpec" in msg
    assert not any(tmp_path.iterdir())


def test_tampered_tensor_file_is_refused(tmp_path: Path) -> None:
    save_key(tmp_path / "key", make_key())
    st = tmp_path / "key.safetensors"
    data = bytearray(st.read_bytes())
    data[-3] ^= 0x01  # a bit of the last tensor's payload (the header is at the front)
    st.write_bytes(bytes(data))
    msg = error_message(lambda: load_key(tmp_path / "key"))
    assert "digest" in msg and str(st) in msg


def test_truncated_tensor_file_is_refused(tmp_path: Path) -> None:
    save_key(tmp_path / "key", make_key())
    st = tmp_path / "key.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    assert "corrupt or truncated" in error_message(lambda: load_key(tmp_path / "key"))


def test_empty_tensor_file_is_refused(tmp_path: Path) -> None:
    save_key(tmp_path / "key", make_key())
    (tmp_path / "key.safetensors").write_bytes(b"")
    assert "corrupt or truncated" in error_message(lambda: load_key(tmp_path / "key"))


@pytest.mark.parametrize("missing", ["key.safetensors", "key.json"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    save_key(tmp_path / "key", make_key())
    (tmp_path / missing).unlink()
    with pytest.raises(MissingFileError, match=missing.replace(".", r"\.")) as info:
        load_key(tmp_path / "key")
    assert "\n" not in str(info.value) and isinstance(info.value, FileNotFoundError)


def test_missing_everything(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError):
        load_key(tmp_path / "nothing")
    with pytest.raises(MissingFileError):
        load_model(tmp_path / "nothing")
    with pytest.raises(MissingFileError):
        load_json(tmp_path / "nothing.json")


def test_model_file_loaded_as_key_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path / "m", ModelSpec("cnn2", 3, 4, 16).build())
    msg = error_message(lambda: load_key(tmp_path / "m"))
    assert "holds a model, not a key" in msg


def test_key_file_loaded_as_model_is_refused(tmp_path: Path) -> None:
    save_key(tmp_path / "k", make_key())
    assert "holds a key, not a model" in error_message(lambda: load_model(tmp_path / "k"))


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00garbage", b"", b'{"kind": "key"'])
def test_manifest_garbage_is_refused(tmp_path: Path, garbage: bytes) -> None:
    save_key(tmp_path / "key", make_key())
    (tmp_path / "key.json").write_bytes(garbage)
    error_message(lambda: load_key(tmp_path / "key"))


@pytest.mark.parametrize("manifest", [[1, 2], {"kind": "key"}, {"sha256": "00"}, "key"])
def test_json_that_is_no_manifest_is_refused(tmp_path: Path, manifest: object) -> None:
    save_key(tmp_path / "key", make_key())
    (tmp_path / "key.json").write_text(json.dumps(manifest))
    assert "not an ownmark manifest" in error_message(lambda: load_key(tmp_path / "key"))


def test_manifest_with_another_digest_is_refused(tmp_path: Path) -> None:
    save_key(tmp_path / "a", make_key())
    other = make_key()
    other.tensors["embed_y"] = other.tensors["embed_y"].flip(0)
    save_key(tmp_path / "b", other)
    (tmp_path / "a.json").write_bytes((tmp_path / "b.json").read_bytes())  # swapped manifest
    assert "digest" in error_message(lambda: load_tensors(tmp_path / "a", "key"))


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    save_key(tmp_path / "key", make_key())
    save_key(tmp_path / "key", make_key())  # overwrite in place
    save_model(tmp_path / "m", ModelSpec("cnn2", 3, 4, 16).build())
    save_json(tmp_path / "r.json", {"a": (1, 2), "p": Path("x")})
    save_checkpoint(tmp_path / "ckpt.pt", {"epoch": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt.pt", "key.json", "key.safetensors", "m.json", "m.safetensors", "r.json"]
    assert load_json(tmp_path / "r.json") == {"a": [1, 2], "p": "x"}


def test_failed_atomic_write_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "seed": 7, "config": {"milestones": (0.5,)}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 3 and loaded["seed"] == 7 and loaded["config"] == {"milestones": (0.5,)}
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0))


@pytest.mark.parametrize("garbage", [b"garbage, not a checkpoint", b"", b"PK\x03\x04truncated zip"])
def test_load_checkpoint_on_garbage(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "c.pt").write_bytes(garbage)
    assert "not a readable checkpoint" in error_message(lambda: load_checkpoint(tmp_path / "c.pt"))


def test_load_checkpoint_truncated(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.rand(100)}, "epoch": 1})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    error_message(lambda: load_checkpoint(tmp_path / "c.pt"))


def test_load_checkpoint_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "obj": Path("x")}, tmp_path / "c.pt")  # a full pickle, not weights only
    assert "UnpicklingError" in error_message(lambda: load_checkpoint(tmp_path / "c.pt"))


def test_load_checkpoint_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize(
    ("field", "edit"),
    [("meta", lambda m: m.update(num_classes=1000)), ("config", lambda c: c.update(n_verify=1)),
     ("scheme", None)],
)  # fmt: skip
def test_an_edited_key_manifest_is_refused_with_one_line(tmp_path: Path, field: str, edit) -> None:
    """The commitment covers everything that decides a verdict: p0 = 1/K comes from meta.num_classes."""
    save_key(tmp_path / "key", make_key())
    manifest = json.loads((tmp_path / "key.json").read_text())
    if edit is None:
        manifest[field] = "content"
    else:
        edit(manifest[field])
    (tmp_path / "key.json").write_text(json.dumps(manifest))
    assert "commitment" in error_message(lambda: load_key(tmp_path / "key"))


def test_a_key_whose_digest_covers_only_tensors_is_refused(tmp_path: Path) -> None:
    key = make_key()
    save_key(tmp_path / "key", key)
    manifest = json.loads((tmp_path / "key.json").read_text())
    del manifest["digest_covers"]
    manifest["sha256"] = tensor_digest(key.tensors)  # what ownmark 0.1 wrote
    (tmp_path / "key.json").write_text(json.dumps(manifest))
    assert "older ownmark" in error_message(lambda: load_key(tmp_path / "key"))


def test_outputs_are_group_readable_and_keys_private(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_key(tmp_path / "key", make_key())
        save_model(tmp_path / "m", ModelSpec("cnn2", 3, 4, 16).build())
        save_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert mode["key.safetensors"] == mode["key.json"] == 0o600  # the owner's secret
    assert mode["m.safetensors"] == mode["m.json"] == mode["r.json"] == 0o644  # reports, models: readable


def test_a_write_under_a_file_is_one_output_path_error(tmp_path: Path) -> None:
    from ownmark.errors import OutputPathError

    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=r"cannot write .*f/sub/r\.json: Not a directory; choose a path"):
        save_json(tmp_path / "f" / "sub" / "r.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize(
    ("where", "kind", "match"),
    [("file/x", "file", "which is a file, not a folder"), ("/proc/x", "file", "lies in /proc"),
     ("/dev/ownmark", "folder", "lies in /dev"), ("dir", "file", "is a folder but names a file"),
     ("dir", "prefix", "is a folder; give a file name"), ("file", "folder", "is a file but names a folder")],
)  # fmt: skip
def test_check_writable_refuses_paths_before_work(tmp_path: Path, where: str, kind: str, match: str) -> None:
    from ownmark.errors import OutputPathError
    from ownmark.paths import check_writable

    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    path = Path(where) if where.startswith("/") else tmp_path / where
    with pytest.raises(OutputPathError, match=match):
        check_writable(path, "--out", kind)
    assert check_writable(tmp_path / "new" / "deeper" / "m", "--out", "prefix") == tmp_path / "new" / "deeper" / "m"
    assert not (tmp_path / "new").exists()  # checking writes nothing
