"""Print README.md's benchmark table from saved `minicae bench --json` runs.

    python benchmarks/readme_table.py \
        --one benchmarks/results/round9_threads1_run*.json \
        --two benchmarks/results/round9_threads2_run*.json

Each cell is the median over the runs given for that thread count: ms for the
times, and for the ratios the median of the within-run ratios minicae/torch.
"""

from __future__ import annotations

import argparse
import json
import statistics

# The round whose saved runs make README.md's table (tests/test_bench.py reads it).
ROUND = "round12"

LABELS = {"conv_1_16_28_s2": "conv N128 1→16 28² k3 s2",
          "conv_16_32_14_s2": "conv N128 16→32 14² k3 s2",
          "conv_16_16_28_s1": "conv N64 16→16 28² k3 s1",
          "conv_64_64_32_s1": "conv N32 64→64 32² k3 s1",
          "convT_32_16_7_s2": "convT N128 32→16 7²→14² s2 op1",
          "cae_strided": "strided CAE step, batch 128",
          "dense_ae": "dense AE 784-64-64-64-784 step, batch 256",
          "cae_full": "'full'-padding CAE step, batch 128",
          "sgemm": "NumPy sgemm 1024³ (GFLOP/s)"}


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return {(r["case"], r["side"]): r for r in json.load(fh)["rows"] if "ms" in r}


def table(runs_by_threads):
    lines = ["| work | threads | NumPy | Numba | torch | Numba x | NumPy x |",
             "|---|---|---|---|---|---|---|"]
    med = statistics.median
    for case, label in LABELS.items():
        for threads, runs in runs_by_threads:
            if case == "sgemm":
                a = med(r[(case, "numpy")]["gflops"] for r in runs)
                b = med(r[(case, "torch")]["gflops"] for r in runs)
                lines.append(f"| {label} | {threads} | {a:.0f} | | {b:.0f} | | |")
                continue
            ms = {s: med(r[(case, s)]["ms"] for r in runs) for s in ("numpy", "numba", "torch")}
            x = {s: med(r[(case, s)]["ms"] / r[(case, "torch")]["ms"] for r in runs)
                 for s in ("numpy", "numba")}
            lines.append(f"| {label} | {threads} | {ms['numpy']:.2f} | {ms['numba']:.2f} | "
                         f"{ms['torch']:.2f} | {x['numba']:.2f} | {x['numpy']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs="+", required=True, help="runs with --threads 1")
    parser.add_argument("--two", nargs="+", required=True, help="runs with --threads 2")
    args = parser.parse_args()
    print(table([(1, [_rows(p) for p in args.one]), (2, [_rows(p) for p in args.two])]))


if __name__ == "__main__":
    main()
