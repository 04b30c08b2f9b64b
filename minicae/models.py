"""Autoencoders composed from :mod:`minicae.nn`: dense and convolutional.

Every model has ``encoder`` and ``decoder`` (:class:`~minicae.nn.Sequential`),
``encode(x) -> z``, ``decode(z) -> x_hat``, ``forward(x) -> x_hat`` (keeping
the code in ``code_``), ``backward(dx_hat) -> dx`` and ``get_config()``
(the JSON-able constructor arguments, so ``type(m)(**m.get_config())``
rebuilds the architecture; checkpoints rely on it). Penalties are given as a
JSON-able spec, e.g. ``{"kind": "kl", "rho": 0.05, "weight": 1.0}``, and are
attached to the code layer (L1, KL) or to the first encoder layer
(contractive) unless the spec names another encoder layer by index
(``"layer": 2``; a contractive penalty needs a Linear/Conv2d layer there).
A model is usable in a ten-line hand-written loop::

    model = ConvAutoencoder()
    x_hat = model(x); loss_value = loss(x_hat, x)
    model.zero_grad(); model.backward(loss.backward()); opt.step()
"""

from __future__ import annotations

import numpy

from . import nn
from ._validation import check_choice, check_positive_int
from .functional import output_padding_for
from .nn.gather import SparseInputLinear
from .vae import ConvVAE, DenseVAE

__all__ = ["Autoencoder", "DenseAutoencoder", "ConvAutoencoder", "DenseVAE", "ConvVAE",
           "MODELS", "build_penalty", "model_from_config", "parameter_count"]

PENALTY_KINDS = ("l1", "kl", "contractive")
ACTIVATION_NAMES = ("relu", "leaky_relu", "sigmoid", "tanh")


def build_penalty(spec, *, where):
    """Turn a spec dict ``{"kind": ..., "weight": ..., ...}`` into a penalty object."""
    from .nn import penalties

    if not isinstance(spec, dict) or "kind" not in spec:
        raise TypeError(f"{where}: expected penalty to be a dict with a 'kind' key "
                        f"({', '.join(map(repr, PENALTY_KINDS))}), got {spec!r}.")
    kind = check_choice(spec["kind"], PENALTY_KINDS, where=where, name="penalty kind")
    args = {k: v for k, v in spec.items() if k not in ("kind", "layer")}
    try:
        if kind == "l1":
            return penalties.L1Activity(**args)
        if kind == "kl":
            return penalties.KLSparsity(**args)
        return penalties.Contractive(**args)
    except TypeError as exc:
        raise TypeError(f"{where}: bad arguments for the {kind!r} penalty: {exc}") from exc


