"""Which kernel each convolution layer of a model runs, and warming their choices.

``minicae tune`` runs one training step of a model under the ``measured`` policy,
so that every convolution signature of the step is timed once and its choice
written to the kernel cache (minicae.dispatch); ``minicae info --kernels`` runs
the same step under the policy in force and reports, per layer, the kernel
chosen for its forward and backward and why.
"""

from __future__ import annotations

import contextlib

from . import dispatch
from .backend import to_device
from .nn import Conv2d, ConvTranspose2d

__all__ = ["kernel_report", "format_report"]


def kernel_report(model, batch, *, measure=False):
    """[(layer name, layer repr, op, kernel name, reason)] of one training step on
    ``batch`` (as the trainer runs it: no gradient for the input).

    ``measure``: under the ``measured`` policy whatever ``MINICAE_KERNELS`` says
    (the choices are then timed, or read from the cache, and kept on disk).
    """
    x = to_device(batch)
    policy = dispatch.use_policy("measured") if measure else contextlib.nullcontext()
    with policy, dispatch.trace() as calls:
        model.train()
        y = model(x)
        model.zero_grad()
        model.backward(y - x, need_input_grad=False)    # the gradient of ½‖x̂ − x‖²
    rows = []
    for name, layer in model.named_modules():
        if not isinstance(layer, (Conv2d, ConvTranspose2d)) or layer._x is None:
            continue
        shapes = f" x{tuple(layer._x.shape)} w{tuple(layer.weight.data.shape)} "
        seen = set()
        for choice in calls:
            if shapes in choice.signature and choice.op not in seen:
                seen.add(choice.op)
                rows.append((name, repr(layer), choice.op, choice.name, choice.reason))
    return rows


def format_report(rows, cache_file):
    """The report as text lines: one per layer and op."""
    lines, last = [], None
    for name, layer, op, kernel, reason in rows:
        if name != last:
            lines.append(f"{name}: {layer}")
            last = name
        lines.append(f"  {op:<26} {kernel:<14} {reason}")
    lines.append(f"kernel cache: {cache_file}")
    return lines
