"""``ScheduleLR``: a PyTorch learning-rate scheduler driven by optstrat schedules in closed form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from optstrat import from_config
from optstrat._validate import check_bool, check_int
from optstrat.schedules import Schedule

__all__ = ["ScheduleLR"]


class ScheduleLR(LRScheduler):
    """Set each parameter group's learning rate to an optstrat schedule evaluated at the step count.

    After construction ``lr = schedule(0)``, and after ``k`` calls of
    :meth:`step` ``lr = schedule(k)``. Each value is computed from the step
    count alone (closed form), so there is no recursion on the previous value,
    no drift, and a value written into ``param_groups`` by someone else is
    overwritten at the next step. With ``relative=True`` the value is a factor:
    ``lr = initial_lr * schedule(k)``, where ``initial_lr`` is the group's
    learning rate when the scheduler was built (as every torch scheduler uses
    it). The loop is torch's usual one: ``optimizer.step()``, then
    ``scheduler.step()``.

    Args:
        optimizer: the ``torch.optim.Optimizer`` whose ``param_groups`` are set.
        schedule: one :class:`optstrat.Schedule` for every group, or a list or
            tuple with one schedule per parameter group, in the same order.
        relative: if True, each group's learning rate is its ``initial_lr``
            times the schedule's value. If False (the default), the schedule's
            value is the learning rate itself and replaces the optimizer's ``lr``.
        last_epoch: as in torch, the index of the last step taken, for
            resuming without a state dict. The default -1 starts at
            ``schedule(0)``. A value ``n >= 0`` needs ``initial_lr`` in each
            group in relative mode, and starts at ``schedule(n + 1)`` because
            the constructor takes one step, as every torch scheduler does.

    A group whose ``lr`` is a tensor (torch's way to avoid recompiling a
    compiled ``optimizer.step`` when the learning rate changes) is written in
    place with ``fill_``, so the tensor object stays the same.

    ``state_dict()`` contains the step count, the base learning rates and each
    schedule's ``to_config()`` dict. These are plain Python types and tensors,
    with no pickled functions, so the state loads with
    ``torch.load(..., weights_only=True)``. ``load_state_dict()`` resumes
    exactly: after ``k`` saved steps the groups get ``schedule(k)`` at once,
    then ``schedule(k + 1)`` at the next step, and so on. The schedules given
    to the constructor are the ones used, and loading a state whose schedules
    or ``relative`` flag differ from them raises ValueError, so a changed
    schedule is never resumed silently at the old step count. To resume a run
    as it was, build the scheduler with the saved schedules, for example
    ``optstrat.from_config(state["schedules"][0])``.

    With ``relative=True`` the values equal those of
    ``torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)``, but
    the state dict stores schedule configs, where LambdaLR stores the
    attributes of callable objects and drops plain functions. It offers what
    PyTorch Lightning and the Hugging Face ``Trainer`` use of a scheduler:
    ``step()``, ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``,
    ``optimizer`` and ``last_epoch``.

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> scheduler = ScheduleLR(optimizer, CosineDecay(init_value=1.0, decay_steps=4, end_value=0.1))
    >>> scheduler.get_last_lr()
    [1.0]
    >>> for _ in range(2):
    ...     optimizer.step()
    ...     scheduler.step()
    >>> round(optimizer.param_groups[0]["lr"], 6)
    0.55
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule | Sequence[Schedule],
        *,
        relative: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {optimizer!r} ({type(optimizer).__name__})"
            )
        self.schedules: tuple[Schedule, ...] = _schedules_per_group(schedule, len(optimizer.param_groups))
        self.relative: bool = check_bool("relative", relative)
        last_epoch = check_int("last_epoch", last_epoch, low=-1)

        if not self.relative:
            # An absolute schedule does not read initial_lr, so resuming with last_epoch >= 0
            # needs no earlier scheduler to have set it.
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _copy_lr(group["lr"]))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        """Return each group's learning rate at step ``last_epoch``, computed in closed form."""
        return self._values_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        # torch's deprecated step(epoch) calls this after setting last_epoch.
        return self._values_at(self.last_epoch)

    def _values_at(self, step: int) -> list[float | torch.Tensor]:
        values = [schedule(step) for schedule in self.schedules]
        if not self.relative:
            return values
        return [base_lr * value for base_lr, value in zip(self.base_lrs, values)]

    def state_dict(self) -> dict[str, Any]:
        """Return the scheduler's state: the step count, the base learning rates and the schedule configs."""
        return {
            "schedules": [schedule.to_config() for schedule in self.schedules],
            "relative": self.relative,
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "base_lrs": [_copy_lr(base_lr) for base_lr in self.base_lrs],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` and set each group's ``lr`` to its value at the restored step.

        Raises ValueError when the saved schedules or ``relative`` flag differ
        from this scheduler's, or when the state was not written by
        ``ScheduleLR.state_dict``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a dict from ScheduleLR.state_dict(), got {type(state_dict).__name__}"
            )
        missing = [key for key in ("schedules", "relative", "last_epoch", "base_lrs") if key not in state_dict]
        if missing:
            raise ValueError(
                f"state_dict is missing {', '.join(repr(key) for key in missing)}; "
                "load a state written by ScheduleLR.state_dict()"
            )
        self._check_same_schedules(state_dict["schedules"])
        if state_dict["relative"] != self.relative:
            raise ValueError(
                f"the saved state has relative={state_dict['relative']!r} but this scheduler has "
                f"relative={self.relative!r}; build the scheduler with relative={state_dict['relative']!r} to resume"
            )
        last_epoch = check_int("state_dict['last_epoch']", state_dict["last_epoch"], low=0)
        base_lrs = list(state_dict["base_lrs"])
        if len(base_lrs) != len(self.schedules):
            raise ValueError(
                f"state_dict['base_lrs'] has {len(base_lrs)} values but the optimizer has "
                f"{len(self.schedules)} parameter groups"
            )

        self.last_epoch = last_epoch
        self._step_count = check_int("state_dict['_step_count']", state_dict.get("_step_count", 1), low=0)
        self.base_lrs = [_copy_lr(base_lr) for base_lr in base_lrs]
        self._write_lrs(self._values_at(self.last_epoch))

    def _check_same_schedules(self, saved_configs: Any) -> None:
        if isinstance(saved_configs, (str, bytes, Mapping)) or not isinstance(saved_configs, Sequence):
            raise ValueError(f"state_dict['schedules'] must be a list of schedule configs, got {saved_configs!r}")
        if len(saved_configs) != len(self.schedules):
            raise ValueError(
                f"the saved state has {len(saved_configs)} schedules but this scheduler has "
                f"{len(self.schedules)}, one per parameter group"
            )
        for index, (saved_config, schedule) in enumerate(zip(saved_configs, self.schedules)):
            try:
                saved = from_config(saved_config)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"state_dict['schedules'][{index}] is not a valid schedule config: {error}"
                ) from error
            if saved != schedule:
                raise ValueError(
                    f"the saved schedule of parameter group {index} differs from this scheduler's: saved "
                    f"{saved_config!r}, given {schedule.to_config()!r}. The constructor's schedule is used, "
                    "so build the scheduler with the saved schedule to resume that run, or start a new "
                    "scheduler without loading the state to change the schedule"
                )

    def _write_lrs(self, values: list[float | torch.Tensor]) -> None:
        for group, value in zip(self.optimizer.param_groups, values):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        self._last_lr = [_copy_lr(group["lr"]) for group in self.optimizer.param_groups]


def _schedules_per_group(schedule: Any, group_count: int) -> tuple[Schedule, ...]:
    if isinstance(schedule, Schedule):
        return (schedule,) * group_count
    if not isinstance(schedule, (list, tuple)):
        raise TypeError(_not_a_schedule_message("schedule", schedule))
    if len(schedule) != group_count:
        raise ValueError(
            f"schedule must be one schedule or a list with one per parameter group: the optimizer has "
            f"{group_count} parameter groups, got a list of {len(schedule)}"
        )
    for index, item in enumerate(schedule):
        if not isinstance(item, Schedule):
            raise TypeError(_not_a_schedule_message(f"schedule[{index}]", item))
    return tuple(schedule)


def _not_a_schedule_message(name: str, value: Any) -> str:
    message = f"{name} must be an optstrat Schedule, got {value!r} ({type(value).__name__})"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{message}; use optstrat.Constant(value={value!r}) for a fixed learning rate"
    if isinstance(value, (Mapping, str)):
        return f"{message}; build it with optstrat.from_config or optstrat.from_spec first"
    if callable(value):
        return f"{message}; use torch.optim.lr_scheduler.LambdaLR for a plain function"
    return message


def _copy_lr(value: float | torch.Tensor) -> float | torch.Tensor:
    # A tensor is cloned so that the copy never aliases the optimizer's lr tensor.
    return value.clone() if isinstance(value, torch.Tensor) else value
