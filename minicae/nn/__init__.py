"""Layers, losses and penalties with state (parameters, caches) over functional."""

from __future__ import annotations

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh, activation
from .layers import (Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, Reshape,
                     Upsample)
from .module import Module, Parameter, Sequential

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "ConvTranspose2d", "Linear",
           "MaxPool2d", "Upsample", "Flatten", "Reshape", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "activation"]