class Autoencoder(nn.Module):
    """Encoder and decoder Sequentials plus the penalty and code bookkeeping."""

    def __init__(self):
        self.code_ = None

    def _finish(self, penalty, where):
        self._penalty_spec = penalty
        if penalty is None:
            return
        obj = build_penalty(penalty, where=where)
        kind = penalty["kind"]
        layers = self.encoder.layers
        params = [i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d))]
        # default place: the first parameterised layer (contractive), the code (others)
        index = penalty.get("layer", params[0] if kind == "contractive" else -1)
        if not isinstance(index, int) or not -len(layers) <= index < len(layers):
            raise ValueError(f"{where}: expected penalty 'layer' to index one of the "
                             f"{len(layers)} encoder layers, got {index!r}.")
        index %= len(layers)
        target = layers[index]
        if kind == "contractive":
            act = layers[index + 1] if index + 1 < len(layers) else None
            if index not in params or getattr(act, "name", None) not in ACTIVATION_NAMES:
                raise ValueError(f"{where}: the contractive penalty needs a Linear or Conv2d "
                                 f"encoder layer followed by an elementwise activation; "
                                 f"encoder layer {index} is {type(target).__name__}.")
            if obj.activation != act.name:
                raise ValueError(f"{where}: the contractive penalty was given activation="
                                 f"{obj.activation!r} but the encoder uses {act.name!r}.")
        elif kind == "kl" and getattr(target, "name", None) != "sigmoid":
            raise ValueError(f"{where}: KL sparsity needs sigmoid codes in (0, 1); got "
                             f"encoder layer {index} = {type(target).__name__}. Pass "
                             f"code_activation='sigmoid'.")
        target.attach(obj)

    def encode(self, x):
        """z = f_E(x)."""
        z = self.encoder(x)
        self.code_ = z
        return z

    def decode(self, z):
        """x̂ = f_D(z)."""
        return self.decoder(z)

    def forward(self, x):
        """x̂ = f_D(f_E(x)); the code is kept in ``code_``."""
        return self.decode(self.encode(x))

    def backward(self, dx_hat, *, need_input_grad=True):
        """Backpropagate d loss / d x̂ through decoder then encoder (with penalties).

        ``need_input_grad=False`` skips the first layer's input gradient (the
        data needs none) and returns None; see :meth:`Sequential.backward`.
        """
        dz = self.decoder.backward(dx_hat)
        return self.encoder.backward(dz, need_input_grad=need_input_grad)

    def encoder_outputs(self, x):
        """Every encoder layer's output, in order (per-pixel features for segmentation)."""
        outs = []
        for layer in self.encoder.layers:
            x = layer(x)
            outs.append(x)
        self.code_ = x
        return outs

    def penalty_values(self):
        """The value of each attached penalty at the last forward, by name."""
        return {name: float(p.value) for name, p in self.named_penalties()
                if getattr(p, "value", None) is not None}

    def penalty_value(self):
        return float(sum(self.penalty_values().values()))

    def get_config(self):
        raise NotImplementedError


def _check_activation(name, where, what):
    return check_choice(name, ACTIVATION_NAMES, where=where, name=what)


class DenseAutoencoder(Autoencoder):
    """Fully connected autoencoder; default 784-64-64 | 64-784 as in the Keras MNIST
    example minicae started from.

    Parameters
    ----------
    in_features : int
        Input size (inputs of shape (N, C, H, W) are flattened; the output has
        the input's shape).
    hidden : sequence of int
        Encoder widths; the last is the code size.
    decoder_hidden : sequence of int
        Decoder widths before the output layer (default: that example's 64).
    activation, code_activation, output_activation : str
        'relu', 'leaky_relu', 'sigmoid' or 'tanh'.
    topk : int, optional
        Keep the k largest code units per sample (k-sparse autoencoder).
    penalty : dict, optional
        ``{"kind": "l1"|"kl"|"contractive", "weight": ..., "rho": ...}``.
    input_shape : sequence of int, optional
        Per-sample shape (e.g. (1, 28, 28)); output is reshaped to it.
    seed : int
        Seed of the initial weights.
    """

    def __init__(self, in_features=784, hidden=(64, 64), decoder_hidden=(64,),
                 activation="relu", code_activation="relu", output_activation="sigmoid",
                 topk=None, penalty=None, input_shape=None, seed=0,
                 dtype="float32"):
        super().__init__()
        where = "DenseAutoencoder"
        check_positive_int(in_features, where=where, name="in_features")
        hidden = [check_positive_int(h, where=where, name="hidden sizes") for h in hidden]
        if not hidden:
            raise ValueError(f"{where}: expected at least one hidden size, got {hidden!r}.")
        decoder_hidden = [check_positive_int(h, where=where, name="decoder_hidden sizes")
                          for h in decoder_hidden]
        for name, value in (("activation", activation), ("code_activation", code_activation),
                            ("output_activation", output_activation)):
            _check_activation(value, where, name)
        if input_shape is not None:
            input_shape = [int(s) for s in input_shape]
            if int(numpy.prod(input_shape)) != in_features:
                raise ValueError(f"{where}: input_shape {tuple(input_shape)} has "
                                 f"{int(numpy.prod(input_shape))} values, expected "
                                 f"in_features={in_features}.")
        self._config = dict(in_features=in_features, hidden=hidden,
                            decoder_hidden=decoder_hidden, activation=activation,
                            code_activation=code_activation,
                            output_activation=output_activation, topk=topk,
                            penalty=penalty, input_shape=input_shape, seed=seed,
                            dtype=str(numpy.dtype(dtype)))
        rng = numpy.random.default_rng(seed)
        kw = dict(rng=rng, dtype=dtype)
        enc = [nn.Flatten()]
        sizes = [in_features] + hidden
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            enc.append(nn.Linear(a, b, **kw))
            enc.append(nn.activation(code_activation if i == len(hidden) - 1 else activation))
        if topk is not None:
            from .nn.sparse import TopK
            enc.append(TopK(topk))
        dec = []
        sizes = [hidden[-1]] + decoder_hidden + [in_features]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            # a top-k code: the first decoder layer reads its k active units only
            layer = SparseInputLinear if (i == 0 and topk is not None) else nn.Linear
            dec += [layer(a, b, **kw),
                    nn.activation(output_activation if i == len(sizes) - 2 else activation)]
        if input_shape is not None:
            dec.append(nn.Reshape(*input_shape))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self._finish(penalty, where)

    def get_config(self):
        return dict(self._config)


