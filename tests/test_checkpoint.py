"""Checkpoints: exact round trip, atomic save, pickle-free and tamper-evident load."""

from __future__ import annotations

import io
import json
import os
import sys
import types
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib import format as npy_format
from numpy.testing import assert_array_equal

import minicae
from minicae import checkpoint
from minicae.checkpoint import load, load_state, save
from minicae.errors import CheckpointError
from minicae.nn import Linear, Module, Sequential
from minicae.optim import Adam

pytestmark = pytest.mark.usefixtures("numpy_backend")


class TinyAE(Module):
    """A two-layer model following the models protocol (get_config, cls(**config))."""

    def __init__(self, n_in=4, n_code=2, seed=0, dtype="float32"):
        self.n_in, self.n_code, self.seed, self.dtype = n_in, n_code, seed, dtype
        self.encoder = Sequential(Linear(n_in, n_code, rng=seed, dtype=np.dtype(dtype)))
        self.decoder = Sequential(Linear(n_code, n_in, rng=seed + 1, dtype=np.dtype(dtype)))

    def get_config(self):
        return {"n_in": self.n_in, "n_code": self.n_code, "seed": self.seed,
                "dtype": self.dtype}


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Register TinyAE in minicae.models.MODELS (faked if models.py is absent)."""
    try:
        from minicae import models
    except ImportError:
        models = types.ModuleType("minicae.models")
        models.MODELS = {}
        monkeypatch.setitem(sys.modules, "minicae.models", models)
        monkeypatch.setattr(minicae, "models", models, raising=False)
    monkeypatch.setitem(models.MODELS, "TinyAE", TinyAE)
    return models.MODELS


def _trained(seed=0, steps=2):
    """A TinyAE with perturbed weights and an Adam that has taken ``steps`` steps."""
    rng = np.random.default_rng(seed)
    model = TinyAE(seed=seed)
    for p in model.parameters():
        p.data += rng.standard_normal(p.shape).astype(p.data.dtype)
    opt = Adam(model, lr=0.01)
    for _ in range(steps):
        model.zero_grad()
        for p in model.parameters():
            p.grad += rng.standard_normal(p.shape).astype(p.data.dtype)
        opt.step()
    return model, opt


def _metadata():
    rng = np.random.default_rng(7)
    rng.random(3)
    return {"epoch": 3, "rng_state": rng.bit_generator.state,
            "history": {"loss": [0.5, 0.25, float("nan")]}, "note": "ok"}


def _assert_same_model(a, b, where=""):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert list(pa) == list(pb), where
    for name in pa:
        assert pa[name].data.dtype == pb[name].data.dtype, f"{where} {name}"
        assert_array_equal(pa[name].data, pb[name].data, err_msg=f"{where} {name}")


def _assert_same_optimizer_state(a, b):
    assert {k: v for k, v in a.items() if k != "state"} == \
        {k: v for k, v in b.items() if k != "state"}
    assert sorted(a["state"]) == sorted(b["state"])
    for key in a["state"]:
        assert_array_equal(a["state"][key], b["state"][key], err_msg=key)


def test_round_trip_is_exact(tmp_path):
    model, opt = _trained()
    path = tmp_path / "ck.npz"
    save(path, model, opt, **_metadata())
    ck = load(path)
    assert isinstance(ck, checkpoint.Checkpoint)
    _assert_same_model(model, ck.model)
    _assert_same_optimizer_state(opt.state_dict(), ck.optimizer_state)
    meta = ck.metadata
    assert np.isnan(meta["history"]["loss"][2])
    meta["history"]["loss"][2] = "nan"
    expected = _metadata()
    expected["history"]["loss"][2] = "nan"
    assert meta == expected
    # resuming: the restored optimizer and RNG continue exactly as the originals
    opt2 = Adam(ck.model, lr=0.5)
    opt2.load_state_dict(ck.optimizer_state)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(0)
    rng_a.random(3)
    rng_b.bit_generator.state = ck.metadata["rng_state"]
    assert_array_equal(rng_a.random(5), rng_b.random(5))
    for o, m in ((opt, model), (opt2, ck.model)):
        for p in m.parameters():
            p.grad[...] = 0.5
        o.step()
    _assert_same_model(model, ck.model, "after one more step")


def test_float64_model_and_no_optimizer(tmp_path):
    model = TinyAE(seed=3).astype(np.float64)
    save(tmp_path / "m.npz", model)
    ck = load(tmp_path / "m.npz")
    _assert_same_model(model, ck.model)
    assert ck.optimizer_state is None and ck.metadata == {}


def test_file_layout_manifest_and_numpy_compatibility(tmp_path):
    model, opt = _trained()
    path = tmp_path / "ck.npz"
    save(path, model, opt, epoch=1)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert names[0] == "manifest.json"
    assert "model/encoder.0.weight.npy" in names
    assert "optim/encoder.0.weight.exp_avg.npy" in names
    assert manifest["format"] == "minicae-checkpoint" and manifest["format_version"] == 1
    assert manifest["model"] == {"class": "TinyAE", "config": model.get_config()}
    entry = next(e for e in manifest["arrays"] if e["name"] == "model/encoder.0.weight")
    assert entry["shape"] == [2, 4] and entry["dtype"] == "<f4" and len(entry["sha256"]) == 64
    with np.load(path, allow_pickle=False) as npz:
        assert_array_equal(npz["model/encoder.0.weight"], model.encoder[0].weight.data)
    state = load_state(path)
    assert state.manifest == manifest and set(state.arrays) == {e["name"] for e in
                                                                manifest["arrays"]}


def test_saving_the_same_state_twice_gives_identical_bytes(tmp_path):
    model, opt = _trained()
    save(tmp_path / "a.npz", model, opt, epoch=2)
    save(tmp_path / "b.npz", model, opt, epoch=2)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def _broken_write(f, manifest_bytes, members):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise RuntimeError("disk on fire")


@pytest.mark.parametrize("where", ["write", "replace", "interrupt"])
def test_failed_save_leaves_previous_file_and_no_temp(tmp_path, monkeypatch, where):
    old_model, old_opt = _trained(seed=0)
    path = tmp_path / "ck.npz"
    save(path, old_model, old_opt, epoch=1)
    before = path.read_bytes()

    def refuse(src, dst):
        raise OSError("rename refused")

    def interrupt(f, manifest_bytes, members):
        f.write(b"partial")
        raise KeyboardInterrupt

    new_model, _ = _trained(seed=1)
    with monkeypatch.context() as mp:
        if where == "write":
            mp.setattr(checkpoint, "_write_zip", _broken_write)
            exc = RuntimeError
        elif where == "replace":
            mp.setattr(checkpoint.os, "replace", refuse)
            exc = OSError
        else:
            mp.setattr(checkpoint, "_write_zip", interrupt)
            exc = KeyboardInterrupt
        with pytest.raises(exc):
            save(path, new_model, epoch=2)
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"], where
    assert path.read_bytes() == before
    ck = load(path)
    _assert_same_model(old_model, ck.model, where)
    assert ck.metadata == {"epoch": 1}


@pytest.mark.parametrize("metadata,match", [
    ({"step": np.int64(3)}, r"metadata\['step'\].*numpy\.int64.*\.item\(\)"),
    ({"history": {"loss": [1.0, object()]}}, r"metadata\['history'\]\['loss'\]\[1\]"),
    ({"table": {1: "a"}}, r"metadata\['table'\] to have str keys"),
])
def test_non_json_metadata_is_rejected_before_writing(tmp_path, metadata, match):
    with pytest.raises(TypeError, match=match):
        save(tmp_path / "ck.npz", TinyAE(), **metadata)
    assert os.listdir(tmp_path) == []


def test_any_module_saves_and_loads_into_the_model_you_built(tmp_path):
    from minicae.nn import ReLU

    def build(seed):
        return Sequential(Linear(4, 3, rng=seed), ReLU(), Linear(3, 4, rng=seed + 1))

    model, rng = build(0), np.random.default_rng(0)
    opt = Adam(model, lr=0.01)
    for _ in range(2):
        model.zero_grad()
        for p in model.parameters():
            p.grad += rng.standard_normal(p.shape).astype(p.data.dtype)
        opt.step()
    path = tmp_path / "seq.npz"
    save(path, model, opt, epoch=2)
    manifest = load_state(path).manifest
    assert manifest["model"] == {"class": "Sequential", "config": None}
    assert manifest["format_version"] == 2        # a version-1 reader says "upgrade"
    with pytest.raises(CheckpointError, match=r"Sequential was saved without a rebuild "
                                              r"recipe.*load\(path, model=your_sequential\)"):
        load(path)
    mine = build(5)                                 # other initial weights
    ck = load(path, model=mine)
    assert ck.model is mine and ck.metadata == {"epoch": 2}
    _assert_same_model(model, mine)
    opt2 = Adam(mine, lr=0.01)
    opt2.load_state_dict(ck.optimizer_state)
    _assert_same_optimizer_state(opt.state_dict(), opt2.state_dict())
    with pytest.raises(CheckpointError, match=r"expected a Sequential .*got TinyAE"):
        load(path, model=TinyAE())
    with pytest.raises(CheckpointError, match="do not fit this Sequential"):
        load(path, model=Sequential(Linear(4, 2, rng=0), ReLU(), Linear(2, 4, rng=0)))
    with pytest.raises(CheckpointError, match="existing directory"):
        save(tmp_path / "nope" / "ck.npz", TinyAE())


def test_a_model_whose_get_config_is_not_implemented_saves_without_recipe(tmp_path):
    from minicae.models import Autoencoder

    class Mine(Autoencoder):
        def __init__(self):
            super().__init__()
            self.encoder = Sequential(Linear(4, 2, rng=0))
            self.decoder = Sequential(Linear(2, 4, rng=1))

    save(tmp_path / "mine.npz", Mine())
    assert load_state(tmp_path / "mine.npz").manifest["model"]["config"] is None
    _assert_same_model(Mine(), load(tmp_path / "mine.npz", model=Mine()).model)


def test_load_into_a_model_refuses_another_config(tmp_path):
    from minicae.models import ConvAutoencoder

    path = tmp_path / "ck.npz"
    save(path, ConvAutoencoder(1, channels=[2], input_size=8, activation="relu", seed=0))
    same = ConvAutoencoder(1, channels=[2], input_size=8, activation="relu", seed=9)
    assert load(path, model=same).model is same           # the seed is only the init
    tanh = ConvAutoencoder(1, channels=[2], input_size=8, activation="tanh", seed=0)
    with pytest.raises(CheckpointError, match=r"activation='tanh' \(saved 'relu'\)"):
        load(path, model=tanh)


def _crafted_dense_checkpoint(path, size=20000):
    """A manifest-only file whose config asks for two size x size weight matrices."""
    manifest = {"format": "minicae-checkpoint", "format_version": 1,
                "minicae_version": "0.1.0",
                "model": {"class": "DenseAutoencoder",
                          "config": {"in_features": size, "hidden": [size],
                                     "decoder_hidden": []}},
                "arrays": [], "optimizer": None, "metadata": {}}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))


def test_config_is_checked_against_the_file_before_building(tmp_path):
    path = tmp_path / "bomb.npz"
    _crafted_dense_checkpoint(path)
    assert path.stat().st_size < 600
    with pytest.raises(CheckpointError, match=r"implies 800040000 parameters, but the "
                                              r"file holds 0.*nothing was built"):
        load(path)


@pytest.mark.slow
def test_rejected_config_bomb_peak_memory_is_small(tmp_path):
    import subprocess

    path = tmp_path / "bomb.npz"
    _crafted_dense_checkpoint(path)
    code = ("import resource, sys, minicae, minicae.models\n"
            "from minicae.errors import CheckpointError\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    minicae.load(sys.argv[1])\nexcept CheckpointError:\n    pass\n"
            "else:\n    sys.exit('loaded')\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root,
                                                           MINICAE_BACKEND="numpy"))
    assert proc.returncode == 0, proc.stderr
    grown_kib = int(proc.stdout)
    assert grown_kib <= 64 * 1024, f"peak memory grew {grown_kib} KiB rejecting the file"


def test_missing_file_directory_and_not_a_zip(tmp_path):
    missing = tmp_path / "absent.npz"
    with pytest.raises(CheckpointError, match=r"absent\.npz.*no such file") as info:
        load(missing)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(CheckpointError, match="got a directory"):
        load(tmp_path)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.npz.*BadZipFile"):
        load(text)


def _rewrite(src, dst, *, manifest=None, replace=None, add=None, drop=()):
    """Copy a checkpoint zip, editing members (zip CRCs stay valid)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if info.filename == "manifest.json" and manifest is not None:
                data = json.dumps(manifest(json.loads(data))).encode()
            if replace and info.filename in replace:
                data = replace[info.filename]
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)


