"""Parameter, Module and Sequential: the state that the functional ops lack.

Parameters and child modules are discovered by walking ``vars(self)`` in
assignment order (no ``__setattr__`` hook, no set of names), so names such
as ``encoder.0.weight`` are stable, as in PyTorch state dicts.
"""

from __future__ import annotations

from collections import OrderedDict

from .. import functional as F
from ..errors import ShapeError

__all__ = ["Parameter", "Module", "Sequential"]


class Parameter:
    """A trainable array and the gradient accumulated into it."""

    def __init__(self, data):
        self.data = data
        self.grad = F.array_module().zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


def _children_of(value, name):
    if isinstance(value, Module):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, Module):
                yield f"{name}.{i}" if name else str(i), item


class Module:
    """Base class of layers and models: ``forward``, ``backward`` and state.

    A subclass implements ``forward(x)`` (keeping what backward needs) and
    ``backward(dy)`` (returning dx and *adding* into each ``p.grad``).
    Penalties attached with :meth:`attach` see every forward output of the
    module and add their gradient to ``dy`` before the module's backward.
    """

    training = True

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, x):
        y = self.forward(x)
        for penalty in self.__dict__.get("_penalties", ()):
            penalty.observe(self, x, y)
        return y

    # --- penalties --------------------------------------------------------
    def attach(self, penalty):
        """Attach a penalty (L1Activity, KLSparsity, Contractive) to this module."""
        penalty.bind(self)
        self.__dict__.setdefault("_penalties", []).append(penalty)
        return self

    @property
    def penalties(self):
        return list(self.__dict__.get("_penalties", ()))

    def penalty_backward(self, dy):
        """dy plus the gradients of the attached penalties w.r.t. this output."""
        for penalty in self.__dict__.get("_penalties", ()):
            extra = penalty.backward()
            if extra is not None:
                dy = dy + extra
        return dy

    def named_penalties(self, prefix=""):
        for name, module in self.named_modules(prefix):
            for i, penalty in enumerate(module.penalties):
                yield (f"{name}.{type(penalty).__name__}" if name else
                       type(penalty).__name__) + (f"{i}" if i else ""), penalty

    # --- traversal --------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            yield from _children_of(value, name)

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if name[0] == "_" or not isinstance(value, (Parameter, Module, list, tuple)):
                continue            # (a test before the generator: zero_grad runs per step)
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(value, Parameter):
                yield full, value
            else:
                for child_name, child in _children_of(value, full):
                    yield from child.named_parameters(child_name)

    def parameters(self):
        """The parameters in :meth:`named_parameters`' order, as a list."""
        return _parameters_of(self, [])

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # --- modes and state ----------------------------------------------------
    def train(self, mode=True):
        for _, module in self.named_modules():
            module.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def astype(self, dtype):
        """Convert every parameter (and its gradient) to ``dtype`` in place."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        return self

    def state_dict(self):
        """An ordered map from dotted parameter names to their arrays."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into the parameters, checking names and shapes."""
        where = f"{type(self).__name__}.load_state_dict"
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"{where}: state dict does not match the model: missing "
                           f"{missing}, unexpected {unexpected}.")
        for name, p in params.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(p.data.shape):
                raise ShapeError(f"{where}: expected {name} of shape "
                                 f"{tuple(p.data.shape)}, got {tuple(value.shape)}.")
            p.data = F.asarray(value, dtype=p.data.dtype).copy()
            p.grad = F.array_module().zeros_like(p.data)
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        return "\n".join(lines) + "\n)"


_PLAIN = frozenset((int, float, bool, str, type(None)))     # never hold parameters


def _parameters_of(module, out):
    """Append ``module``'s parameters to ``out`` in named_parameters' order, without
    building their names (zero_grad asks for them every step). A class with its own
    ``named_parameters`` is asked."""
    kind = type(module).named_parameters
    if kind is Sequential.named_parameters:
        for _, child in module.named_children():
            _parameters_of(child, out)
    elif kind is Module.named_parameters:
        for name, value in vars(module).items():
            if name[0] == "_" or type(value) in _PLAIN:
                continue
            if isinstance(value, Parameter):
                out.append(value)
            elif isinstance(value, Module):
                _parameters_of(value, out)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Module):
                        _parameters_of(item, out)
    else:
        out.extend(p for _, p in module.named_parameters())
    return out


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse."""

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: expected Module instances, got "
                                f"{type(m).__name__} at position {i}.")
        self.layers = list(modules)

    def named_children(self):
        for i, m in enumerate(self.layers):
            yield str(i), m

    def named_parameters(self, prefix=""):
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def _fuses_next_relu(self, i):
        """Whether layer i (a Conv2d/ConvTranspose2d) applies the ReLU that follows it.

        The convolution op then takes max(·, 0) itself (``conv2d(..., relu=True)``)
        and its backward masks dy (``relu_out``): the same values, two passes over
        the activation saved. Only for those exact classes, and only
        when neither layer has a penalty (a penalty must see its layer's own
        output).
        """
        layers = self.layers
        if i + 1 >= len(layers):
            return False
        layer, nxt = layers[i], layers[i + 1]
        return ("_fuses_relu" in type(layer).__dict__
                and "_fusable_relu" in type(nxt).__dict__
                and not layer.penalties and not nxt.penalties)

    def forward(self, x):
        fused, i = set(), 0
        while i < len(self.layers):
            if self._fuses_next_relu(i):
                x = self.layers[i].forward(x, relu=True)     # = ReLU(layer(x))
                self.layers[i + 1]._cache = None             # its backward runs in layer i
                fused.add(i)
                i += 2
            else:
                x = self.layers[i](x)
                i += 1
        self._fused = fused
        return x

    def backward(self, dy, *, need_input_grad=True):
        """Backpropagate ``dy`` through the layers; return dL/dx.

        With ``need_input_grad=False`` (a trainer whose input is data, as
        PyTorch skips the gradient of an input that does not require one) the
        first layer is asked for its parameter gradients only, when it can
        skip its input gradient (``need_dx``), and None is returned. A ReLU
        fused into the layer before it (see :meth:`_fuses_next_relu`) is
        differentiated by that layer.
        """
        fused = self.__dict__.get("_fused", ())
        for i in range(len(self.layers) - 1, -1, -1):
            if i - 1 in fused:
                continue                    # this ReLU's backward is layer i-1's
            layer = self.layers[i]
            dy = layer.penalty_backward(dy)
            if i == 0 and not need_input_grad:
                options = getattr(type(layer).backward, "__kwdefaults__", None) or {}
                if "need_dx" in options:                 # Conv2d, ConvTranspose2d, Linear
                    layer.backward(dy, need_dx=False)
                else:
                    layer.backward(dy)
                return None
            dy = layer.backward(dy)
        return dy

