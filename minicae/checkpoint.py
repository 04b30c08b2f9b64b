"""Checkpoints: one ``.npz`` zip of ``.npy`` arrays plus a JSON manifest.

A checkpoint holds a model's parameters (members ``model/<name>.npy``), an
optimizer's arrays (``optim/<param name>.<slot>.npy``) and a plain-text
``manifest.json`` member that says what the file is: format name and
version, the minicae version that wrote it, the model class and its
``get_config()``, the shape, dtype and SHA-256 of every array, the
optimizer's JSON state and free JSON metadata (epoch, RNG state, history).

The manifest is a separate zip member rather than a uint8 array so that it
is readable with ``unzip -p ckpt.npz manifest.json`` and needs no ``.npy``
parsing before it can be checked; ``numpy.load(path)`` still opens the file
and lists the arrays under ``model/...`` and ``optim/...``.

Guarantees: :func:`save` is atomic (temporary file in the same directory,
``fsync``, ``os.replace``, ``fsync`` of the directory), so a crash leaves
the previous file intact; :func:`load` never unpickles (it parses ``.npy``
headers itself and accepts only plain numeric dtypes), checks every array
against the manifest's shape, dtype and SHA-256, and reports every problem
as a :class:`~minicae.errors.CheckpointError` naming the file.
See docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from typing import NamedTuple

import numpy
from numpy.lib import format as npy_format

from . import __version__
from ._runfiles import atomic_write
from .backend import to_numpy
from .errors import CheckpointError
from .nn.module import Module

__all__ = ["save", "load", "load_state", "Checkpoint", "CheckpointState",
           "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "minicae-checkpoint"
FORMAT_VERSION = 1
# version 2: a model saved without a rebuild recipe (config null); files with one stay 1
SUPPORTED_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
# plain numeric dtypes, little-endian (save converts big-endian arrays)
_DTYPES = frozenset({"|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8",
                     "<f2", "<f4", "<f8", "<c8", "<c16"})
_MAX_NPY_HEADER = 65536
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal states give byte-identical files


class Checkpoint(NamedTuple):
    """What :func:`load` returns."""

    model: Module
    optimizer_state: dict | None  # for optimizer.load_state_dict, or None
    metadata: dict


class CheckpointState(NamedTuple):
    """What :func:`load_state` returns: the verified manifest and arrays."""

    manifest: dict
    arrays: dict  # "model/<name>" or "optim/<key>" -> numpy.ndarray


def _check_json(value, where, label):
    """Raise TypeError naming ``label`` unless ``value`` is plain JSON data."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return  # NaN/inf are written as Python's json does (NaN, Infinity)
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, where, f"{label}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: expected {label} to have str keys, got key "
                                f"{key!r} of type {type(key).__name__}.")
            _check_json(item, where, f"{label}[{key!r}]")
        return
    fix = " Convert it with .item() or .tolist()." if hasattr(value, "dtype") else ""
    raise TypeError(f"{where}: expected {label} to be JSON-able (None, bool, int, float, "
                    f"str, list, dict with str keys), got {type(value).__module__}."
                    f"{type(value).__name__}.{fix}")


def _host_array(value, where, name):
    a = numpy.ascontiguousarray(to_numpy(value))
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if a.dtype.str not in _DTYPES:
        raise TypeError(f"{where}: expected {name} to have a plain numeric dtype, got "
                        f"{a.dtype}.")
    return a


def _npy_bytes(a):
    buffer = io.BytesIO()
    npy_format.write_array(buffer, a, allow_pickle=False)
    return buffer.getvalue()