@pytest.fixture
def real(tmp_path):
    model, opt = _trained()
    path = tmp_path / "real.npz"
    save(path, model, opt, **_metadata())
    return path


def _set(key, value):
    def edit(m):
        m[key] = value
        return m
    return edit


@pytest.mark.parametrize("edit,match", [
    (dict(manifest=_set("format_version", 3)), r"format version 1 or 2, got 3.*newer minicae"),
    (dict(manifest=_set("format_version", 0)), "Unsupported format version"),
    (dict(manifest=_set("format", "other")), "not a minicae checkpoint"),
    (dict(manifest=_set("model", {"class": "Nope", "config": {}})),
     r"unknown model class 'Nope'"),
    (dict(manifest=_set("model", {"class": "TinyAE", "config": {"bogus": 1}})),
     r"does not rebuild TinyAE.*bogus"),
    (dict(manifest=_set("model", {"class": "TinyAE", "config": {"n_in": 5}})),
     "do not fit the rebuilt TinyAE"),
    (dict(manifest=_set("metadata", [])), "manifest key 'metadata'"),
    (dict(drop=("model/decoder.0.bias.npy",)), r"missing \['model/decoder\.0\.bias\.npy'\]"),
    (dict(add={"model/extra.npy": b"x"}), r"unexpected \['model/extra\.npy'\]"),
    (dict(drop=("manifest.json",)), "no manifest.json member"),
])
def test_foreign_or_damaged_checkpoints(real, tmp_path, edit, match):
    bad = tmp_path / "bad.npz"
    _rewrite(real, bad, **edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load(bad)
    assert "bad.npz" in str(info.value)


def test_tampered_array_is_named(real, tmp_path):
    with zipfile.ZipFile(real) as zf:
        a = np.load(io.BytesIO(zf.read("model/encoder.0.bias.npy")), allow_pickle=False)
    a = a.copy()
    a[0] += 1
    buf = io.BytesIO()
    np.save(buf, a)
    bad = tmp_path / "bad.npz"
    _rewrite(real, bad, replace={"model/encoder.0.bias.npy": buf.getvalue()})
    with pytest.raises(CheckpointError, match=r"'model/encoder\.0\.bias': SHA-256"):
        load(bad)


def test_map_model_for_classes_outside_the_registry(real, registry):
    del registry["TinyAE"]
    with pytest.raises(CheckpointError, match="unknown model class 'TinyAE'"):
        load(real)
    assert isinstance(load(real, map_model={"TinyAE": TinyAE}).model, TinyAE)


TRIGGERED = []


def _canary():
    TRIGGERED.append(True)
    return "pwned"


class _Payload:
    def __reduce__(self):
        return (_canary, ())


def _object_npy():
    buf = io.BytesIO()
    npy_format.write_array(buf, np.array([_Payload()], dtype=object), allow_pickle=True)
    return buf.getvalue()


def test_pickled_payload_is_never_executed(real, tmp_path):
    evil = _object_npy()
    # the canary works: unpickling this member would run code
    np.load(io.BytesIO(evil), allow_pickle=True)
    assert TRIGGERED == [True]
    TRIGGERED.clear()
    data_start = len(evil) - len(evil.split(b"\n", 1)[1])
    sha = __import__("hashlib").sha256(evil[data_start:]).hexdigest()

    def listed_as(dtype):
        def edit(m):
            m["arrays"].append({"name": "model/evil", "shape": [1], "dtype": dtype,
                                "sha256": sha})
            return m
        return edit

    def swapped(m):
        entry = next(e for e in m["arrays"] if e["name"] == "model/encoder.0.bias")
        entry.update(shape=[1], dtype="<f8", sha256=sha)
        return m

    cases = {
        "object dtype in manifest": dict(manifest=listed_as("|O"), add={"model/evil.npy": evil}),
        "float in manifest, object in member": dict(manifest=listed_as("<f8"),
                                                    add={"model/evil.npy": evil}),
        "real member replaced": dict(manifest=swapped,
                                     replace={"model/encoder.0.bias.npy": evil}),
        "unlisted member": dict(add={"model/evil.npy": evil}),
    }
    for label, edit in cases.items():
        bad = tmp_path / "evil.npz"
        _rewrite(real, bad, **edit)
        with pytest.raises(CheckpointError):
            load(bad)
        assert TRIGGERED == [], label


def _fingerprint(model, opt_state, meta):
    """Everything a load returns, as bytes, so thousands of comparisons stay cheap."""
    arrays = [(name, p.data.dtype.str, p.data.shape, p.data.tobytes())
              for name, p in model.named_parameters()]
    arrays += [(key, a.dtype.str, a.shape, a.tobytes())
               for key, a in sorted(opt_state["state"].items())]
    json_part = {k: v for k, v in opt_state.items() if k != "state"}
    return arrays, json.dumps(json_part), json.dumps(meta)


def _load_outcome(data, tmp_dir, reference):
    """Load ``data``: it must raise CheckpointError or give the reference back."""
    path = tmp_dir / "fuzz.npz"
    path.write_bytes(data)
    try:
        ck = load(path)
    except CheckpointError:
        return "error"
    assert _fingerprint(*ck) == reference, "a corrupted file loaded a different state"
    return "loaded"


@pytest.fixture(scope="module")
def fuzz_reference(tmp_path_factory):
    tmp_dir = tmp_path_factory.mktemp("fuzz")
    model, opt = _trained()
    path = tmp_dir / "real.npz"
    meta = _metadata()
    save(path, model, opt, **meta)
    return path.read_bytes(), _fingerprint(model, opt.state_dict(), meta), tmp_dir


@pytest.mark.slow
def test_every_truncation_and_single_bit_flip(fuzz_reference):
    data, reference, tmp_dir = fuzz_reference
    n = len(data)
    outcomes = {"error": 0, "loaded": 0}
    for length in sorted({*range(0, n, max(1, n // 200)), *range(n - 30, n)}):
        assert _load_outcome(data[:length], tmp_dir, reference) == "error", length
    for pos in range(n):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos * 5 % 8)
        outcomes[_load_outcome(bytes(flipped), tmp_dir, reference)] += 1
    # most flips must be caught; a few (zip timestamps, attributes) are harmless
    assert outcomes["error"] > 0.8 * n, outcomes


@given(st.binary(max_size=2048))
def test_random_bytes_raise_checkpoint_error(fuzz_reference, blob):
    _, reference, tmp_dir = fuzz_reference
    assert _load_outcome(blob, tmp_dir, reference) == "error"
    assert _load_outcome(b"PK\x03\x04" + blob, tmp_dir, reference) == "error"


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                max_size=8))
def test_random_byte_overwrites(fuzz_reference, edits):
    data, reference, tmp_dir = fuzz_reference
    damaged = bytearray(data)
    for pos, value in edits:
        damaged[pos % len(data)] = value
    _load_outcome(bytes(damaged), tmp_dir, reference)


def test_every_writer_goes_through_the_one_atomic_writer():
    import re
    from pathlib import Path

    package = Path(checkpoint.__file__).parent
    direct = re.compile(r"os\.replace\(|mkstemp\(|json\.dump\(|\.savefig\((?!fh)|"
                        r"open\([^)]*[\"'](?:w|a|x)b?[\"']|\.write_(?:text|bytes)\(")
    found = [f"{path.relative_to(package)}:{i}: {line.strip()}"
             for path in sorted(package.rglob("*.py"))
             if path.name not in ("_atomic.py", "_runfiles.py")
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if direct.search(line)]
    assert found == [], "write through minicae._runfiles.atomic_write:\n" + "\n".join(found)
