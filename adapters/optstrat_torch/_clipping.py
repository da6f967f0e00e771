"""In-place gradient clipping of PyTorch parameters with optstrat clippers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from optstrat.clipping import (
    DEFAULT_NONFINITE,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ClipInfo,
    Clipper,
    global_norm,
)
from optstrat.clipping._global import LimitClipper
from optstrat_torch import _foreach

__all__ = ["clip_", "clip_grad_norm_"]

Parameters = torch.Tensor | Iterable[torch.Tensor]


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float,
    norm_type: float | str = 2.0,
    nonfinite: str = DEFAULT_NONFINITE,
) -> torch.Tensor:
    """Clip the gradients of ``parameters`` in place to a global norm of at most ``max_norm``.

    scale = min(1, max_norm / norm), where norm is the ``norm_type``-norm of
    all gradients taken together, and every ``.grad`` is multiplied by scale.
    Returns the norm before clipping as a 0-d tensor, like
    ``torch.nn.utils.clip_grad_norm_``: float32 for float16, bfloat16 and
    float32 gradients (accumulated without overflow) and float64 when any
    gradient is float64.

    ``parameters`` is a tensor or an iterable of tensors (a generator such as
    ``model.parameters()`` is read once). Parameters whose ``.grad`` is None
    are skipped, and with none left the result is ``tensor(0.)``.
    ``norm_type`` is any p > 0 or ``inf``. ``nonfinite`` sets what happens when
    a gradient contains NaN or infinity: ``"skip"`` (the default) sets every
    gradient to zero, ``"error"`` raises
    ``optstrat.clipping.NonFiniteGradientError`` before any gradient is
    changed, and ``"propagate"`` leaves the gradients as they are.

    Reproduces ``torch.nn.utils.clip_grad_norm_(parameters, max_norm,
    norm_type)`` except for torch's epsilon: torch uses
    ``max_norm / (norm + 1e-6)``, so its clipped gradients are smaller by a
    relative ``1e-6 / norm``. With non-finite gradients torch gives NaN and
    zeros; here the ``nonfinite`` policy applies.

    Plain tensors on the CPU, CUDA or XPU take a ``torch._foreach_*`` fast
    path that groups gradients by device and dtype, as torch does, and
    matches the core up to float32 rounding. On the CPU it skips the multiply
    when nothing is clipped. On an accelerator the scale stays a tensor, so
    nothing waits for the device unless ``nonfinite="error"``. Tensor
    subclasses such as DTensor take the portable core path.

    >>> import torch
    >>> weight = torch.nn.Parameter(torch.zeros(2))
    >>> weight.grad = torch.tensor([3.0, 4.0])
    >>> clip_grad_norm_([weight], max_norm=1.0)
    tensor(5.)
    >>> weight.grad
    tensor([0.6000, 0.8000])
    """
    clipper = ClipByGlobalNorm(max_norm=max_norm, norm_type=norm_type, nonfinite=nonfinite)
    params, grads = _params_with_grads(parameters)
    if not grads:
        return torch.tensor(0.0)

    if _foreach.supports(grads):
        with torch.no_grad():
            result = _foreach.clip_by_global_norm_(grads, clipper, with_info=False)
        if result is not None:
            return result.norm
    if clipper.norm_type == 2.0:
        _, info = _clip_collected(params, grads, clipper, clipper.init(grads))
        return info.norm
    # ClipInfo.norm is always the L2 norm, and torch returns the norm_type-norm, so that
    # norm is measured here, before the clipper changes the gradients.
    norm = global_norm(grads, clipper.norm_type)
    _clip_collected(params, grads, clipper, clipper.init(grads))
    return norm


def clip_(parameters: Parameters, clipper: Clipper, state: Any = None) -> tuple[Any, ClipInfo]:
    """Clip the gradients of ``parameters`` in place with any optstrat clipper.

    Collects each ``.grad`` that is not None, calls ``clipper.update(grads,
    state, params)`` and copies the clipped values back into the same
    ``.grad`` tensors (``grad.copy_``), so the optimizer uses them and no
    tensor is replaced. On plain tensors, :class:`optstrat.ClipByGlobalNorm`,
    :class:`optstrat.ZClip` and :class:`optstrat.AutoClip` instead take the
    in-place fast path described in :func:`clip_grad_norm_`, and on CPU
    tensors :class:`optstrat.ClipByNorm` and :class:`optstrat.ClipByValue`
    take in-place paths of their own, all with the core's result. Returns ``(state, info)``: the clipper's new state,
    to pass to the next call, and its :class:`optstrat.ClipInfo` of 0-d
    tensors (norm before clipping, scale applied, whether all gradients were
    finite, whether any value changed). ``state=None`` starts from
    ``clipper.init(grads)``. The parameters themselves are passed as
    ``params``, for clippers that scale by the weights, such as adaptive
    clipping. Nothing is changed when the clipper raises, as with
    ``nonfinite="error"``.

    Without any gradient the clipper is not called: the state comes back
    unchanged with ``norm=0``, ``scale=1``, ``finite=True`` and
    ``clipped=False``.

    >>> import torch
    >>> weight = torch.nn.Parameter(torch.zeros(2))
    >>> weight.grad = torch.tensor([3.0, 4.0])
    >>> state, info = clip_([weight], ClipByGlobalNorm(max_norm=1.0))
    >>> weight.grad, info.norm, bool(info.clipped)
    (tensor([0.6000, 0.8000]), tensor(5.), True)
    """
    if not isinstance(clipper, Clipper):
        raise TypeError(
            f"clipper must be an optstrat clipper such as ClipByGlobalNorm(max_norm=1.0), "
            f"got {clipper!r} ({type(clipper).__name__})"
        )
    params, grads = _params_with_grads(parameters)
    if not grads:
        return state, _info_without_grads()

    if state is None:
        state = clipper.init(grads)
    return _clip_collected(params, grads, clipper, state)


def _params_with_grads(parameters: Parameters) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return the parameters that have a ``.grad`` and those gradients, reading ``parameters`` once."""
    if isinstance(parameters, torch.Tensor):
        items = [parameters]
    elif isinstance(parameters, Iterable):
        items = list(parameters)
    else:
        raise TypeError(
            "parameters must be a tensor or an iterable of tensors such as model.parameters(), "
            f"got {type(parameters).__name__}"
        )
    params = []
    grads = []
    for index, param in enumerate(items):
        if not isinstance(param, torch.Tensor):
            raise TypeError(f"parameters[{index}] must be a torch.Tensor, got {type(param).__name__}")
        if param.grad is not None:
            params.append(param)
            grads.append(param.grad)
    return params, grads