class ConvAutoencoder(Autoencoder):
    """Convolutional autoencoder in the 'full'-padding scheme or a 'strided' one.

    Parameters
    ----------
    in_channels : int
    channels : sequence of int
        Encoder feature maps per layer; the decoder mirrors them.
    kernel_size : int or sequence of int (one per layer)
    scheme : {'full', 'strided'}
        'full': each encoder conv pads the input by k−1 on every side, so maps
        grow to H + L(k−1) (per-pixel features at full resolution), and each
        decoder conv is 'valid', shrinking back to H. 'strided': stride-2
        convs (or stride-1 'same' convs and 2x2 max-pooling with ``pool``)
        and a transposed-convolution decoder whose output_padding restores
        ``input_size``.
    activation, code_activation, output_activation : str
    pool : bool
        'strided' scheme only: downsample by max-pooling instead of stride.
    input_size : int or (int, int)
        'strided' scheme only: the (H, W) the decoder must restore.
    topk, penalty, seed, dtype : as for :class:`DenseAutoencoder`.
    """

    def __init__(self, in_channels=1, channels=(16, 32), kernel_size=3, scheme="full",
                 activation="relu", code_activation=None, output_activation="sigmoid",
                 pool=False, input_size=64, topk=None, penalty=None, seed=0,
                 dtype="float32"):
        super().__init__()
        where = "ConvAutoencoder"
        check_positive_int(in_channels, where=where, name="in_channels")
        channels = [check_positive_int(c, where=where, name="channels") for c in channels]
        if not channels:
            raise ValueError(f"{where}: expected at least one channel count, got "
                             f"{channels!r}.")
        kernels = ([kernel_size] * len(channels) if isinstance(kernel_size, int)
                   else list(kernel_size))
        if len(kernels) != len(channels):
            raise ValueError(f"{where}: expected one kernel size per layer "
                             f"({len(channels)}), got {kernel_size!r}.")
        for k in kernels:
            check_positive_int(k, where=where, name="kernel_size")
        check_choice(scheme, ("full", "strided"), where=where, name="scheme")
        code_activation = code_activation or activation
        for name, value in (("activation", activation), ("code_activation", code_activation),
                            ("output_activation", output_activation)):
            _check_activation(value, where, name)
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self._config = dict(in_channels=in_channels, channels=channels,
                            kernel_size=kernels, scheme=scheme, activation=activation,
                            code_activation=code_activation,
                            output_activation=output_activation, pool=bool(pool),
                            input_size=list(hw), topk=topk, penalty=penalty, seed=seed,
                            dtype=str(numpy.dtype(dtype)))
        rng = numpy.random.default_rng(seed)
        kw = dict(rng=rng, dtype=dtype)
        sizes = [in_channels] + channels
        enc, dec = [], []
        last = len(channels) - 1
        if scheme == "full":
            for i, k in enumerate(kernels):
                enc += [nn.Conv2d(sizes[i], sizes[i + 1], k, padding="full", **kw),
                        nn.activation(code_activation if i == last else activation)]
            for i in reversed(range(len(kernels))):
                dec += [nn.Conv2d(sizes[i + 1], sizes[i], kernels[i], padding="valid", **kw),
                        nn.activation(output_activation if i == 0 else activation)]
        else:
            stage_hw = [hw]
            for i, k in enumerate(kernels):
                if pool:
                    enc += [nn.Conv2d(sizes[i], sizes[i + 1], k, padding="same", **kw),
                            nn.activation(code_activation if i == last else activation),
                            nn.MaxPool2d(2)]
                    h, w = stage_hw[-1]
                    stage_hw.append((h // 2, w // 2))
                else:
                    enc += [nn.Conv2d(sizes[i], sizes[i + 1], k, stride=2, padding=k // 2,
                                      **kw),
                            nn.activation(code_activation if i == last else activation)]
                    h, w = stage_hw[-1]
                    stage_hw.append(enc[-2].output_shape(h, w))
            for i in reversed(range(len(kernels))):
                k = kernels[i]
                (h, w), (h2, _) = stage_hw[i], stage_hw[i + 1]
                op = (output_padding_for(h, k, 2, k // 2), output_padding_for(w, k, 2, k // 2))
                if (h2 - 1) * 2 - 2 * (k // 2) + k + op[0] != h:
                    raise ValueError(f"{where}: cannot restore height {h} from {h2} with "
                                     f"kernel {k}; choose an input_size divisible by "
                                     f"{2 ** len(kernels)}.")
                dec += [nn.ConvTranspose2d(sizes[i + 1], sizes[i], k, stride=2,
                                           padding=k // 2, output_padding=op, **kw),
                        nn.activation(output_activation if i == 0 else activation)]
        if topk is not None:
            from .nn.sparse import TopK
            enc.append(TopK(topk))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self._finish(penalty, where)

    def get_config(self):
        return dict(self._config)


MODELS = {"DenseAutoencoder": DenseAutoencoder, "ConvAutoencoder": ConvAutoencoder,
          "DenseVAE": DenseVAE, "ConvVAE": ConvVAE}


def model_from_config(class_name, config):
    """Rebuild a model from its class name and ``get_config()`` dict."""
    if class_name not in MODELS:
        raise ValueError(f"model_from_config: expected a model class among "
                         f"{sorted(MODELS)}, got {class_name!r}.")
    return MODELS[class_name](**config)


def parameter_count(cls, config):
    """How many parameter values ``cls(**config)`` would allocate, without building it.

    None for a class it does not know. Checkpoint loading compares this with
    the file before building, so a crafted config cannot allocate gigabytes.
    """
    import inspect

    if cls not in (DenseAutoencoder, ConvAutoencoder):
        return None
    args = inspect.signature(cls).bind(**config)
    args.apply_defaults()
    c = args.arguments
    if cls is DenseAutoencoder:
        enc = [int(c["in_features"]), *map(int, c["hidden"])]
        dec = [enc[-1], *map(int, c["decoder_hidden"]), enc[0]]
        return sum(a * b + b for chain in (enc, dec) for a, b in zip(chain, chain[1:]))
    sizes = [int(c["in_channels"]), *map(int, c["channels"])]
    k = c["kernel_size"]
    kernels = [int(k)] * (len(sizes) - 1) if isinstance(k, int) else list(map(int, k))
    # an encoder conv s_i -> s_i+1 and its mirror s_i+1 -> s_i, k x k, with biases
    return sum(2 * kk * kk * a * b + a + b for kk, a, b in zip(kernels, sizes, sizes[1:]))
