"""Pictures a person looks at: reconstructions, filters, loss curves, overlays.

Matplotlib is an optional dependency (``pip install "minicae[plot]"``); it is
imported on first use with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import os

import numpy

from ._runfiles import atomic_write
from .backend import to_device, to_numpy

__all__ = ["save_reconstructions", "save_filters", "save_loss_curves", "save_overlays"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError('plots: matplotlib is not installed. Install it with: '
                           'pip install "minicae[plot]".') from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _savefig(fig, path, **kw):
    """Write a figure through the atomic writer: the old picture or the new one."""
    fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **{"dpi": 80, **kw}))


def _as_image(a):
    """(C, H, W) or (D,) to something imshow can show."""
    a = numpy.asarray(a, dtype=numpy.float64)
    if a.ndim == 1:
        side = int(round(a.size ** 0.5))
        return a.reshape(side, side) if side * side == a.size else a[None]
    if a.shape[0] == 1:
        return a[0]
    return numpy.clip(numpy.moveaxis(a[:3], 0, -1), 0, 1)


def save_reconstructions(model, x, path, *, n=8, x_input=None):
    """Grid: inputs on the top row(s), reconstructions below."""
    plt = _pyplot()
    x = x[:n]
    inp = x if x_input is None else x_input[:n]
    was = model.training
    model.eval()
    x_hat = to_numpy(model(to_device(inp)))
    model.train(was)
    rows = [("input", inp), ("reconstruction", x_hat)]
    if x_input is not None:
        rows.append(("clean target", x))
    fig, axes = plt.subplots(len(rows), len(x), figsize=(1.6 * len(x), 1.7 * len(rows)),
                             squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(len(x)):
            ax = axes[r][c]
            ax.imshow(_as_image(imgs[c]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_filters(model, path, *, max_filters=32):
    """The first parameterised layer's filters (conv kernels or dense rows)."""
    plt = _pyplot()
    weight = None
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            weight = to_numpy(p.data)
            break
    if weight is None:
        raise ValueError("save_filters: the model has no weight parameter.")
    if weight.ndim == 4:
        tiles = [w.mean(axis=0) for w in weight[:max_filters]]
    else:
        tiles = [_as_image(w) for w in weight[:max_filters]]
    cols = min(8, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    # one symmetric scale for every tile, so that colours compare across filters
    vmax = max(float(abs(t).max()) for t in tiles) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 1, 1.2 * rows + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(tiles):
            shown = ax.imshow(tiles[i], cmap="RdBu_r", interpolation="nearest",
                              vmin=-vmax, vmax=vmax)
        else:
            ax.axis("off")
    fig.suptitle("first-layer filters" + (" (mean over input channels)"
                                          if weight.ndim == 4 and weight.shape[1] > 1 else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.9, label="weight")
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_loss_curves(history, path):
    """Train and validation loss per epoch (and the mean-image baseline)."""
    plt = _pyplot()
    epochs = history["epoch"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, history["train_loss"], marker="o", label="train")
    if any(v is not None for v in history["val_loss"]):
        ax.plot(epochs, history["val_loss"], marker="o", label="validation")
    if history.baseline_mse is not None:
        ax.axhline(history.baseline_mse, color="gray", ls="--", label="mean-image baseline")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reconstruction loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path


def save_overlays(images, truths, predictions, path, *, titles=("image", "truth",
                                                                  "prediction")):
    """Rows of (image, ground truth, prediction) label maps side by side."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        for j, (arr, title) in enumerate(zip((images[i], truths[i], predictions[i]),
                                             titles)):
            ax = axes[i][j]
            if j == 0:
                ax.imshow(_as_image(arr), cmap="gray")
            else:
                ax.imshow(arr, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path
