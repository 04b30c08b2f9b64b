"""Layers, losses and penalties with state (parameters, caches) over functional."""

from __future__ import annotations

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh, activation
from .layers import (Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, Reshape,
                     Upsample)
from .losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, DiceLoss, Loss,
                     MSELoss)
from .module import Module, Parameter, Sequential
from .penalties import Contractive, KLSparsity, L1Activity, Penalty
from .sparse import TopK

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "ConvTranspose2d", "Linear",
           "MaxPool2d", "Upsample", "Flatten", "Reshape", "ReLU", "LeakyReLU",
           "Sigmoid", "Tanh", "activation", "TopK", "Loss", "MSELoss", "BCELoss",
           "BCEWithLogitsLoss", "CrossEntropyLoss", "DiceLoss", "Penalty", "L1Activity",
           "KLSparsity", "Contractive"]
