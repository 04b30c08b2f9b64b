"""The architecture as a test: import direction, optional packages, line budget.

``cli -> workflows -> models -> nn -> functional -> dispatch -> backend -> kernels``: every
module is parsed with ``ast`` (nothing is imported) and its ``minicae.*``
imports, relative ones resolved, are checked against what its floor may
know. Only modules that exist are walked, so floors not written yet cost
nothing; a module that fits no floor fails until it is given one here.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minicae"

LEAVES = {"errors", "_validation", "_atomic"}
# workflows, and their private helpers (_bench_cases) and plotting (plots)
WORKFLOWS = {"data", "train", "checkpoint", "segment", "bench", "gradcheck", "optim",
             "vae_plots", "distributed", "_bench_cases", "plots", "_runfiles", "tune"}
BELOW_WORKFLOWS = {"models", "vae", "nn", "functional", "dispatch", "backend",
                   "kernels"} | LEAVES
# floor -> the floors (top-level minicae names) its modules may import
ALLOWED = {
    "errors": set(),
    "_validation": {"errors"},
    "_atomic": set(),
    "kernels": {"kernels"},
    "backend": {"kernels", "errors", "_validation"},
    "dispatch": {"backend", "kernels", "errors", "_validation", "_atomic"},
    "functional": {"dispatch", "backend", "kernels", "_validation", "errors", "functional"},
    "nn": {"functional", "_validation", "errors", "nn"},
    "models": {"nn", "functional", "_validation", "errors", "models", "vae"},
    "vae": {"nn", "functional", "backend", "_validation", "errors"},
    **{w: BELOW_WORKFLOWS | WORKFLOWS for w in WORKFLOWS},
    "cli": None,            # None: anything
    "_cli_checks": {"data", "errors", "_validation"},    # the CLI's checks before any work
    "_cli_vae": None,       # the CLI's VAE steps
    "__main__": None,
    "__init__": None,
}
# optional heavy packages: module path (relative to minicae/) allowed to import them
OPTIONAL = {"cupy": {"backend.py", "kernels/_cupy.py"},
            "numba": {"kernels/_numba.py", "kernels/_numba_c1.py", "kernels/_numba_s1.py",
                      "kernels/_numba_cv.py", "kernels/_numba_optim.py",
                      "kernels/_numba_ranges.py", "kernels/_numba_gather.py",
                      "kernels/_simd.py"},
            "llvmlite": {"kernels/_simd.py"}}     # Numba's own LLVM binding
MODULE_BUDGET = 400
# 8000/4000 until round 10 of the speed work, which added the per-signature conv
# plans and the per-image elementwise kernels (~60 core lines, each measured in
# benchmarks/README.md); raised by 100 each rather than cut a measured speed-up.
# Package 8150 from round 11: one cached backward driver per one-channel geometry
# (a single driver with a geometry flag compiled all six kernels on first use, the
# strided CAE's cold first step 26 -> 34 s).
# Round 12: +100 package / +50 core for the plans' bound direct runs (a layer goes
# from its plan to the kernel), the one-call Adam and its fallback checks: strided
# CAE step at batch 1, 232 -> 189 us of mostly Python (benchmarks/README.md).
# Run safety (+210): the one atomic writer for every file and picture, stale
# temporaries and the run lock (_runfiles), SIGTERM, resume checks of data, model
# and seed, any Module in a checkpoint, the config size check, MPI timeouts.
# Input and words (+290): every CLI flag and a run's memory checked before any work
# (_cli_checks.py), readers bounded by their headers (IDX streams, .npz member
# headers, image headers), the messages of failures that were tracebacks.
# Variational autoencoders (+765 package / +290 core): the VAE maths (functional/vae.py), models
# (vae.py), pictures (vae_plots.py), the gathered Linear of top-k codes (reference,
# Numba kernel, layer), the CLI flags and the bench rows.
# Real-photograph segmentation (+410): texture mosaics, the Gabor texture-energy baseline,
# the mean-field refinement, pictures and pipeline rows.
PACKAGE_BUDGET = 9880
# the maths floors (STYLE: "core well under ~4,000"); workflows are counted in the total
CORE = ("backend.py", "dispatch.py", "errors.py", "_validation.py", "kernels", "functional",
        "nn")
# 4150 before the conv restructuring (now 4030 with it); +290 for the VAE maths and the
# gathered Linear of top-k codes
CORE_BUDGET = 4320


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path):
    return path.relative_to(PACKAGE).as_posix()


def _dotted(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _floor(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _exists(dotted):
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def minicae_imports(path):
    """Absolute names of every minicae module imported by ``path`` (any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names
                      if a.name.split(".")[0] == "minicae"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "minicae":
                continue
            for alias in node.names:        # `from .. import functional` names a module
                sub = f"{module}.{alias.name}"
                if module == "minicae" and alias.name == "__version__":
                    sub = "minicae.__version__"     # a constant, allowed everywhere
                found.append((sub if _exists(sub) or sub.endswith("__version__") else module,
                              node.lineno))
    return found


def _target_floor(dotted):
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_imports_point_down(path):
    floor = _floor(path)
    assert floor in ALLOWED, (
        f"minicae/{_rel(path)}: floor {floor!r} is not in tests/test_imports.py ALLOWED; "
        f"place it in the architecture (DESIGN.md) before adding modules.")
    allowed = ALLOWED[floor]
    if allowed is None:
        return
    bad = [(name, line) for name, line in minicae_imports(path)
           if _target_floor(name) not in allowed | {"__version__"}]
    assert not bad, (f"minicae/{_rel(path)} (floor {floor!r}) imports upward or sideways: "
                     f"{bad}; allowed: {sorted(allowed)}")


def _optional_uses(path):
    """(package, line) for each import of cupy/numba, static or via importlib."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__")):
            names = [node.args[0].value]
        uses += [(n.split(".")[0], node.lineno) for n in names]
    return [(pkg, line) for pkg, line in uses if pkg in OPTIONAL]


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_optional_packages_stay_in_their_modules(path):
    bad = [(pkg, line) for pkg, line in _optional_uses(path)
           if _rel(path) not in OPTIONAL[pkg]]
    assert not bad, (f"minicae/{_rel(path)} imports {bad}; only "
                     f"{ {k: sorted(v) for k, v in OPTIONAL.items()} } may.")


def test_import_checker_sees_relative_and_lazy_imports(tmp_path):
    """The checker itself can fail: it resolves `from .. import x` inside functions."""
    path = PACKAGE / "nn" / "layers.py"
    names = {name for name, _ in minicae_imports(path)}
    assert "minicae.functional" in names and "minicae.nn.module" in names
    backend_uses = {pkg for pkg, _ in _optional_uses(PACKAGE / "backend.py")}
    assert backend_uses == {"cupy"}


def code_lines(source):
    """Lines holding code: not blank, not comments, not docstrings."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
            tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def test_code_line_counter():
    source = '"""Doc\n\nstring."""\n\n# comment\nx = 1  # trailing\n\n\ndef f():\n' \
             '    """Doc."""\n    return (x +\n            1)\n'
    assert code_lines(source) == 4          # x = 1, def f, return (x +, 1)


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_module_line_budget(path):
    n = code_lines(path.read_text(encoding="utf-8"))
    assert n <= MODULE_BUDGET, (f"minicae/{_rel(path)} has {n} code lines (budget "
                                f"{MODULE_BUDGET}): split it by concern.")


def test_package_line_budget():
    total = {(_rel(p)): code_lines(p.read_text(encoding="utf-8")) for p in _modules()}
    assert sum(total.values()) <= PACKAGE_BUDGET, sorted(total.items(), key=lambda kv: -kv[1])
    core = {k: v for k, v in total.items() if k.split("/")[0] in CORE}
    assert sum(core.values()) <= CORE_BUDGET, sorted(core.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("path", [p for p in _modules() if _floor(p) in ("functional", "nn")],
                         ids=_rel)
def test_maths_floors_name_no_backend(path):
    """functional/ and nn/ reach kernels only through minicae.dispatch: they import no
    backend's kernel module and compare no backend name."""
    kernel_modules = [name for name, _ in minicae_imports(path)
                      if name.startswith("minicae.kernels._")]
    assert not kernel_modules, f"minicae/{_rel(path)} imports {kernel_modules}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Compare) and any(
                 isinstance(c, ast.Constant) and c.value in ("numpy", "numba", "cupy")
                 for c in [node.left, *node.comparators])]
    assert not names, f"minicae/{_rel(path)} compares a backend name at lines {names}"
