"""The docs cannot rot: their code runs, their pointers resolve, the doctests pass.

- Every ```python block of README.md and docs/*.md runs. The blocks of one
  file share a namespace and run in order, in a temporary working directory,
  on the NumPy backend (restored afterwards). A block preceded by
  ``<!-- skip: reason -->`` is skipped with that reason; one preceded by
  ``<!-- requires: torch -->`` (any module name) is skipped where that
  module is not installed.
- Every ``path.py::name`` pointer in docs/maths.md and in minicae's
  docstrings names a file that exists and a function or class defined in it,
  and every ``docs/maths.md#anchor`` names a heading of docs/maths.md.
- The doctests of every minicae module pass.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
from pathlib import Path

import pytest

import minicae
from minicae.backend import use_backend

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
                   if p.exists())
MATHS = ROOT / "docs" / "maths.md"

_FENCE = re.compile(r"^```(\w*)[ \t]*$")
_DIRECTIVE = re.compile(r"^<!--\s*(skip|requires)\s*:\s*(.*?)\s*-->$")


class Block:
    """One fenced ```python block and the directive on the line above it."""

    def __init__(self, path, line, code, skip=None, requires=()):
        self.path, self.line, self.code = path, line, code
        self.skip, self.requires = skip, requires

    def missing(self):
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


def python_blocks(path):
    """The ```python blocks of a Markdown file, in order, with their directives."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i].strip())
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if lang == "python":
            skip, requires = None, []
            above = start - 1
            while above >= 0 and _DIRECTIVE.match(lines[above].strip()):
                kind, value = _DIRECTIVE.match(lines[above].strip()).groups()
                if kind == "skip":
                    skip = value or "no reason given"
                else:
                    requires += [m.strip() for m in value.split(",") if m.strip()]
                above -= 1
            blocks.append(Block(path, start + 1, "\n".join(lines[start + 1:end]), skip,
                                tuple(requires)))
        i = end + 1
    return blocks


