"""PyTorch adapter for optstrat: a learning-rate scheduler, in-place gradient clipping and an optimizer wrapper.

``ScheduleLR`` drives an optimizer's learning rates with optstrat schedules in
closed form. ``clip_grad_norm_`` and ``clip_`` clip the ``.grad`` tensors of
parameters in place with the core's clippers. ``ClippedOptimizer`` wraps an
optimizer so that each ``step()`` clips, skips non-finite updates whole,
steps the optimizer and advances the schedulers, with ``torch.amp.GradScaler``
support.
"""

from optstrat_torch._clipping import clip_, clip_grad_norm_
from optstrat_torch._optimizer import ClippedOptimizer
from optstrat_torch._scheduler import ScheduleLR

__all__ = ["ClippedOptimizer", "ScheduleLR", "clip_", "clip_grad_norm_"]
