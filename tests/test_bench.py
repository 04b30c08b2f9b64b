"""Smoke test of ``minicae bench``: it runs at tiny sizes and writes its JSON.

Nothing here asserts anything about time (benchmarks are not tests); it checks
that every requested row is produced with the keys the README and users rely
on, and that the environment block records the BLAS facts.
"""

from __future__ import annotations

import json

import pytest

from minicae import bench, cli

ROW_KEYS = {"case", "side", "ms", "ms_q1", "ms_q3", "cpu_ms", "repeats", "gflops",
            "samples_per_s",
            "peak_traced_mib"}
CASES = ["conv_1_16_28_s2", "convT_32_16_7_s2", "cae_strided", "dense_ae", "sgemm"]


def test_bench_quick_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--keep-env", "--backends", "numpy",
                     "--cases", ",".join(CASES), "--repeats", "2", "--json", str(path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "conv_1_16_28_s2" in out and "GFLOP/s" in out
    result = json.loads(path.read_text())
    assert set(result) >= {"command", "environment", "sides", "rows"}
    env = result["environment"]
    assert set(env) >= {"cpu", "cores", "threads", "numpy", "numba", "blas", "env"}
    assert set(env["env"]) >= {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert result["sides"] == ["numpy"]
    assert [r["case"] for r in result["rows"]] == CASES
    for row in result["rows"]:
        missing = ROW_KEYS - set(row)
        assert not missing, f"row {row['case']} lacks {missing}"
        assert row["ms"] > 0 and row["repeats"] == 2, row
    conv = result["rows"][0]
    assert conv["fwd_ms"] > 0 and conv["fwd_gflops"] > 0


def test_bench_rss_row_runs_in_a_subprocess(tmp_path):
    path = tmp_path / "rss.json"
    code = cli.main(["bench", "--quick", "--keep-env", "--backends", "numpy",
                     "--cases", "rss_cae", "--json", str(path)])
    assert code == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["case"] == "rss_cae" and row["steps"] == 20
    assert row["rss_mib"] >= row["rss_after_first_step_mib"] > 0


def test_bench_scaling_plot(tmp_path):
    pytest.importorskip("matplotlib")
    plot, path = tmp_path / "scaling.png", tmp_path / "s.json"
    code = cli.main(["bench", "--quick", "--keep-env", "--backends", "numpy",
                     "--cases", "sgemm", "--repeats", "1", "--plot", str(plot),
                     "--json", str(path)])
    assert code == 0
    assert plot.stat().st_size > 0
    scaling = json.loads(path.read_text())["scaling"]
    assert len(scaling["batch"]["numpy"]) == len(scaling["batches"])
    assert len(scaling["image"]["numpy"]) == len(scaling["sizes"])
    assert scaling["batch_variation"]["numpy"] >= 0


def test_bench_rejects_unknown_case():
    with pytest.raises(ValueError, match="unknown cases"):
        bench.run_bench(cli.build_parser().parse_args(
            ["bench", "--quick", "--keep-env", "--cases", "nope"]))


def test_bench_sides_run_in_one_allocator_regime(tmp_path, monkeypatch):
    """Every side's process gets glibc's fixed malloc thresholds (a value the user set
    wins), and the environment record shows what the sides ran with."""
    from minicae.bench import harness

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    env = harness.thread_env(3)
    assert env["MALLOC_MMAP_THRESHOLD_"] == harness.ALLOCATOR_VARS["MALLOC_MMAP_THRESHOLD_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == "12345"
    assert env["NUMBA_NUM_THREADS"] == "3"
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--keep-env", "--backends", "numpy",
                     "--cases", "sgemm", "--repeats", "1", "--json", str(path)])
    assert code == 0
    recorded = json.loads(path.read_text())["environment"]["env"]
    assert recorded["MALLOC_MMAP_THRESHOLD_"] == str(16 * 2**20)
    assert recorded["MALLOC_TRIM_THRESHOLD_"] == "12345"


def test_readme_table_is_what_the_saved_runs_give():
    """README.md's benchmark table is reproduced by benchmarks/readme_table.py from the
    runs saved in benchmarks/results (the command README.md names)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("readme_table",
                                                  root / "benchmarks" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = root / "benchmarks" / "results"
    runs = [(t, [module._rows(p)
                 for p in sorted(results.glob(f"{module.ROUND}_threads{t}_run*.json"))])
            for t in (1, 2)]
    assert all(r for _, r in runs)
    assert module.table(runs) in (root / "README.md").read_text(encoding="utf-8")


def test_ratios_pair_each_backend_with_its_peer():
    """numpy/numba rows are divided by torch's (CPU), cupy rows by torch-cuda's."""
    from minicae.bench import harness

    def row(side, ms):
        return {"case": "cae_strided", "side": side, "ms": ms, "cpu_ms": ms}

    rows = [row("numba", 6.0), row("cupy", 3.0), row("torch", 4.0), row("torch-cuda", 2.0)]
    harness._add_ratios(rows)
    ratios = {r["side"]: r.get("ratio_to_torch") for r in rows}
    assert ratios == {"numba": 1.5, "cupy": 1.5, "torch": None, "torch-cuda": None}
    alone = [row("cupy", 3.0), row("torch", 4.0)]     # no GPU peer: no ratio for cupy
    harness._add_ratios(alone)
    assert "ratio_to_torch" not in alone[0]


def test_bench_torch_cuda_peer_needs_a_gpu(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("torch")
    fake.__version__ = "0.0+cpu"
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", fake)
    with pytest.raises(ValueError, match="torch-cuda.*GPU"):
        bench.run_bench(cli.build_parser().parse_args(
            ["bench", "--quick", "--keep-env", "--backends", "numpy",
             "--peers", "torch-cuda", "--cases", "sgemm"]))
    with pytest.raises(ValueError, match="expected peers from"):
        bench.run_bench(cli.build_parser().parse_args(
            ["bench", "--quick", "--keep-env", "--peers", "jax", "--cases", "sgemm"]))