def _doc_id(path):
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{_doc_id(path)} has no python blocks")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    skipped, ran = [], 0
    with use_backend("numpy"):
        for block in blocks:
            where = f"{_doc_id(path)}:{block.line}"
            if block.skip:
                skipped.append(f"{where}: {block.skip}")
                continue
            if block.missing():
                skipped.append(f"{where}: needs {', '.join(block.missing())}")
                continue
            code = compile(block.code, where, "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                raise AssertionError(f"the python block at {where} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
            ran += 1
    if skipped:
        print("skipped blocks:\n  " + "\n  ".join(skipped))
    if not ran:
        pytest.skip("every block skipped: " + "; ".join(skipped))


def test_block_parser_reads_directives(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n<!-- skip: needs a GPU -->\n```python\nboom()\n```\n\n"
                   "<!-- requires: no_such_module_xyz -->\n```python\nboom()\n```\n\n"
                   "```sh\nnot python\n```\n\n```python\nx = 1\ny = x + 1\n```\n")
    blocks = python_blocks(doc)
    assert [b.skip for b in blocks] == ["needs a GPU", None, None]
    assert blocks[1].missing() == ["no_such_module_xyz"]
    assert blocks[2].code == "x = 1\ny = x + 1" and blocks[2].line == 17


# --- pointers: path::name and maths.md#anchor -----------------------------------------

_POINTER = re.compile(r"((?:minicae|tests|benchmarks|examples)/[\w/]+\.py)::(\w+)")
_ANCHOR = re.compile(r"docs/maths\.md#([\w-]+)")


def _defined_names(path):
    """Every function and class name defined anywhere in a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _slug(heading):
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def maths_anchors():
    anchors = set()
    for line in MATHS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def _package_texts():
    for path in sorted((ROOT / "minicae").rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def _pointer_sources():
    yield "docs/maths.md", MATHS.read_text(encoding="utf-8")
    yield from _package_texts()


def test_every_code_and_test_pointer_resolves():
    names_by_file, broken, seen = {}, [], 0
    for source, text in _pointer_sources():
        for path_text, name in _POINTER.findall(text):
            seen += 1
            path = ROOT / path_text
            if not path.exists():
                broken.append(f"{source}: {path_text}::{name} (no such file)")
                continue
            names = names_by_file.setdefault(path, _defined_names(path))
            if name not in names:
                broken.append(f"{source}: {path_text}::{name} (not defined there)")
    assert seen > 50, f"only {seen} pointers found; is the pattern still right?"
    assert not broken, "broken pointers:\n" + "\n".join(broken)


def test_every_maths_anchor_exists():
    anchors = maths_anchors()
    wanted = {"convolution", "convolution-backward", "transposed-convolution", "linear",
              "losses", "penalties", "gradient-checking"}
    broken = []
    for source, text in [*_package_texts(), *[(_doc_id(p), p.read_text(encoding="utf-8"))
                                              for p in DOC_FILES]]:
        for anchor in _ANCHOR.findall(text):
            wanted.add(anchor)
            if anchor not in anchors:
                broken.append(f"{source}: docs/maths.md#{anchor}")
    for anchor in re.findall(r"\]\(#([\w-]+)\)", MATHS.read_text(encoding="utf-8")):
        if anchor not in anchors:
            broken.append(f"docs/maths.md: (#{anchor})")
    assert not broken, "anchors missing from docs/maths.md:\n" + "\n".join(broken)
    assert wanted <= anchors


def test_slug_follows_github():
    assert _slug("Convolution backward") == "convolution-backward"
    assert _slug("Top-k (k-sparse), exactly") == "top-k-k-sparse-exactly"
    assert _slug("Contractive penalty, dense layer") == "contractive-penalty-dense-layer"


def test_cli_md_documents_every_subcommand_and_flag():
    import argparse

    from minicae.cli import build_parser

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for command, subparser in sub.choices.items():
        if f"## minicae {command}" not in text:
            missing.append(f"section '## minicae {command}'")
        for action in subparser._actions:
            if action.help == argparse.SUPPRESS:      # internal flags, hidden from --help
                continue
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help" and f"`{flag}" not in text:
                    missing.append(f"minicae {command} {flag}")
    assert not missing, "docs/cli.md lacks: " + ", ".join(missing)


# --- doctests -------------------------------------------------------------------------

def _doctest_params():
    """One param per minicae module that has doctests (or cannot be imported here)."""
    params = []
    for info in pkgutil.walk_packages(minicae.__path__, "minicae."):
        if info.name == "minicae.__main__":       # importing it runs the CLI
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:               # e.g. kernels._cupy without CuPy
            params.append(pytest.param(info.name, id=info.name, marks=pytest.mark.skip(
                reason=f"{info.name} needs a missing package: {exc}")))
            continue
        if any(t.examples for t in doctest.DocTestFinder().find(module, info.name)):
            params.append(pytest.param(info.name, id=info.name))
    return params


DOCTEST_PARAMS = _doctest_params()


def test_doctests_are_collected():
    assert len(DOCTEST_PARAMS) >= 5, [p.values[0] for p in DOCTEST_PARAMS]


@pytest.mark.parametrize("name", DOCTEST_PARAMS)
def test_doctests(name, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                   | doctest.NORMALIZE_WHITESPACE)
    report = []
    with use_backend("numpy"):
        for test in tests:
            runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0


def test_doc_files_are_found():
    found = {_doc_id(p) for p in DOC_FILES}
    assert "docs/maths.md" in found
    assert os.path.isdir(ROOT / "docs")


@pytest.mark.parametrize("path", [*DOC_FILES, ROOT / "benchmarks" / "README.md"],
                         ids=_doc_id)
def test_docs_hold_no_control_characters(path):
    """A LaTeX command written through a Python string ("\\bmod", "\\rfloor",
    "\\text") turns into a backspace, carriage return or tab; none belongs in the docs."""
    text = path.read_text(encoding="utf-8")
    bad = [(n + 1, repr(ch)) for n, line in enumerate(text.split("\n"))
           for ch in line if ord(ch) < 32]
    assert not bad, f"{_doc_id(path)}: control characters at (line, char) {bad[:5]}"


# --- docs/cli.md against the parser ------------------------------------------------------
_ROW = re.compile(r"^\| `(--[\w-]+)[^`]*` \| ([^|]*) \| [^|]*\|$")
# flags whose parser default is None and whose real default is set in code: the doc's
# first number must be that value
_DEFAULT_IN_CODE = {("train", "--epochs"): "DEFAULT_EPOCHS",
                    ("train", "--penalty-weight"): "PENALTY_WEIGHTS"}


def _documented_flags():
    rows, command = {}, None
    for line in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## minicae (\w+)", line)
        if heading:
            command = heading.group(1)
        row = _ROW.match(line)
        if row and command:
            rows[(command, row.group(1))] = row.group(2).replace("`", "").strip()
    return rows


def _parser_flags():
    from minicae import cli

    flags = {}
    for command, sub in cli.build_parser().commands.items():
        for action in sub._actions:
            if action.option_strings and action.help != "==SUPPRESS==" \
                    and action.option_strings[-1] != "--help":
                flags[(command, action.option_strings[-1])] = action.default
    return flags


def _in_code(key):
    from minicae import cli

    value = getattr(cli, _DEFAULT_IN_CODE[key])
    return value["l1"] if isinstance(value, dict) else value


def test_cli_reference_lists_every_flag_with_the_parser_default():
    docs, parser = _documented_flags(), _parser_flags()
    three_columns = {c for c, _ in docs}
    missing = [k for k in parser if k[0] in three_columns and k not in docs]
    assert not missing, f"docs/cli.md lacks {missing}"
    assert not [k for k in docs if k not in parser], "docs/cli.md lists unknown flags"
    wrong = []
    for key, default in parser.items():
        text = docs.get(key)
        if text is None:
            continue
        if key in _DEFAULT_IN_CODE:
            ok = float(re.match(r"[-\d.e]+", text).group()) == float(_in_code(key))
        elif default is False:
            ok = text == "off"
        elif default in (None, ""):
            ok = not re.fullmatch(r"[-+\d.e]+", text)     # said in words: none, auto, ...
        elif isinstance(default, list):
            ok = text == " ".join(map(str, default))
        elif isinstance(default, (int, float)):
            ok = re.fullmatch(r"[-+\d.e]+", text) and float(text) == float(default)
        else:
            ok = text == str(default)
        if not ok:
            wrong.append(f"{key}: docs say {text!r}, the parser {default!r}")
    assert not wrong, "docs/cli.md defaults differ from the parser:\n" + "\n".join(wrong)


def test_help_shows_defaults_and_demo_describes_its_flags(capsys):
    from minicae import cli

    for argv, words in ((["train", "--help"], "(default: 32)"),
                        (["segment", "--help"], "(default: 80)"),
                        (["demo", "--help"], "run directory (default: runs/demo)")):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert words in " ".join(capsys.readouterr().out.split()), argv


_INTERNAL_WORDS = ("the issue", "issue-5", "the documents", "seed tutorial", "DESIGN.md")


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_docs_speak_in_the_projects_own_words(path):
    text = " ".join(path.read_text(encoding="utf-8").split()).lower()
    assert not [w for w in _INTERNAL_WORDS if w.lower() in text]


def test_help_speaks_in_the_projects_own_words(capsys):
    from minicae import cli

    for command in [None, *cli.build_parser().commands]:
        with pytest.raises(SystemExit):
            cli.main(["--help"] if command is None else [command, "--help"])
        text = " ".join(capsys.readouterr().out.split()).lower()
        assert not [w for w in _INTERNAL_WORDS if w.lower() in text], command