def _write_zip(f, manifest_bytes, members):
    """Write the manifest and the ``.npy`` members as stored (uncompressed) entries."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [(MANIFEST, manifest_bytes), *members]:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def save(path, model, optimizer=None, **metadata):
    """Write ``model`` (and ``optimizer``) to a checkpoint file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; written exactly there (no suffix is added). Its
        directory must exist. An existing file is replaced only once the new
        one is complete on disk.
    model : Module
        Any minicae Module: its parameters are always saved. When it has
        ``get_config()`` (a JSON-able dict of constructor arguments such that
        ``type(model)(**config)`` rebuilds it) the recipe is saved too;
        without one, :func:`load` needs the model: ``load(path, model=m)``.
    optimizer : minicae.optim.Optimizer, optional
        Its ``state_dict()`` is stored: arrays under ``optim/``, the rest in
        the manifest.
    **metadata
        Free JSON-able values (epoch, ``rng.bit_generator.state``, history,
        ...), returned by :func:`load` as ``Checkpoint.metadata``. Tuples
        come back as lists.

    Raises
    ------
    TypeError
        The model is not a Module, or a config, metadata or optimizer value
        is not JSON-able (the message names the key).
    CheckpointError
        The target directory does not exist.
    OSError
        Writing failed; the previous file, if any, is intact.
    """
    where = f"save({os.fspath(path)!r})"
    path = os.fspath(path)
    if not isinstance(model, Module):
        raise TypeError(f"{where}: expected a minicae Module, got {type(model).__name__}.")
    try:
        config = model.get_config() if callable(getattr(model, "get_config", None)) else None
    except NotImplementedError:      # e.g. an Autoencoder subclass that adds no recipe
        config = None
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"{where}: expected {type(model).__name__}.get_config() to return "
                        f"a dict, got {type(config).__name__}.")
    _check_json(config, where, "model config")
    _check_json(metadata, where, "metadata")
    arrays = {f"model/{name}": _host_array(a, where, name)
              for name, a in model.state_dict().items()}
    optimizer_json = None
    if optimizer is not None:
        state = optimizer.state_dict()
        optimizer_json = {k: v for k, v in state.items() if k != "state"}
        _check_json(optimizer_json, where, "optimizer state")
        for key, a in state["state"].items():
            arrays[f"optim/{key}"] = _host_array(a, where, key)
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION if config is not None else 2,
        "minicae_version": __version__,
        "model": {"class": type(model).__name__, "config": config},
        "arrays": [{"name": name, "shape": list(a.shape), "dtype": a.dtype.str,
                    "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
                   for name, a in arrays.items()],
        "optimizer": optimizer_json, "metadata": metadata}
    manifest_bytes = json.dumps(manifest, indent=1).encode("utf-8")
    members = [(f"{name}.npy", _npy_bytes(a)) for name, a in arrays.items()]
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CheckpointError(f"{where}: expected an existing directory for {path!r}, got "
                              f"none. Create it first.")
    atomic_write(path, lambda f: _write_zip(f, manifest_bytes, members))


def _fail(where, what):
    return CheckpointError(f"{where}: {what}")


def _load_params(model, params, where, what):
    """``model`` with the saved parameters loaded, or a CheckpointError naming ``what``."""
    try:
        model.load_state_dict(params)
    except (KeyError, ValueError, TypeError) as exc:
        raise _fail(where, f"the saved parameters do not fit {what} "
                           f"({type(exc).__name__}: {exc}).") from exc
    return model


def _check_entry(entry, where):
    """Validate one manifest array entry; return ``(name, shape, dtype, nbytes)``."""
    if not (isinstance(entry, dict) and set(entry) == {"name", "shape", "dtype", "sha256"}):
        raise _fail(where, f"expected each manifest array entry to have keys name, shape, "
                           f"dtype, sha256, got {entry!r}.")
    name, shape, dtype, digest = (entry[k] for k in ("name", "shape", "dtype", "sha256"))
    if not (isinstance(name, str) and name.split("/", 1)[0] in ("model", "optim")
            and len(name.split("/", 1)) == 2 and name.split("/", 1)[1]):
        raise _fail(where, f"expected an array name 'model/<name>' or 'optim/<key>', got "
                           f"{name!r}.")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise _fail(where, f"expected the shape of {name!r} to be a list of integers >= 0, "
                           f"got {shape!r}.")
    if dtype not in _DTYPES:
        raise _fail(where, f"expected the dtype of {name!r} to be a plain numeric dtype "
                           f"({', '.join(sorted(_DTYPES))}), got {dtype!r}. Object and "
                           f"structured arrays are never loaded.")
    if not (isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise _fail(where, f"expected a hex SHA-256 for {name!r}, got {digest!r}.")
    return name, tuple(shape), numpy.dtype(dtype), math.prod(shape) * numpy.dtype(dtype).itemsize


def _check_manifest(raw, where):
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(where, f"the manifest is not valid JSON ({type(exc).__name__}: "
                           f"{exc}). The file is corrupt.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise _fail(where, f"expected format {FORMAT_NAME!r}, got {got!r}. This is not a "
                           f"minicae checkpoint.")
    version = manifest.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        newer = type(version) is int and version > max(SUPPORTED_VERSIONS)
        raise _fail(where, f"expected format version "
                           f"{' or '.join(map(str, SUPPORTED_VERSIONS))}, got {version!r}."
                           + (" It was written by a newer minicae; upgrade minicae to read "
                              "it." if newer else " Unsupported format version."))
    kinds = {"minicae_version": str, "model": dict, "arrays": list,
             "optimizer": (dict, type(None)), "metadata": dict}
    for key, kind in kinds.items():
        if key not in manifest or not isinstance(manifest[key], kind):
            raise _fail(where, f"expected manifest key {key!r} of type "
                               f"{getattr(kind, '__name__', 'dict or null')}, got "
                               f"{type(manifest.get(key)).__name__}.")
    model = manifest["model"]
    config_types = dict if version == 1 else (dict, type(None))
    if not (isinstance(model.get("class"), str)
            and isinstance(model.get("config"), config_types)):
        raise _fail(where, f"expected manifest model to be {{'class': str, 'config': dict}},"
                           f" got {model!r}.")
    entries = [_check_entry(e, where) for e in manifest["arrays"]]
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        raise _fail(where, "the manifest lists an array twice. The file is corrupt.")
    if manifest["optimizer"] is None and any(n.startswith("optim/") for n in names):
        raise _fail(where, "optimizer arrays are listed but the optimizer state is null.")
    return manifest, entries


def _read_npy(raw, entry, name, shape, dtype, nbytes, where):
    """Parse one ``.npy`` member without pickle and check it against the manifest."""
    fp = io.BytesIO(raw)
    major, _ = npy_format.read_magic(fp)
    read_header = (npy_format.read_array_header_1_0 if major == 1
                   else npy_format.read_array_header_2_0)
    header_shape, fortran_order, header_dtype = read_header(fp, max_header_size=_MAX_NPY_HEADER)
    if (tuple(header_shape) != shape or header_dtype != dtype
            or header_dtype.str not in _DTYPES or fortran_order):
        raise _fail(where, f"array {name!r}: expected C-order {dtype.str} of shape {shape}, "
                           f"got {'Fortran' if fortran_order else 'C'}-order "
                           f"{header_dtype.str} of shape {tuple(header_shape)}.")
    data = raw[fp.tell():]
    if len(data) != nbytes:
        raise _fail(where, f"array {name!r}: expected {nbytes} bytes of data, got "
                           f"{len(data)}. The file is truncated or corrupt.")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise _fail(where, f"array {name!r}: SHA-256 does not match the manifest. The "
                           f"file is corrupt or was tampered with.")
    return numpy.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _read(path, where):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        members = [info.filename for info in infos]
        if len(set(members)) != len(members):
            raise _fail(where, "the zip lists a member twice. The file is corrupt.")
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise _fail(where, f"member {info.filename!r} is compressed or encrypted; "
                                   f"minicae writes stored members only. The file is "
                                   f"corrupt or was not written by minicae.")
        if MANIFEST not in members:
            raise _fail(where, f"no {MANIFEST} member. This is not a minicae checkpoint.")
        manifest, entries = _check_manifest(zf.read(MANIFEST), where)
        expected = {f"{e[0]}.npy" for e in entries} | {MANIFEST}
        missing, extra = sorted(expected - set(members)), sorted(set(members) - expected)
        if missing or extra:
            raise _fail(where, f"the arrays do not match the manifest: missing {missing}, "
                               f"unexpected {extra}.")
        arrays = {}
        for entry, (name, shape, dtype, nbytes) in zip(manifest["arrays"], entries):
            info = zf.getinfo(f"{name}.npy")
            if info.file_size > nbytes + _MAX_NPY_HEADER:
                raise _fail(where, f"array {name!r}: member of {info.file_size} bytes is "
                                   f"larger than its manifest shape allows.")
            arrays[name] = _read_npy(zf.read(info), entry, name, shape, dtype, nbytes,
                                     where)
    return manifest, arrays


def load_state(path):
    """Read and verify a checkpoint without building a model.

    Returns
    -------
    CheckpointState
        ``(manifest, arrays)``: the manifest dict (see docs/checkpoints.md)
        and a dict of NumPy arrays keyed ``model/<name>`` and
        ``optim/<key>``, each checked against its shape, dtype and SHA-256.

    Raises
    ------
    CheckpointError
        The file is missing, not a zip, truncated, corrupt, tampered with,
        of an unsupported format version, or holds a non-numeric array.
    """
    path = os.fspath(path)
    where = f"load({path!r})"
    if not os.path.exists(path):
        raise _fail(where, "no such file. Check the path.") from FileNotFoundError(path)
    if os.path.isdir(path):
        raise _fail(where, "expected a checkpoint file, got a directory.")
    try:
        manifest, arrays = _read(path, where)
    except CheckpointError:
        raise
    except Exception as exc:
        # A damaged file can make zipfile or the .npy header parser fail in many
        # ways (BadZipFile, EOFError, ValueError, struct.error, OSError, ...);
        # every one of them means the same thing to the caller.
        raise _fail(where, f"cannot read the checkpoint ({type(exc).__name__}: {exc}). "
                           f"The file is truncated, corrupt or not a checkpoint.") from exc
    return CheckpointState(manifest, arrays)


def _model_class(name, map_model, where):
    if map_model is not None:
        if not isinstance(map_model, Mapping):
            raise TypeError(f"{where}: expected map_model to be a dict of class name -> "
                            f"class, got {type(map_model).__name__}.")
        if name in map_model:
            return map_model[name]
    try:
        from . import models  # lazy: checkpoint must import without the models module
        registry = models.MODELS
    except (ImportError, AttributeError):
        registry = {}
    if name not in registry:
        known = sorted({*registry, *(map_model or {})})
        raise _fail(where, f"unknown model class {name!r}; known classes: {known}. Pass "
                           f"map_model={{{name!r}: YourClass}} to rebuild your own model, "
                           f"or model=your_model to fill one you built.")
    return registry[name]


def _check_implied_size(cls, name, config, arrays, where):
    """Refuse a config that implies other parameter counts than the file holds.

    Runs before the model is built, so a few-byte file cannot make the
    constructor allocate gigabytes.
    """
    try:
        from .models import parameter_count  # lazy, as in _model_class
    except ImportError:
        return
    try:
        implied = parameter_count(cls, config)
    except Exception as exc:
        raise _fail(where, f"the saved config does not describe a {name} "
                           f"({type(exc).__name__}: {exc}).") from exc
    held = sum(a.size for k, a in arrays.items() if k.startswith("model/"))
    if implied is not None and implied != held:
        raise _fail(where, f"the saved config of {name} implies {implied} parameters, but "
                           f"the file holds {held}. The file is corrupt or was tampered "
                           f"with; nothing was built.")


def _fill(model, name, config, params, where):
    """Load ``params`` into the caller's ``model`` after checking it is the saved one."""
    if type(model).__name__ != name:
        raise _fail(where, f"expected a {name} (the saved model), got "
                           f"{type(model).__name__}.")
    if config is not None and callable(getattr(model, "get_config", None)):
        mine = json.loads(json.dumps(model.get_config()))
        diff = sorted(k for k in {*mine, *config} if k != "seed"
                      and mine.get(k) != config.get(k))
        if diff:
            got = ", ".join(f"{k}={mine.get(k)!r} (saved {config.get(k)!r})" for k in diff)
            raise _fail(where, f"the model's config differs from the saved {name}: {got}. "
                               f"Build the model with the saved config, or load(path) "
                               f"to rebuild it.")
    return _load_params(model, params, where, f"this {name}")


