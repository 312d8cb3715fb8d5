"""Per-image compute of a model, counted with :class:`torch.utils.flop_counter.FlopCounterMode`.

Convention: the figure is FlopCounterMode's total divided by 1e6. FlopCounterMode counts a
multiply-add as 2 FLOPs and counts only the matmul-like ops (convolutions, linear layers, batched
matmuls), not activations, normalisation or pooling. CNN papers mostly quote multiply-adds as
"FLOPs", so their figures are about half of ours (ResNet-20: 40.6M multiply-adds, 81.1 MFLOPs here).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_mflops(model: nn.Module, in_chans: int, img_size: int) -> float:
    """MFLOPs (multiply-add = 2) of one forward pass of one ``in_chans x img_size x img_size`` image.

    Runs in eval mode (so dropout and stochastic depth do not change the count) and under
    ``no_grad``, on the model's own device and dtype; a model on the meta device costs no compute.
    The model's training flag is restored afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(1, in_chans, img_size, img_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e6
