"""Plans: what a convolution call's checks and choices found, per call signature.

A call's checks, geometry and choice of kernel depend only on its signature:
the active backend, the arrays' types, shapes and dtypes, and the
hyperparameters. A layer repeats one signature every step, so the first call of
each signature runs them (raising on bad input, as every call would) and the
later ones look the result up: per conv layer and step ~6 us forward and ~10
backward of Python (strided CAE step, batch 32; benchmarks/README.md, round 10).
Chunks and threads are not planned: they follow settings that may change
between calls (workspace limit, thread limits).
"""

from __future__ import annotations

from ._common import active

__all__ = ["_planned", "_sig"]

_PLANS = {}                  # backend (equal ones share) -> {signature: plan}
_LAST = (None, None)         # the backend object of the last call, its plans
_MAX_PLANS = 256             # per backend; then forgotten all at once


def _sig(a):
    """An array's part of a call signature: type, shape, dtype (None stays None; a
    non-array gets a signature too, and the checks of its plan reject it)."""
    if a is None:
        return None
    try:
        return type(a), a.shape, a.dtype
    except AttributeError:
        return type(a), None, None


def _exact(hyper):
    """Whether hyperparameters are plain ints, strs or tuples of ints: only those
    are keys, since 1 == 1.0 == True would let a float or a bool stride (which the
    checks reject) take an int's plan."""
    for v in hyper:
        kind = type(v)
        if kind is tuple:
            for e in v:
                if type(e) is not int:
                    return False
        elif kind is not int and kind is not str:
            return False
    return True


def _planned(arrays, hyper, make):
    """The plan of the call with signature ``arrays`` (see :func:`_sig`) and
    hyperparameters ``hyper``: ``make()`` (the checks, which raise on bad input, and
    the choices) on the first call, remembered per active backend after that."""
    if not _exact(hyper):
        return make()
    global _LAST
    be, last = active(), _LAST       # one read: a pair always replaced whole
    if last[0] is not be:            # use_backend makes a new, equal object each time
        last = _LAST = (be, _PLANS.setdefault(be, {}))
    plans, key = last[1], (arrays, hyper)
    plan = plans.get(key)
    if plan is None:
        plan = make()
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[key] = plan
    return plan
