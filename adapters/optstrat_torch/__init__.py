"""PyTorch adapter for optstrat: a learning-rate scheduler and in-place gradient clipping.

``ScheduleLR`` drives an optimizer's learning rates with optstrat schedules in
closed form. ``clip_grad_norm_`` and ``clip_`` clip the ``.grad`` tensors of
parameters in place with the core's clippers.
"""

from optstrat_torch._clipping import clip_, clip_grad_norm_
from optstrat_torch._scheduler import ScheduleLR

__all__ = ["ScheduleLR", "clip_", "clip_grad_norm_"]
