r"""Few-label segmentation: a small convolutional head on per-pixel features.

:class:`SegmentationHead` follows scikit-learn: the constructor stores
hyperparameters, :meth:`~SegmentationHead.fit` validates, trains and returns
``self``, learned state ends in ``_``. The head is ``Conv2d(D, h, k,
'same') → ReLU → … → Conv2d(h, K, 1)`` (a 1x1 convolution alone with
``hidden=()``), trained with Adam on the per-pixel softmax cross-entropy
over NCHW logits, plus ``dice_weight`` times the soft Dice loss:

.. math:: L = \mathrm{CE}(z, t) + \lambda_{D}\,\mathrm{Dice}(z, t)

Given a fitted :class:`~minicae.segment.features.PixelFeatures` as
``extractor``, ``fit`` and ``predict`` take images instead of features and
``finetune=True`` also trains the encoder end to end through the features.
"""

from __future__ import annotations

import numpy

from .. import nn
from .._validation import check_nonnegative_float, check_positive_float, check_positive_int
from ..backend import to_device, to_numpy

__all__ = ["SegmentationHead"]


class SegmentationHead:
    """A per-pixel classifier trained on few labelled images.

    Parameters
    ----------
    n_classes : int, default 2
    hidden : sequence of int, default (16,)
        Widths of the hidden convolutions (empty: a single 1x1 convolution).
    kernel_size : int, default 3
        Kernel of the hidden convolutions ('same' padding).
    epochs : int, default 150
        Passes over the labelled images.
    batch_size : int, default 8
    lr : float, default 1e-2
    dice_weight : float, default 0.0
        Weight of the soft Dice loss added to the cross-entropy.
    extractor : PixelFeatures, optional
        Makes ``fit``/``predict`` take images (N, C, H, W).
    finetune : bool, default False
        With ``extractor``: update the encoder too, at ``encoder_lr``.
    encoder_lr : float, default 1e-3
    seed : int, default 0
        Initial weights and batch order.

    Attributes
    ----------
    net_ : minicae.nn.Sequential
    loss_curve_ : list of float
        Mean training loss per epoch.
    n_features_in_ : int
    """

    def __init__(self, n_classes=2, *, hidden=(16,), kernel_size=3, epochs=150,
                 batch_size=8, lr=1e-2, dice_weight=0.0, extractor=None, finetune=False,
                 encoder_lr=1e-3, seed=0):
        self.n_classes = n_classes
        self.hidden = hidden
        self.kernel_size = kernel_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.dice_weight = dice_weight
        self.extractor = extractor
        self.finetune = finetune
        self.encoder_lr = encoder_lr
        self.seed = seed

    def get_params(self):
        """The JSON-able hyperparameters (what a checkpoint would store)."""
        return {"n_classes": self.n_classes, "hidden": list(self.hidden),
                "kernel_size": self.kernel_size, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr,
                "dice_weight": self.dice_weight, "finetune": self.finetune,
                "encoder_lr": self.encoder_lr, "seed": self.seed}

    def _build(self, d, dtype, rng):
        layers, width = [], d
        for h in self.hidden:
            layers += [nn.Conv2d(width, h, self.kernel_size, padding="same", rng=rng,
                                 dtype=dtype), nn.ReLU()]
            width = h
        layers.append(nn.Conv2d(width, self.n_classes, 1, rng=rng, dtype=dtype))
        return nn.Sequential(*layers)

    def _features(self, x, keep=False):
        if self.extractor is None:
            return to_device(x)
        return self.extractor.transform(x, keep=keep)

    def _check(self, x, masks):
        where = "SegmentationHead.fit"
        check_positive_int(self.n_classes, where=where, name="n_classes")
        check_positive_int(self.epochs, where=where, name="epochs")
        check_positive_int(self.batch_size, where=where, name="batch_size")
        check_positive_float(self.lr, where=where, name="lr")
        check_nonnegative_float(self.dice_weight, where=where, name="dice_weight")
        if self.n_classes < 2:
            raise ValueError(f"{where}: expected n_classes >= 2, got {self.n_classes}.")
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{where}: expected {'images' if self.extractor else 'features'}"
                             f" of shape (N, D, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}.")
        masks = numpy.asarray(to_numpy(masks))
        if masks.dtype.kind not in "iu":
            raise TypeError(f"{where}: expected integer masks, got dtype {masks.dtype}. "
                            f"Convert with masks.astype(numpy.int64).")
        want = (x.shape[0],) + tuple(x.shape[2:])
        if masks.shape != want:
            raise ValueError(f"{where}: expected masks of shape {want}, got "
                             f"{masks.shape}.")
        if masks.min() < 0 or masks.max() >= self.n_classes:
            raise ValueError(f"{where}: expected mask values in [0, {self.n_classes}), got "
                             f"[{masks.min()}, {masks.max()}]. Set n_classes.")
        if self.finetune and self.extractor is None:
            raise ValueError(f"{where}: finetune=True needs an extractor (a PixelFeatures "
                             f"with the encoder's model).")
        return masks.astype(numpy.int64)

    def fit(self, x, masks):
        """Train on features (or images, with ``extractor``) and integer masks; return self."""
        from ..optim import Adam

        masks = self._check(x, masks)
        rng = numpy.random.default_rng(self.seed)
        if self.extractor is not None and not hasattr(self.extractor, "mean_"):
            self.extractor.fit(x)
        probe = self._features(x[:1])
        self.n_features_in_ = int(probe.shape[1])
        self.net_ = self._build(self.n_features_in_, probe.dtype, rng)
        opt = Adam(self.net_, lr=self.lr)
        enc_opt = None
        if self.finetune:
            enc_opt = Adam(self.extractor.model.encoder, lr=self.encoder_lr)
        ce, dice = nn.CrossEntropyLoss(), nn.DiceLoss()
        feats = None if self.finetune else self._features(x)
        self.loss_curve_ = []
        n = x.shape[0]
        for _ in range(self.epochs):
            total, steps = 0.0, 0
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = numpy.sort(order[start:start + self.batch_size])
                target = to_device(masks[idx])
                if self.finetune:
                    self.extractor.model.train()
                    self.extractor.model.zero_grad()
                    fb = self._features(x[idx], keep=True)
                else:
                    fb = feats[to_device(idx)]
                self.net_.zero_grad()
                logits = self.net_(fb)
                value = ce(logits, target)
                dlogits = ce.backward()
                if self.dice_weight:
                    value += self.dice_weight * dice(logits, target)
                    dlogits = dlogits + self.dice_weight * dice.backward()   # ∇L = ∇CE + λ∇Dice
                dfeat = self.net_.backward(dlogits)
                opt.step()
                if enc_opt is not None:
                    self.extractor.backward(dfeat)
                    enc_opt.step()
                total += value
                steps += 1
            self.loss_curve_.append(total / steps)
        if self.finetune:
            self.extractor.model.eval()
        return self

    def predict_proba(self, x, *, batch_size=32):
        """Class probabilities (N, K, H, W) on the host."""
        if not hasattr(self, "net_"):
            raise RuntimeError("SegmentationHead.predict: call fit first.")
        from ..functional import softmax

        out = []
        for start in range(0, x.shape[0], batch_size):
            fb = self._features(x[start:start + batch_size])
            if fb.shape[1] != self.n_features_in_:
                raise ValueError(f"SegmentationHead.predict: expected {self.n_features_in_} "
                                 f"feature channels, got {fb.shape[1]}.")
            out.append(to_numpy(softmax(self.net_(fb), axis=1)))
        return numpy.concatenate(out, axis=0)

    def predict(self, x, *, batch_size=32):
        """The most probable class per pixel, int64 (N, H, W) on the host."""
        return self.predict_proba(x, batch_size=batch_size).argmax(axis=1).astype(numpy.int64)
