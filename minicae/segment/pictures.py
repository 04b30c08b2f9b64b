"""Pictures of a segmentation run: every method on the same images, and a bar chart.

matplotlib is optional: without it both functions raise ``RuntimeError``
(the caller keeps the table and skips the pictures).
"""

from __future__ import annotations

import numpy

__all__ = ["save_method_grid", "save_miou_bars"]


def _overlay(image, labels):
    """Gray image with each label > 0 tinted in its tab10 colour (label 0 left clear)."""
    from matplotlib import colormaps

    gray = numpy.asarray(image, numpy.float64)
    gray = gray.mean(axis=0) if gray.ndim == 3 else gray
    rgb = numpy.repeat(gray[..., None], 3, axis=2)
    colours = colormaps["tab10"](numpy.arange(10))[:, :3]
    tint = colours[numpy.asarray(labels) % 10]
    alpha = numpy.where(numpy.asarray(labels) > 0, 0.45, 0.0)[..., None]
    return (1 - alpha) * rgb + alpha * tint                   # alpha blend


def save_method_grid(images, truth, predictions, path, *, n=6):
    """One row per method (truth first), the same ``n`` images in every row."""
    from ..plots import _pyplot, _savefig

    plt = _pyplot()
    rows = [("truth", truth)] + list(predictions.items())
    n = min(n, len(images))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.6, 1.3 * len(rows)),
                             squeeze=False)
    for r, (name, labels) in enumerate(rows):
        for j in range(n):
            ax = axes[r][j]
            ax.imshow(numpy.clip(_overlay(images[j], labels[j]), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_miou_bars(results, path, *, metric="miou"):
    """Horizontal bars of one metric per method, best on top."""
    from ..plots import _pyplot, _savefig

    plt = _pyplot()
    items = sorted(((row[metric], name) for name, row in results.items() if metric in row))
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(items) + 0.8))
    ax.barh([name for _, name in items], [v for v, _ in items], color="tab:blue")
    for i, (v, _) in enumerate(items):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=7)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(metric)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path
