"""The text table and the scaling plot of ``minicae bench``."""

from __future__ import annotations

__all__ = ["format_table", "plot_scaling"]


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def format_table(result):
    """A readable text table of ``result`` (the dict that ``--json`` writes)."""
    env = result["environment"]
    lines = [f"minicae bench — {env['cpu']}, {env['cores']} cores, {env['threads']} "
             f"threads, NumPy {env['numpy']}, Numba {env['numba']}, torch "
             f"{env.get('torch', 'absent')}; load {env.get('load_average')}"]
    for pool in env["blas"]:
        lines.append("  BLAS: " + ", ".join(f"{k}={v}" for k, v in pool.items()
                                            if v is not None))
    lines.append("  env: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    if "gpu" in env or "torch_cuda" in env:
        tc = env.get("torch_cuda") or {}
        lines.append(f"  GPU: {env.get('gpu') or tc.get('gpu')}; CuPy {env.get('cupy', 'absent')}"
                     + (f"; torch CUDA {tc['cuda']}, cuDNN {tc['cudnn']}" if tc else "")
                     + ". /torch: numpy and numba rows over torch (CPU), cupy rows over "
                       "torch-cuda; peak MiB of GPU rows: the device memory pool")
    load = (env.get("load_average") or [0.0])[0]
    if load > 0.5 * (env.get("cores") or 1):
        lines.append(f"  WARNING: load average {load:.1f} on {env['cores']} cores: other "
                     "processes share the CPUs and multi-threaded wall times wait for "
                     "time slices. Compare with --threads 1 and the CPU ms column.")
    head = (f"{'case':<18} {'side':<10} {'ms':>9} {'IQR ms':>13} {'CPU ms':>9} "
            f"{'GFLOP/s':>8} {'samples/s':>10} {'fwd ms':>8} {'fwd GF/s':>8} "
            f"{'peak MiB':>8} {'/torch':>6} {'CPU/t':>6}")
    lines += ["", head, "-" * len(head)]
    for r in result["rows"]:
        ratio = _fmt(r.get("ratio_to_torch"), ".2f")
        if r["case"] == "rss_cae":
            lines.append(f"{'rss_cae':<18} {r['side']:<10} peak RSS {r['rss_mib']:.0f} MiB "
                         f"over {r['steps']} steps at batch {r['batch']} (after the "
                         f"first step {r['rss_after_first_step_mib']:.0f} MiB)"
                         f"{'' if ratio == 'n/a' else '  /torch ' + ratio}")
            continue
        iqr = f"{r['ms_q1']:.2f}–{r['ms_q3']:.2f}"
        lines.append(f"{r['case']:<18} {r['side']:<10} {r['ms']:>9.3f} {iqr:>13} "
                     f"{r['cpu_ms']:>9.3f} "
                     f"{r['gflops']:>8.1f} {_fmt(r['samples_per_s'], '>10.0f'):>10} "
                     f"{_fmt(r.get('fwd_ms'), '>8.3f'):>8} "
                     f"{_fmt(r.get('fwd_gflops'), '>8.1f'):>8} "
                     f"{_fmt(r.get('gpu_pool_mib', r['peak_traced_mib']), '>8.1f'):>8} "
                     f"{ratio:>6} "
                     f"{_fmt(r.get('cpu_ratio_to_torch'), '.2f'):>6}")
    scaling = result.get("scaling")
    if scaling:
        lines += ["", "strided CAE step, µs per sample vs batch "
                  f"{scaling['batches']} (variation from batch 32 up):"]
        for side, vals in scaling["batch"].items():
            lines.append(f"  {side:<10} " + " ".join(f"{1e3 * v:7.1f}" for v in vals)
                         + f"   variation {100 * scaling['batch_variation'][side]:.0f}%")
        lines.append(f"µs per sample vs image size {scaling['sizes']} at batch "
                     f"{scaling['image_batch']}:")
        for side, vals in scaling["image"].items():
            lines.append(f"  {side:<10} " + " ".join(f"{1e3 * v:7.1f}" for v in vals))
    return "\n".join(lines)


def plot_scaling(scaling, path):
    """Write the two scaling curves (time per sample vs batch, vs image size)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import _savefig

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for side, vals in scaling["batch"].items():
        axes[0].plot(scaling["batches"], [1e3 * v for v in vals], marker="o", label=side)
    for side, vals in scaling["image"].items():
        axes[1].plot([s * s for s in scaling["sizes"]], [1e3 * v for v in vals],
                     marker="o", label=side)
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="µs per sample",
                title="strided CAE step vs batch")
    axes[1].set(xscale="log", yscale="log", xlabel="pixels per image",
                ylabel="µs per sample",
                title=f"strided CAE step vs image size (batch {scaling['image_batch']})")
    axes[0].set_xticks(scaling["batches"], labels=[str(b) for b in scaling["batches"]])
    for ax in axes:
        # plain tick labels: log axes otherwise label every minor tick as 2x10^1 ...
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _savefig(fig, path, dpi=fig.dpi)          # the figure's own dpi, as savefig(path) did
    plt.close(fig)
