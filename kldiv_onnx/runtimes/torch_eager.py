"""PyTorch eager: ``torch.nn.functional.kl_div`` in the inputs' dtype (bfloat16 included)."""

from __future__ import annotations

import warnings

import numpy as np

from .._contract import Variant
from ..arrays import from_torch, to_torch
from .framework import Framework


class TorchEager(Framework):
    name = "PyTorch eager"
    module = "torch"
    distribution = "torch"

    def kl_div(self, x: np.ndarray, t: np.ndarray, variant: Variant) -> np.ndarray:
        import torch.nn.functional as F

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch announces a change of its 'mean'
            out = F.kl_div(
                to_torch(x, copy=True),
                to_torch(t, copy=True),
                reduction=variant.reduction,
                log_target=variant.log_target,
            )
        return from_torch(out)
