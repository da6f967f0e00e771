"""A ``torch._foreach_*`` fast path for clipping plain tensors by their global norm.

It computes what :class:`optstrat.clipping.ClipByGlobalNorm` computes, with
the same scale formula (the core's helpers), and its norm equals the core's
up to float32 rounding. The gradients are grouped by (device, dtype) as
``torch.nn.utils.clip_grad_norm_`` groups them.

Measuring the norm has two modes:

* All gradients on the CPU: torch 2.13's CPU norm kernels add a whole
  float32 tensor in float32 (the L2 norm of 50257 x 768 normal values comes
  out 0.3 % off, of 10**7 equal values 0.8 % off), so the L2 norm is taken over
  rows of ``ROW`` elements, and other p-norms sum |g|**p block by block with
  torch's pairwise summation; the partial results are combined in float64.
  float16 and bfloat16 values are converted to float32 a block at a time.
  The ``dtype=`` argument of torch's norms converts whole tensors, which
  made a float16 norm 3 times and a float32 norm in float64 20 times slower
  in a single-thread test, so only tensors of at most ``SHORT`` elements
  take it: for them, one call costs less than a row reduction each. The
  float32 kernels overflow when |g|**p exceeds the float32 range and lose
  terms that underflow, so a total that is not finite, or too small to rule
  out lost terms, is untrusted and the caller falls back to the core.
  Reading values on the CPU costs no device synchronization, so the
  multiply is skipped when nothing needs clipping.
* Any gradient on an accelerator: ``torch._foreach_norm(..., dtype=float64)``
  accumulates in float64, where the squares of float16, bfloat16 and float32
  values neither overflow nor underflow. The scale stays a tensor and is
  always multiplied, so nothing waits for the device, except the "error"
  policy, which must read the finiteness flag.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np
import torch

from optstrat import _xp
from optstrat.clipping import ClipByGlobalNorm, ClipByNorm, ClipByValue, ClipInfo
from optstrat.clipping._base import as_threshold, check_state_namespace, factor_to_limit, raise_if_nonfinite
from optstrat.clipping._global import LimitClipper

__all__ = [
    "BLOCK",
    "ROW",
    "SHORT",
    "GlobalNormResult",
    "clip_by_global_norm_",
    "clip_by_limit_",
    "clip_by_norm_",
    "clip_by_value_",
    "supports",
]

#: Elements per row whose L2 norm the CPU kernel computes in float32 before
#: the rows are combined in float64. On 10**7 equal values torch 2.13's
#: kernel drifts by up to 2e-6 with rows of 4096 and 7e-7 with rows of 1024.
#: Shorter rows cost more. On one thread, clipping GPT-2- and ResNet-50-sized
#: gradients with rows is a few percent slower than torch's whole-tensor
#: reductions. With two threads it is faster, because the rows spread over
#: both threads (benchmarks/RESULTS.md).
ROW = 1024

#: Float32 tensors of at most this many elements are converted to float64 by one
#: ``torch._foreach_norm`` call instead of being reduced in rows. Up to this size
#: the conversion took less time than a row reduction call per tensor (an estimate
#: from single-thread timings of 64 x 64 weights).
SHORT = 4 * ROW

#: Elements converted to float32 (or raised to the power p) at a time in a
#: scratch buffer on the CPU: 1 MiB of float32, so the buffer stays in cache.
BLOCK = 2**18

# A total p-norm whose p-th power is below count * 2**-86 may miss terms whose
# p-th powers underflowed float32 (each loses at most 2**-126), so it is not trusted.
_UNDERFLOW_MARGIN_LOG2 = -86.0

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCED = (torch.float16, torch.bfloat16)
# Device types whose _foreach_norm accepts dtype=torch.float64 (the CUDA and XPU kernels
# dispatch on the output dtype); other devices take the portable core path.
# NOTE: the accelerator mode is tested on CPU tensors (sync_free=True) only; it has not
# run on a CUDA or XPU device.
_DEVICES = ("cpu", "cuda", "xpu")

Groups = dict[tuple[torch.device, torch.dtype], list[torch.Tensor]]


class GlobalNormResult(NamedTuple):
    """The outcome of :func:`clip_by_global_norm_`.

    ``norm`` is the ``norm_type``-norm that set the scale (what
    ``clip_grad_norm_`` returns) and ``info`` the ClipInfo, whose ``norm`` is
    the L2 norm, or None when it was not requested.
    """

    norm: torch.Tensor
    info: ClipInfo | None


def supports(grads: list[torch.Tensor]) -> bool:
    """Tell whether every gradient is a plain, dense, floating tensor on a device the fast path handles.

    Tensor subclasses such as DTensor take the core path, which works through
    their op dispatch.
    """
    return all(
        type(grad) is torch.Tensor
        and grad.layout is torch.strided
        and grad.dtype in _FLOATING
        and grad.device.type in _DEVICES
        for grad in grads
    )


def clip_by_global_norm_(
    grads: list[torch.Tensor], clipper: ClipByGlobalNorm, *, with_info: bool = True, sync_free: bool | None = None
) -> GlobalNormResult | None:
    """Clip ``grads`` in place as ``clipper.update`` would; return None, changing nothing, when the core must decide.

    ``grads`` must be non-empty and pass :func:`supports`. None comes back only
    in the CPU mode, for non-finite gradients and for totals the float32
    kernels cannot be trusted with (see the module docstring). With
    ``with_info=False`` the result's ``info`` is None, which saves the second
    pass that the L2 norm of ``ClipInfo.norm`` needs when
    ``clipper.norm_type`` is not 2. ``sync_free`` picks the mode. By default
    it is the accelerator mode when any gradient is off the CPU. Tests pass
    True to run that mode on the CPU.
    """
    groups = _group_by_device_and_dtype(grads)
    if sync_free is None:
        sync_free = not _all_on_cpu(groups)
    result_dtype = _result_dtype(groups)
    first_device = grads[0].device
    count = sum(grad.numel() for grad in grads)

    norm = _total_norm(groups, clipper.norm_type, first_device, sync_free)
    l2_norm = None
    if with_info:
        l2_norm = norm if clipper.norm_type == 2.0 else _total_norm(groups, 2.0, first_device, sync_free)
    if sync_free:
        return _finish_sync_free(groups, clipper, norm, l2_norm, result_dtype)
    if not (_trusted(norm, clipper.norm_type, count) and (l2_norm is None or _trusted(l2_norm, 2.0, count))):
        return None

    norm = norm.to(result_dtype)
    # Every value is finite here. The scale comes from the core's formula on NumPy 0-d arrays,
    # which costs less than torch operations on 0-d tensors and rounds the same way.
    host_norm = np.asarray(norm.item(), dtype=np.float64 if result_dtype == torch.float64 else np.float32)
    scale = float(factor_to_limit(np, host_norm, as_threshold(np, clipper.max_norm, host_norm)))
    if scale < 1.0:
        _scale_(groups, scale)
    info = None
    if l2_norm is not None:
        info = ClipInfo(
            norm=l2_norm.to(result_dtype),
            scale=torch.tensor(scale, dtype=result_dtype),
            finite=torch.ones((), dtype=torch.bool),
            clipped=torch.tensor(scale < 1.0),
        )
    return GlobalNormResult(norm=norm, info=info)


def clip_by_limit_(
    grads: list[torch.Tensor], clipper: LimitClipper, state: Any, *, sync_free: bool | None = None
) -> tuple[Any, ClipInfo] | None:
    """Clip ``grads`` in place as ``clipper.update`` would; return None, changing nothing, when the core must decide.

    For clippers such as ZClip and AutoClip, whose limit comes from the
    global L2 norm and their state: the norm is measured as in
    :func:`clip_by_global_norm_`, the clipper's ``limit_for`` gives the limit
    and the new state, and the gradients are scaled in place. Returns
    ``(new_state, info)``. The modes and the cases that return None are those
    of :func:`clip_by_global_norm_`.
    """
    state_array = clipper.check_state(state)
    groups = _group_by_device_and_dtype(grads)
    if sync_free is None:
        sync_free = not _all_on_cpu(groups)
    result_dtype = _result_dtype(groups)
    first_device = grads[0].device

    total = _total_norm(groups, 2.0, first_device, sync_free)
    if sync_free:
        finite = torch.isfinite(total)
    elif _trusted(total, 2.0, sum(grad.numel() for grad in grads)):
        finite = torch.ones((), dtype=torch.bool, device=first_device)
    else:
        return None
    norm = total.to(result_dtype)
    raise_if_nonfinite(finite, norm, clipper.nonfinite)
    xp = _xp.array_namespace(norm)
    check_state_namespace(xp, state_array, grads)

    limit, new_state = clipper.limit_for(xp, norm, finite, state)
    factor = factor_to_limit(xp, norm, limit)
    fallback = torch.ones_like(factor) if clipper.nonfinite == "propagate" else torch.zeros_like(factor)
    scale = torch.where(finite, factor, fallback)
    if sync_free:
        _scale_sync_free_(groups, scale, finite, zero_nonfinite=clipper.nonfinite != "propagate")
    elif bool(scale < 1):
        _scale_(groups, float(scale))
    return new_state, ClipInfo(norm=norm, scale=scale, finite=finite, clipped=scale < 1)


def clip_by_value_(grads: list[torch.Tensor], clipper: ClipByValue) -> ClipInfo | None:
    """Clip ``grads`` in place as ``clipper.update`` would; return None, changing nothing, when the core must decide.

    CPU tensors only: the L2 norm of ``ClipInfo.norm`` is measured as in
    :func:`clip_by_global_norm_` and the largest magnitude with
    ``torch.aminmax``. Tensors are clamped in place, and only when some value
    exceeds the bound (``max_value`` rounded to each tensor's dtype, as in the
    core). None comes back for gradients off the CPU, for non-finite values
    and for norms the float32 kernels cannot be trusted with.
    """
    groups = _group_by_device_and_dtype(grads)
    if not _all_on_cpu(groups):
        return None
    result_dtype = _result_dtype(groups)
    first_device = grads[0].device
    l2_norm = _total_norm(groups, 2.0, first_device, sync_free=False)
    largest = _total_norm(groups, math.inf, first_device, sync_free=False)
    if not (_trusted(l2_norm, 2.0, sum(grad.numel() for grad in grads)) and math.isfinite(float(largest))):
        return None

    largest = largest.to(result_dtype)
    xp = _xp.array_namespace(largest)
    scale = factor_to_limit(xp, largest, as_threshold(xp, clipper.max_value, largest))
    if bool(scale < 1):
        for tensors in groups.values():
            # The bound is max_value rounded to the group's dtype, as in the core.
            bound = float(as_threshold(xp, clipper.max_value, tensors[0]))
            for tensor in tensors:
                tensor.clamp_(min=-bound, max=bound)
    return ClipInfo(
        norm=l2_norm.to(result_dtype), scale=scale, finite=torch.ones((), dtype=torch.bool), clipped=scale < 1
    )


def clip_by_norm_(grads: list[torch.Tensor], clipper: ClipByNorm) -> ClipInfo | None:
    """Clip ``grads`` in place as ``clipper.update`` would; return None, changing nothing, when the core must decide.

    CPU tensors only. Each tensor's ``norm_type``-norm is measured on its own
    as :func:`clip_by_global_norm_` measures all of them, and a tensor is
    multiplied by its factor min(1, max_norm / norm) only when the factor is
    below 1. None comes back for gradients off the CPU, for non-finite values
    and for norms the float32 kernels cannot be trusted with.
    """
    groups = _group_by_device_and_dtype(grads)
    if not _all_on_cpu(groups):
        return None
    result_dtype = _result_dtype(groups)
    present = [grad for grad in grads if grad.numel() > 0]
    norms = [torch.linalg.vector_norm(_cpu_partial_norms([grad], clipper.norm_type), clipper.norm_type) for grad in present]
    if clipper.norm_type == 2.0:
        # The tensors' L2 norms give the global one without another pass over the gradients.
        l2_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros((), dtype=torch.float64)
    else:
        l2_norm = _total_norm(groups, 2.0, grads[0].device, sync_free=False)
    if not _trusted(l2_norm, 2.0, sum(grad.numel() for grad in grads)):
        return None

    xp = _xp.array_namespace(l2_norm)
    factors = []
    for grad, norm in zip(present, norms):
        # A zero norm can hide squares that underflowed, unless every value is zero.
        if not _trusted(norm, clipper.norm_type, grad.numel()) and (float(norm) != 0.0 or bool(grad.any())):
            return None
        # As in the core, each tensor's norm and factor are float64 only for a float64 tensor.
        norm = norm.to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        factors.append((grad, factor_to_limit(xp, norm, as_threshold(xp, clipper.max_norm, norm))))

    scale = torch.ones((), dtype=result_dtype)
    for grad, factor in factors:
        scale = torch.minimum(scale, factor.to(result_dtype))
        if bool(factor < 1):
            grad.mul_(factor.to(_product_dtype(grad.dtype)))
    return ClipInfo(norm=l2_norm.to(result_dtype), scale=scale, finite=torch.ones((), dtype=torch.bool), clipped=scale < 1)


def _finish_sync_free(
    groups: Groups, clipper: ClipByGlobalNorm, norm: torch.Tensor, l2_norm: torch.Tensor | None, result_dtype: torch.dtype
) -> GlobalNormResult:
    """Scale the gradients with a scale that stays a tensor, so nothing waits for the device."""
    measured = [total for total in (norm, l2_norm) if total is not None]
    # NOTE: in this mode a p-norm with a large p can overflow float64 for values near the
    # float32 maximum; such a step counts as non-finite.
    finite = torch.stack([torch.isfinite(total) for total in measured]).all()
    norm = norm.to(result_dtype)
    raise_if_nonfinite(finite, norm, clipper.nonfinite)

    xp = _xp.array_namespace(norm)
    factor = factor_to_limit(xp, norm, as_threshold(xp, clipper.max_norm, norm))
    fallback = torch.ones_like(factor) if clipper.nonfinite == "propagate" else torch.zeros_like(factor)
    scale = torch.where(finite, factor, fallback)
    _scale_sync_free_(groups, scale, finite, zero_nonfinite=clipper.nonfinite != "propagate")
    info = None
    if l2_norm is not None:
        info = ClipInfo(norm=l2_norm.to(result_dtype), scale=scale, finite=finite, clipped=scale < 1)
    return GlobalNormResult(norm=norm, info=info)


def _group_by_device_and_dtype(grads: list[torch.Tensor]) -> Groups:
    groups: Groups = defaultdict(list)
    for grad in grads:
        groups[(grad.device, grad.dtype)].append(grad)
    return dict(groups)


def _result_dtype(groups: Groups) -> torch.dtype:
    """Return the dtype of the reported norm: float64 when any gradient is float64, else float32 (as the core)."""
    return torch.float64 if any(dtype == torch.float64 for _, dtype in groups) else torch.float32


def _all_on_cpu(groups: Groups) -> bool:
    return all(device.type == "cpu" for device, _ in groups)


def _total_norm(groups: Groups, norm_type: float, first_device: torch.device, sync_free: bool) -> torch.Tensor:
    """Return the global ``norm_type``-norm of all groups as a float64 0-d tensor on ``first_device``."""
    group_norms = []
    for tensors in groups.values():
        # Empty tensors add nothing, and the infinity norm of one raises in torch.
        tensors = [tensor for tensor in tensors if tensor.numel() > 0]
        if not tensors:
            continue
        if sync_free:
            partial = torch.stack(torch._foreach_norm(tensors, norm_type, dtype=torch.float64))
        else:
            partial = _cpu_partial_norms(tensors, norm_type)
        group_norm = torch.linalg.vector_norm(partial, norm_type)
        # As torch.nn.utils.clip_grad_norm_ does, each group's norm moves to the first gradient's device.
        group_norms.append(group_norm if group_norm.device == first_device else group_norm.to(first_device))
    if not group_norms:
        return torch.zeros((), dtype=torch.float64, device=first_device)
    if len(group_norms) == 1:
        return group_norms[0]
    return torch.linalg.vector_norm(torch.stack(group_norms), norm_type)


def _cpu_partial_norms(tensors: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    """Return float64 norms of parts of ``tensors``; their ``norm_type``-norm is the norm of all of them."""
    if norm_type == math.inf:
        # The smallest and largest values are exact in every dtype, and aminmax reads a
        # tensor several times faster than torch 2.13's CPU infinity-norm kernel.
        extremes = [value for tensor in tensors for value in torch.aminmax(tensor)]
        return torch.stack(extremes).to(torch.float64).abs()
    if norm_type == 2.0:
        return _l2_row_norms(tensors)
    return _block_norms(tensors, norm_type)


def _l2_row_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Return float64 L2 norms of rows of ``tensors``; their L2 norm is the norm of all of them.

    The row norms are written into one preallocated buffer, which saves an
    allocation per tensor and a concatenation.
    """
    parts: list[torch.Tensor] = []
    # Tensors of at most SHORT elements, and the tails of longer ones, go to one _foreach_norm call.
    short: list[torch.Tensor] = []
    long_tensors: list[torch.Tensor] = []
    rows = 0
    scratch = None
    for tensor in tensors:
        if tensor.dtype in _REDUCED:
            if scratch is None:
                scratch = torch.empty(BLOCK, dtype=torch.float32)
            for block in tensor.reshape(-1).split(BLOCK):
                values = scratch[: block.numel()]
                values.copy_(block)
                # These norms are computed now, before the next block overwrites the scratch buffer.
                parts.append(_rows_and_tail_norm(values))
        elif tensor.numel() <= SHORT:
            short.append(tensor)
        else:
            long_tensors.append(tensor)
            rows += tensor.numel() // ROW
    if long_tensors:
        dtype = long_tensors[0].dtype
        norms = torch.empty(rows, dtype=dtype)
        start = 0
        for tensor in long_tensors:
            count = tensor.numel()
            full = count // ROW
            # reshape returns a view of a contiguous tensor and copies any other.
            if full * ROW == count:
                rows_view = tensor.reshape(full, ROW)
            else:
                flat = tensor.reshape(-1)
                short.append(flat[full * ROW :])
                rows_view = flat[: full * ROW].view(full, ROW)
            torch.linalg.vector_norm(rows_view, dim=1, out=norms[start : start + full])
            start += full
        parts.append(norms)
    if short:
        # These tensors are short, so converting them to float64 costs little, and their
        # squares then neither overflow nor underflow.
        parts.append(torch.stack(torch._foreach_norm(short, dtype=torch.float64)))
    if len(parts) == 1:
        return parts[0].to(torch.float64)
    return torch.cat([part.to(torch.float64) for part in parts])


