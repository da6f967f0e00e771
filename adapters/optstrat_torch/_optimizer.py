"""``ClippedOptimizer``: a torch optimizer wrapper that clips, steps and advances the schedules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from optstrat import from_config
from optstrat._validate import check_int
from optstrat.clipping import ClipInfo, Clipper, NonFiniteGradientError
from optstrat_torch._clipping import clip_

__all__ = ["ClippedOptimizer"]

_STATE_KEYS = ("optimizer", "clipper", "clipper_state", "schedulers", "grad_scaler", "applied_steps", "skipped_steps")


class ClippedOptimizer:
    """Wrap a torch optimizer so that each ``step()`` clips the gradients, steps and advances the schedules.

    ``step(closure=None)`` does, in order:

    1. calls ``closure`` once, with gradients enabled, if one is given (it
       computes the loss and calls ``backward``, as for any torch optimizer);
    2. with an enabled ``grad_scaler``, calls ``grad_scaler.unscale_(optimizer)``,
       so the clipper measures the true gradients;
    3. clips the gradients of every parameter group with ``clipper`` through
       :func:`optstrat_torch.clip_`, keeping a stateful clipper's state here;
    4. skips the update when the gradients are not finite and the clipper's
       policy is ``nonfinite="skip"`` (the default) or a ``grad_scaler`` is
       enabled, which skips such steps too. A skipped update calls neither
       ``optimizer.step()`` nor the schedulers' ``step()``, so parameters,
       optimizer moments and learning rates stay as they were, and it adds 1
       to :attr:`skipped_steps`. Otherwise it calls ``optimizer.step()``
       (``grad_scaler.step(optimizer)`` with a scaler), then each scheduler's
       ``step()``, and adds 1 to :attr:`applied_steps`;
    5. calls ``grad_scaler.update()``, which lowers the scale after an
       overflow.

    It returns the closure's loss, or None. With ``nonfinite="error"`` a
    non-finite gradient raises :class:`optstrat.clipping.NonFiniteGradientError`
    before anything is changed (the scaler is still updated, so the next step
    can run). With ``nonfinite="propagate"`` and no scaler the update is
    applied as it is.

    Args:
        optimizer: the ``torch.optim.Optimizer`` to wrap.
        clipper: any optstrat clipper, such as ``ClipByGlobalNorm(max_norm=1.0)``.
            ``ClipByGlobalNorm`` on plain CPU or CUDA tensors takes the
            ``torch._foreach_*`` fast path.
        scheduler: None, one ``torch.optim.lr_scheduler.LRScheduler`` (such as
            :class:`optstrat_torch.ScheduleLR`) or a list of them, each built
            on ``optimizer``. ``ReduceLROnPlateau`` needs a metric and is
            rejected; step it yourself.
        grad_scaler: None or a ``torch.amp.GradScaler`` for mixed precision.
            Call ``grad_scaler.scale(loss).backward()`` and then only
            ``step()``: the wrapper unscales, steps and updates the scaler, so
            do not call ``unscale_`` yourself before it.

    Deciding to skip reads one flag on the host, a device synchronization per
    step on an accelerator, as ``GradScaler.step`` makes. With
    ``nonfinite="propagate"`` and no scaler nothing is read.

    :attr:`last_clip_info` is the :class:`optstrat.ClipInfo` of the latest
    ``step()``, for logging. Its fields are 0-d tensors: the pre-clip L2 norm,
    the scale, finiteness and whether anything was clipped. It is None before
    the first step and after :meth:`load_state_dict`. ``param_groups``, ``state``,
    ``defaults``, ``zero_grad`` and ``add_param_group`` pass through to the
    optimizer. The wrapper is not a ``torch.optim.Optimizer`` subclass: build
    schedulers on ``optimizer`` itself.

    ``state_dict()`` contains the optimizer's state dict, the clipper's config
    and state, each scheduler's state dict, the scaler's state dict and the
    step counters, as plain types and tensors, so it loads with
    ``torch.load(..., weights_only=True)``; ``load_state_dict()`` resumes
    exactly.

    >>> import torch
    >>> from optstrat_torch import ClippedOptimizer, ScheduleLR
    >>> model = torch.nn.Linear(2, 1)
    >>> sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> optimizer = ClippedOptimizer(
    ...     sgd, ClipByGlobalNorm(max_norm=1.0), scheduler=ScheduleLR(sgd, Constant(value=0.1))
    ... )
    >>> model(torch.ones(1, 2)).sum().mul(100.0).backward()
    >>> optimizer.step()
    >>> round(float(optimizer.last_clip_info.norm), 2), optimizer.applied_steps
    (173.21, 1)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        clipper: Clipper,
        *,
        scheduler: LRScheduler | Sequence[LRScheduler] | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {optimizer!r} ({type(optimizer).__name__})"
            )
        if not isinstance(clipper, Clipper):
            raise TypeError(
                f"clipper must be an optstrat clipper such as ClipByGlobalNorm(max_norm=1.0), "
                f"got {clipper!r} ({type(clipper).__name__})"
            )
        if grad_scaler is not None and not isinstance(grad_scaler, torch.amp.GradScaler):
            raise TypeError(
                f"grad_scaler must be None or a torch.amp.GradScaler, got {grad_scaler!r} "
                f"({type(grad_scaler).__name__})"
            )
        self.optimizer = optimizer
        self.clipper = clipper
        self.schedulers: tuple[LRScheduler, ...] = _schedulers_of(scheduler, optimizer)
        self.grad_scaler = grad_scaler
        # The parameters stand in for the gradients: init reads only their dtypes and devices.
        self.clipper_state: Any = clipper.init([param.detach() for param in self._params()])
        self.last_clip_info: ClipInfo | None = None
        self.applied_steps = 0
        self.skipped_steps = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        """The wrapped optimizer's per-parameter state, such as Adam's moments."""
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        """The wrapped optimizer's default hyperparameters."""
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters, as ``optimizer.zero_grad`` does."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the wrapped optimizer."""
        self.optimizer.add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Clip the gradients, then step the optimizer and the schedulers, or skip the whole update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scaler = self.grad_scaler if self.grad_scaler is not None and self.grad_scaler.is_enabled() else None
        if scaler is not None:
            scaler.unscale_(self.optimizer)

        try:
            self.clipper_state, info = clip_(self._params(), self.clipper, self.clipper_state)
        except NonFiniteGradientError:
            if scaler is not None:
                scaler.update()
            raise
        self.last_clip_info = info

        can_skip = self.clipper.nonfinite == "skip" or scaler is not None
        if can_skip and not bool(info.finite):
            self.skipped_steps += 1
        else:
            if scaler is not None:
                scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            for scheduler in self.schedulers:
                scheduler.step()
            self.applied_steps += 1
        if scaler is not None:
            scaler.update()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Return the optimizer, clipper, scheduler and scaler states and the step counters."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "clipper": self.clipper.to_config(),
            "clipper_state": {name: _copy(value) for name, value in zip(self.clipper_state._fields, self.clipper_state)},
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "grad_scaler": None if self.grad_scaler is None else self.grad_scaler.state_dict(),
            "applied_steps": self.applied_steps,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`.

        Raises ValueError, before anything is changed, when the state was not
        written by ``ClippedOptimizer.state_dict`` or was written with another
        clipper, another number of schedulers, or with a scaler where this
        wrapper has none (or the reverse). The optimizer's and schedulers' own
        ``load_state_dict`` then check their parts.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a dict from ClippedOptimizer.state_dict(), got {type(state_dict).__name__}"
            )
        missing = [key for key in _STATE_KEYS if key not in state_dict]
        if missing:
            raise ValueError(
                f"state_dict is missing {', '.join(repr(key) for key in missing)}; "
                "load a state written by ClippedOptimizer.state_dict()"
            )
        self._check_same_clipper(state_dict["clipper"])
        clipper_state = self._clipper_state_from(state_dict["clipper_state"])
        scheduler_states = list(state_dict["schedulers"])
        if len(scheduler_states) != len(self.schedulers):
            raise ValueError(
                f"the saved state has {len(scheduler_states)} schedulers but this wrapper has "
                f"{len(self.schedulers)}; build it with the same schedulers to resume"
            )
        scaler_state = state_dict["grad_scaler"]
        if (scaler_state is None) != (self.grad_scaler is None):
            saved = "no grad_scaler" if scaler_state is None else "a grad_scaler"
            current = "none" if self.grad_scaler is None else "one"
            raise ValueError(
                f"the saved state has {saved} but this wrapper has {current}; "
                "pass the same kind of grad_scaler argument to resume"
            )
        applied_steps = check_int("state_dict['applied_steps']", state_dict["applied_steps"], low=0)
        skipped_steps = check_int("state_dict['skipped_steps']", state_dict["skipped_steps"], low=0)

        self.optimizer.load_state_dict(state_dict["optimizer"])
        for scheduler, scheduler_state in zip(self.schedulers, scheduler_states):
            scheduler.load_state_dict(scheduler_state)
        if self.grad_scaler is not None:
            self.grad_scaler.load_state_dict(scaler_state)
        self.clipper_state = clipper_state
        self.applied_steps = applied_steps
        self.skipped_steps = skipped_steps
        self.last_clip_info = None

    def __repr__(self) -> str:
        return f"ClippedOptimizer({self.optimizer!r}, {self.clipper!r})"

    def _params(self) -> list[torch.Tensor]:
        return [param for group in self.optimizer.param_groups for param in group["params"]]

    def _check_same_clipper(self, saved_config: Any) -> None:
        try:
            saved = from_config(saved_config)
        except (TypeError, ValueError) as error:
            raise ValueError(f"state_dict['clipper'] is not a valid clipper config: {error}") from error
        if saved != self.clipper:
            raise ValueError(
                f"the saved clipper {saved_config!r} differs from this wrapper's {self.clipper.to_config()!r}; "
                "build the wrapper with the saved clipper to resume, for example "
                "optstrat.from_config(state_dict['clipper'])"
            )

    def _clipper_state_from(self, saved: Any) -> Any:
        """Return the saved clipper state as this wrapper's state type, with its dtypes and devices."""
        template = self.clipper_state
        if not isinstance(saved, Mapping) or sorted(saved) != sorted(template._fields):
            raise ValueError(
                f"state_dict['clipper_state'] must be a dict with the fields {list(template._fields)} "
                f"of {type(template).__name__}, got {saved!r}"
            )
        values = {}
        for name, current in zip(template._fields, template):
            value = torch.as_tensor(saved[name])
            if tuple(value.shape) != tuple(current.shape):
                raise ValueError(
                    f"state_dict['clipper_state'][{name!r}] has shape {tuple(value.shape)} but this clipper "
                    f"needs {tuple(current.shape)}"
                )
            values[name] = value.to(device=current.device, dtype=current.dtype)
        return type(template)(**values)


def _schedulers_of(scheduler: Any, optimizer: torch.optim.Optimizer) -> tuple[LRScheduler, ...]:
    if scheduler is None:
        return ()
    schedulers = list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler]
    for index, item in enumerate(schedulers):
        name = "scheduler" if not isinstance(scheduler, (list, tuple)) else f"scheduler[{index}]"
        if isinstance(item, ReduceLROnPlateau):
            raise TypeError(
                f"{name} is a ReduceLROnPlateau, whose step() needs a metric; "
                "call its step(metric) yourself after validation instead"
            )
        if not isinstance(item, LRScheduler):
            raise TypeError(
                f"{name} must be a torch.optim.lr_scheduler.LRScheduler such as optstrat_torch.ScheduleLR, "
                f"got {item!r} ({type(item).__name__})"
            )
        if item.optimizer is not optimizer:
            raise ValueError(f"{name} must be built on the wrapped optimizer, but it drives another optimizer")
    return tuple(schedulers)


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value