def load(path, *, map_model=None, model=None):
    """Load a checkpoint: rebuild the model (or fill yours) and return its state.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.
    map_model : dict of str -> type, optional
        Model classes by name, looked up before ``minicae.models.MODELS``
        (for models defined outside minicae).
    model : Module, optional
        Load the weights into this model instead of rebuilding one. Needed
        for models saved without ``get_config()`` (e.g. a hand-built
        ``nn.Sequential``): build the same model, then ``load(path,
        model=m)``. Its class name must be the saved one, its config (when
        both have one) equal up to the seed, and its parameters the same
        names and shapes.

    Returns
    -------
    Checkpoint
        ``(model, optimizer_state, metadata)``: the model with its
        parameters loaded (in the saved dtype, on the active backend), the
        dict to pass to ``optimizer.load_state_dict`` (None if no optimizer
        was saved), and the metadata dict.

    Raises
    ------
    CheckpointError
        Everything :func:`load_state` raises, plus an unknown model class, a
        model saved without a recipe and no ``model=``, a config that does
        not rebuild the model or implies other parameter sizes than the file
        holds, or parameters that do not fit the model.
    """
    path = os.fspath(path)
    where = f"load({path!r})"
    manifest, arrays = load_state(path)
    name, config = manifest["model"]["class"], manifest["model"]["config"]
    params = {k[len("model/"):]: a for k, a in arrays.items() if k.startswith("model/")}
    if model is not None:
        if not isinstance(model, Module):
            raise TypeError(f"{where}: expected model to be a minicae Module, got "
                            f"{type(model).__name__}.")
        _fill(model, name, config, params, where)
    elif config is None:
        raise _fail(where, f"the {name} was saved without a rebuild recipe (it has no "
                           f"get_config()). Build the same model in your code and pass "
                           f"it: load(path, model=your_{name.lower()}).")
    else:
        cls = _model_class(name, map_model, where)
        _check_implied_size(cls, name, config, arrays, where)
        model = _build(cls, name, config, params, where)
    optimizer_state = None
    if manifest["optimizer"] is not None:
        optimizer_state = {**manifest["optimizer"],
                           "state": {k[len("optim/"):]: a for k, a in arrays.items()
                                     if k.startswith("optim/")}}
    return Checkpoint(model, optimizer_state, manifest["metadata"])


def _build(cls, name, config, params, where):
    try:
        model = cls(**config)
    except Exception as exc:
        raise _fail(where, f"the saved config does not rebuild {name}(**{config!r}) "
                           f"({type(exc).__name__}: {exc}).") from exc
    if not isinstance(model, Module):
        raise _fail(where, f"expected {name}(**config) to build a minicae Module, got "
                           f"{type(model).__name__}.")
    saved_dtypes = {a.dtype for a in params.values()}
    if len(saved_dtypes) == 1 and saved_dtypes != {p.data.dtype for p in model.parameters()}:
        model.astype(saved_dtypes.pop())  # e.g. a model saved after .astype(float64)
    return _load_params(model, params, where, f"the rebuilt {name}")