def _rows_and_tail_norm(flat: torch.Tensor) -> torch.Tensor:
    """Return the L2 norms of the full rows of a 1-d float32 tensor, followed by the norm of its tail."""
    full = flat.numel() - flat.numel() % ROW
    norms = [torch.linalg.vector_norm(flat[:full].view(-1, ROW), dim=1)] if full else []
    if full < flat.numel():
        norms.append(torch.linalg.vector_norm(flat[full:]).reshape(1))
    return torch.cat(norms)


def _block_norms(tensors: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    """Return the ``norm_type``-norm of each block of each tensor.

    Each block's |g|**p goes into a scratch buffer that stays in cache and is
    summed there by torch's pairwise float32 summation, which is both more
    accurate and, for p other than 1 and 2, many times faster than torch
    2.13's CPU p-norm kernel.
    """
    work_dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    scratch = torch.empty(BLOCK, dtype=work_dtype)
    sums = []
    for tensor in tensors:
        for block in tensor.reshape(-1).split(BLOCK):
            values = scratch[: block.numel()]
            if block.dtype == work_dtype:
                torch.abs(block, out=values)
            else:
                values.copy_(block)
                values.abs_()
            if norm_type != 1.0:
                values.pow_(norm_type)
            sums.append(values.sum())
    return torch.stack(sums).to(torch.float64) ** (1.0 / norm_type)


def _trusted(norm: torch.Tensor, norm_type: float, count: int) -> bool:
    """Tell whether a total from the CPU mode is finite and large enough that no underflow can matter.

    Terms |g|**p underflow float32 only for p > 1. Each loses at most
    2**-126, so a total whose p-th power exceeds count * 2**-86 is off by
    less than 2**-40 relative.
    """
    value = float(norm)
    if not math.isfinite(value):
        return False
    if norm_type <= 1.0 or norm_type == math.inf or count == 0:
        return True
    if value == 0.0:
        return False
    return norm_type * math.log2(value) >= math.log2(count) + _UNDERFLOW_MARGIN_LOG2


def _scale_(groups: Groups, scale: float) -> None:
    # A 0-d tensor, because torch multiplies float16 and bfloat16 tensors by a Python number
    # in their own dtype, and a Python number took longer in _foreach_mul_ on small tensors.
    for (_, dtype), tensors in groups.items():
        torch._foreach_mul_(tensors, torch.tensor(scale, dtype=_product_dtype(dtype)))


def _scale_sync_free_(groups: Groups, scale: torch.Tensor, finite: torch.Tensor, *, zero_nonfinite: bool) -> None:
    nonfinite = ~finite
    for (device, dtype), tensors in groups.items():
        torch._foreach_mul_(tensors, scale.to(device=device, dtype=_product_dtype(dtype)))
        if zero_nonfinite:
            # The scale is 0 on a non-finite step, and inf * 0 is NaN, so those entries are
            # zeroed here without reading the flag on the host.
            # NOTE: this costs one more pass over the gradients on every accelerator step
            # under the "skip" policy.
            nonfinite_on_device = nonfinite.to(device)
            for tensor in tensors:
                tensor.masked_fill_(nonfinite_on_device, 0.0)


def _product_dtype(dtype: torch.dtype) -> torch.dtype:
    # As the core's apply_factors: float16 and bfloat16 gradients are multiplied in float32.
    return torch.float64 if dtype == torch.float64 else torch.float32