def _clip_collected(
    params: list[torch.Tensor], grads: list[torch.Tensor], clipper: Clipper, state: Any
) -> tuple[Any, ClipInfo]:
    if type(clipper) is ClipByGlobalNorm and _foreach.supports(grads):
        with torch.no_grad():
            result = _foreach.clip_by_global_norm_(grads, clipper)
        if result is not None:
            return state, result.info
    if type(clipper) in (ClipByNorm, ClipByValue) and _foreach.supports(grads):
        with torch.no_grad():
            if type(clipper) is ClipByNorm:
                local_info = _foreach.clip_by_norm_(grads, clipper)
            else:
                local_info = _foreach.clip_by_value_(grads, clipper)
        if local_info is not None:
            return state, local_info
    if isinstance(clipper, LimitClipper) and _foreach.supports(grads):
        with torch.no_grad():
            limited = _foreach.clip_by_limit_(grads, clipper, state)
        if limited is not None:
            return limited

    # The portable path: the core computes every clipped gradient before any is written,
    # so an exception leaves all gradients as they were. Tensor subclasses such as DTensor
    # take it, and it works through their op dispatch.
    # NOTE: AdaptiveClip always takes this path, which converts every gradient to float64 for
    # its norms and copies the results back, so on large models it is many times slower than
    # the fast paths above.
    # NOTE: gradients on several devices fail here, because the core adds per-tensor norms
    # without moving them to one device. The fast paths above move them, so this concerns
    # the per-tensor clippers and the fast paths' fallbacks (non-finite or extreme values on the CPU).
    with torch.no_grad():
        clipped, state, info = clipper.update(grads, state, params)
        for grad, value in zip(grads, clipped):
            if value is not grad:
                grad.copy_(value)
    return state, info


def _info_without_grads() -> ClipInfo:
    return ClipInfo(
        norm=torch.tensor(0.0),
        scale=torch.tensor(1.0),
        finite=torch.tensor(True),
        clipped=torch.tensor(False),
    )
