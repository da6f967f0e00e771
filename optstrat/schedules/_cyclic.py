"""Schedules that cycle: cosine with warm restarts, one-cycle and triangular cycles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import array_api_compat

from optstrat import _xp
from optstrat._validate import check_bool, check_choice, check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray
from optstrat.schedules._cosine import cosine_weight, cosine_weight_left, steps_until
from optstrat.schedules._simple import power

__all__ = ["CosineRestarts", "Cyclic", "OneCycle"]

# Cycle starts are listed up to the largest int64 step, so every int64 step finds its cycle.
_LARGEST_LISTED_STEP = 2**63 - 1
# Each listed cycle costs a few elementwise operations per call, so their number is capped.
_MAX_CYCLES = 1024
# power() returns exactly 0 once base ** count is below exp(-_VANISHED_EXPONENT) (a limit of
# 800 in float64, less in float32), and Python's float ** int underflows to 0 below exp(-745).
_VANISHED_EXPONENT = 1000.0


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _steps_since(step: StepArray, start: float) -> Any:
    """Return ``count - start`` in the floating dtype for a real ``start``, on integers first when ``start >= 0``."""
    whole = math.floor(start)
    if whole < 0:
        return step.as_float(step.count) - start
    return -steps_until(step, step.count, whole) - (start - whole)


def _vanishing_count(base: float) -> int:
    """Return the smallest count from which ``base ** count`` is exactly 0 in float64 and float32."""
    return math.floor(_VANISHED_EXPONENT / -math.log(base)) + 1


class _Cycle(NamedTuple):
    """One cosine cycle of :class:`CosineRestarts` when ``period_mult > 1``.

    ``start`` is the first integer step of the cycle, ceil(S) for the exact real
    start S, and ``offset`` is ``start - S``, in [0, 1). ``length`` is the real
    length ``first_period * period_mult ** index`` and ``amplitude`` is
    ``value_mult ** index``.
    """

    start: int
    offset: float
    length: float
    amplitude: float


def _list_cycles(first_period: int, period_mult: float, value_mult: float) -> tuple[_Cycle, ...] | None:
    """Return the cycles whose start is at most 2**63 - 1, then the first one past it.

    The real starts S(k) = first_period * (period_mult ** k - 1) / (period_mult - 1)
    are summed exactly on integers: ``period_mult`` is a binary fraction
    ``numerator / 2**shift``, so S(k) = total / 2**(shift * k) with an integer
    ``total``. Returns None when more than ``_MAX_CYCLES`` cycles would be listed.
    """
    numerator, denominator = period_mult.as_integer_ratio()
    shift = denominator.bit_length() - 1
    # S(k) = total / 2**(shift * k) and length(k) = first_period * growth / 2**(shift * k).
    total = 0
    growth = 1
    cycles = []
    for index in range(_MAX_CYCLES + 1):
        scale_bits = shift * index
        start = -((-total) >> scale_bits)
        offset = ((start << scale_bits) - total) / (1 << scale_bits)
        length = first_period * growth / (1 << scale_bits)
        cycles.append(_Cycle(start, offset, length, value_mult**index))
        if start > _LARGEST_LISTED_STEP:
            return tuple(cycles)
        # S(k + 1) = S(k) + length(k), written over the next denominator 2**(shift * (k + 1)).
        total = (total + first_period * growth) << shift
        growth *= numerator
    return None


@register("cosine_restarts")
@dataclass(frozen=True)
class CosineRestarts(Schedule):
    """Cosine decay from a peak to ``end_value`` that restarts, with cycles and peaks scaled each time.

    Cycle i (i = 0, 1, ...) lasts L(i) = first_period * period_mult ** i steps
    and starts at S(i) = L(0) + ... + L(i - 1). For S(i) <= t < S(i + 1), with
    f = (t - S(i)) / L(i):

    value(t) = end_value + (init_value - end_value) * value_mult ** i * (1 + cos(pi * f)) / 2

    So each cycle starts at ``end_value + (init_value - end_value) *
    value_mult ** i`` and decays towards ``end_value``, which it reaches only
    in the limit. A non-integer ``period_mult`` gives real cycle lengths and
    starts, as in Keras: the first step of cycle i is ceil(S(i)), where f is
    already positive. The cycle index is found by comparing the integer step
    with the integer cycle starts, never with a logarithm, so it is exact at
    every restart.

    Constraints: ``first_period >= 1``; ``period_mult >= 1``;
    ``0 <= value_mult <= 1``. With ``period_mult > 1`` the start of every
    cycle that begins below 2**63 is listed when the schedule is built. At most
    1024 such cycles are allowed, so ``period_mult >= 1.05`` always qualifies
    and a value closer to 1 needs a longer ``first_period``. Each listed cycle
    that the step's dtype can reach costs a few elementwise operations per
    call, except on NumPy input, where only the cycles containing a step count.

    Reproduces ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=first_period,
    T_mult=period_mult, eta_min=end_value)`` for an integer ``period_mult`` and
    ``value_mult=1``, relative to the optimizer's learning rate ``init_value``;
    and ``keras.optimizers.schedules.CosineDecayRestarts(initial_learning_rate=init_value,
    first_decay_steps=first_period, t_mul=period_mult, m_mul=value_mult,
    alpha=end_value / init_value)`` for any ``period_mult``. Keras finds the
    cycle with a float32 logarithm, so next to a restart it may pick the
    neighbouring cycle. ``optax.sgdr_schedule`` gives the same cycles when each
    is a ``warmup_cosine_decay_schedule`` with ``warmup_steps=0``.

    >>> schedule = CosineRestarts(init_value=1.0, first_period=3, period_mult=2.0)
    >>> [round(schedule(t), 6) for t in range(10)]
    [1.0, 0.75, 0.25, 1.0, 0.933013, 0.75, 0.5, 0.25, 0.066987, 1.0]
    """

    init_value: float
    first_period: int
    period_mult: float = 1.0
    value_mult: float = 1.0
    end_value: float = 0.0
    _cycles: tuple[_Cycle, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "first_period", check_int("first_period", self.first_period, low=1))
        _set(self, "period_mult", check_number("period_mult", self.period_mult, low=1.0))
        _set(self, "value_mult", check_number("value_mult", self.value_mult, low=0.0, high=1.0))
        _set(self, "end_value", check_number("end_value", self.end_value))
        cycles: tuple[_Cycle, ...] | None = ()
        if self.period_mult > 1.0:
            cycles = _list_cycles(self.first_period, self.period_mult, self.value_mult)
        if cycles is None:
            raise ValueError(
                f"period_mult must be 1 or large enough that at most {_MAX_CYCLES} cycles start below 2**63, "
                f"got period_mult={self.period_mult!r} with first_period={self.first_period!r}; "
                "use period_mult=1, a larger period_mult or a longer first_period"
            )
        _set(self, "_cycles", cycles)

    def _evaluate(self, step: StepArray) -> Any:
        if self.period_mult == 1.0:
            cycle, position = step.divmod(self.first_period)
            weight = cosine_weight(step, position, self.first_period)
            amplitude = None
            if self.value_mult != 1.0:
                amplitude = power(step, self.value_mult, [(cycle, 1.0)])
        else:
            weight, amplitude = self._growing_cycle_weight(step)

        if amplitude is not None:
            weight = amplitude * weight
        return self.end_value + (self.init_value - self.end_value) * weight

    def _growing_cycle_weight(self, step: StepArray) -> tuple[Any, Any]:
        """Return the cosine weight and the cycle's amplitude when ``period_mult > 1``.

        The cycle is selected with one comparison per listed cycle start that the
        count's dtype can represent. Within it, the distance to the next start is
        (next start - t) on integers minus the next start's offset. A start
        beyond the dtype's maximum is split so that no integer overflows.
        """
        xp, count = step.xp, step.count
        largest = int(xp.iinfo(count.dtype).max) if step.is_integer else _LARGEST_LISTED_STEP
        lowest, highest = 0, largest
        if array_api_compat.is_numpy_namespace(xp) and count.size > 0:
            # NumPy runs eagerly, so the range of the steps can skip the cycles that
            # contain none of them (a Python int is in one cycle). The values are the same.
            lowest = math.floor(xp.min(count))
            highest = min(math.ceil(xp.max(count)), largest)

        # For each cycle that contains a step: the cycle, and its real end S as (near - t) + extra.
        reached = []
        last_listed = len(self._cycles) - 2
        for index, (cycle, following) in enumerate(zip(self._cycles, self._cycles[1:])):
            if cycle.start > highest:
                break
            if following.start <= lowest and index < last_listed:
                continue
            near = min(following.start, largest)
            extra = float(following.start - near) - following.offset
            reached.append((cycle, near, extra))
        scaled = self.value_mult != 1.0

        def in_count_dtype(value: int) -> Any:
            return _xp.scalar(xp, value, count.dtype, step.device)

        first, near, extra = reached[0]
        ends = in_count_dtype(near)
        extras = step.as_float(extra)
        lengths = step.as_float(first.length)
        amplitudes = step.as_float(first.amplitude)
        previous_extra = extra
        for cycle, near, extra in reached[1:]:
            inside = count >= in_count_dtype(cycle.start)
            ends = xp.where(inside, in_count_dtype(near), ends)
            lengths = xp.where(inside, step.as_float(cycle.length), lengths)
            # Every step inside this cycle was inside the previous one, so an unchanged
            # extra (0 for all but the last cycle when period_mult is an integer) needs no update.
            if extra != previous_extra:
                extras = xp.where(inside, step.as_float(extra), extras)
                previous_extra = extra
            if scaled:
                amplitudes = xp.where(inside, step.as_float(cycle.amplitude), amplitudes)

        # NOTE: a floating-point step past the last listed cycle (beyond 2**63) gets a
        # negative distance, clamped to 0, so it takes the value at that cycle's end.
        remaining = xp.maximum(step.as_float(ends - count) + extras, step.as_float(0.0))
        weight = cosine_weight_left(step, remaining / lengths)
        return weight, (amplitudes if scaled else None)

    def _cycle_start(self, index: int) -> int | None:
        if self.period_mult == 1.0:
            return index * self.first_period
        if index < len(self._cycles) - 1:
            return self._cycles[index].start
        return None

    def _horizon(self) -> int | None:
        if self.init_value == self.end_value:
            return 0
        if self.value_mult == 1.0:
            return None
        if self.value_mult == 0.0:
            return self._cycle_start(1)
        return self._cycle_start(_vanishing_count(self.value_mult))

    def _reduce_large_step(self, step: int, horizon: int | None) -> int | float:
        if horizon is None and self.period_mult == 1.0:
            # Equal cycles and no decay of the peaks repeat every first_period steps,
            # so a step too large for int64 reduces exactly.
            step %= self.first_period
        return super()._reduce_large_step(step, horizon)


class _Phase(NamedTuple):
    """One phase of :class:`OneCycle`: from ``start_value`` at ``start`` to ``end_value`` at ``end``.

    ``start`` and ``end`` are real steps: ``start`` is the previous phase's end
    (0 for the first phase) and ``length = end - start``. ``first_step_after``
    is floor(end) + 1, the first integer step past the phase.
    """

    start: float
    end: float
    length: float
    first_step_after: int
    start_value: float
    end_value: float


@register("one_cycle")
@dataclass(frozen=True)
class OneCycle(Schedule):
    """The one-cycle policy: anneal up to ``max_value``, then down far below the start, then hold.

    With T = ``total_steps``, p = ``pct_start``, initial = max_value / div_factor
    and minimum = initial / final_div_factor, the phases end at the real steps

    - two phases: e1 = p * T - 1 (initial to max_value), e2 = T - 1 (max_value to minimum);
    - three phases: e1 = p * T - 1 (initial to max_value), e2 = 2 * p * T - 2
      (max_value to initial), e3 = T - 1 (initial to minimum).

    Step t belongs to the first phase whose end is >= t, the last phase if
    none. In a phase from a to b that runs from the step s (0 for the first
    phase, else the previous phase's end) to its end e, with q = (t - s) / (e - s):
    value(t) = b + (a - b) * (1 + cos(pi * q)) / 2 for ``anneal="cos"`` and
    a + (b - a) * q for ``anneal="linear"``. From t = T - 1 on, the value is
    held at minimum.

    Constraints: ``total_steps >= 1``; ``0 <= pct_start <= 1``;
    ``div_factor > 0``; ``final_div_factor > 0``; ``anneal`` is "cos" or
    "linear". A phase of length 0 that contains a step gives its end value: with
    p * T = 1 step 0 is max_value, where torch divides by zero.

    Reproduces ``torch.optim.lr_scheduler.OneCycleLR(max_lr=max_value,
    total_steps, pct_start, anneal_strategy=anneal, div_factor,
    final_div_factor, three_phase)`` for t <= T - 1; torch extrapolates at
    t = T and raises after it. ``optax.cosine_onecycle_schedule(T, max_value,
    pct_start, div_factor, final_div_factor)`` puts its knots at 0, floor(p * T)
    and T. With the same arguments its end comes one step later than here. So
    does its peak when p * T is an integer, and its warmup is then one step
    longer. It equals this schedule when called with ``transition_steps=T - 1``
    and a ``pct_start`` that puts floor(pct_start * (T - 1)) at p * T - 1 (an
    integer).
    ``optax.linear_onecycle_schedule`` matches ``anneal="linear",
    three_phase=True`` the same way, with ``pct_final`` for e2.

    >>> schedule = OneCycle(max_value=1.0, total_steps=10)
    >>> [round(schedule(t), 6) for t in range(11)]
    [0.04, 0.52, 1.0, 0.950485, 0.811746, 0.611262, 0.388742, 0.188258, 0.049519, 4e-06, 4e-06]
    """

    max_value: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    three_phase: bool = False
    _phases: tuple[_Phase, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "max_value", check_number("max_value", self.max_value))
        _set(self, "total_steps", check_int("total_steps", self.total_steps, low=1))
        _set(self, "pct_start", check_number("pct_start", self.pct_start, low=0.0, high=1.0))
        _set(self, "div_factor", check_number("div_factor", self.div_factor, low=0.0, low_inclusive=False))
        _set(
            self,
            "final_div_factor",
            check_number("final_div_factor", self.final_div_factor, low=0.0, low_inclusive=False),
        )
        _set(self, "anneal", check_choice("anneal", self.anneal, ("cos", "linear")))
        _set(self, "three_phase", check_bool("three_phase", self.three_phase))
        _set(self, "_phases", self._build_phases())

    def _build_phases(self) -> tuple[_Phase, ...]:
        initial = self.max_value / self.div_factor
        minimum = initial / self.final_div_factor
        # The same float64 expressions as torch, so the phase ends round alike.
        peak = float(self.pct_start * self.total_steps) - 1
        last = float(self.total_steps - 1)
        if self.three_phase:
            ends = [peak, float(2 * self.pct_start * self.total_steps) - 2, last]
            levels = [(initial, self.max_value), (self.max_value, initial), (initial, minimum)]
        else:
            ends = [peak, last]
            levels = [(initial, self.max_value), (self.max_value, minimum)]

        phases = []
        start = 0.0
        for end, (start_value, end_value) in zip(ends, levels):
            phases.append(_Phase(start, end, end - start, math.floor(end) + 1, start_value, end_value))
            start = end
        return tuple(phases)

    def _evaluate(self, step: StepArray) -> Any:
        step = StepArray(step.clamp(high=self.total_steps - 1), step.xp, step.dtype, step.device)

        value = self._phase_value(step, self._phases[-1])
        for phase in reversed(self._phases[:-1]):
            if phase.first_step_after <= 0:
                continue
            value = step.xp.where(step.ge(phase.first_step_after), value, self._phase_value(step, phase))
        return value

    def _phase_value(self, step: StepArray, phase: _Phase) -> Any:
        """Return the phase's formula at every step, anchored at the nearer end of the phase.

        Starting from the nearer end keeps the float32 value within a few
        rounding errors of float64 on a rising phase too, where
        end + (start - end) * weight cancels near the start.
        """
        if phase.length <= 0.0:
            # A phase of length 0 contains at most the step at its end, and a negative one none.
            return step.constant(phase.end_value)
        done = _steps_since(step, phase.start) / phase.length
        whole = math.floor(phase.end)
        left = (steps_until(step, step.count, whole) + (phase.end - whole)) / phase.length
        if self.anneal == "cos":
            # sin(pi * x / 2) ** 2 is 1 - (1 + cos(pi * x)) / 2, the cosine's progress after x.
            done_weight, left_weight = cosine_weight_left(step, done), cosine_weight_left(step, left)
        else:
            done_weight, left_weight = done, left
        early = phase.start_value + (phase.end_value - phase.start_value) * done_weight
        late = phase.end_value + (phase.start_value - phase.end_value) * left_weight
        return step.xp.where(done <= left, early, late)

    def _horizon(self) -> int | None:
        return self.total_steps - 1


@register("cyclic")
@dataclass(frozen=True)
class Cyclic(Schedule):
    """Triangular cycles between ``base_value`` and ``max_value`` (cyclical learning rates).

    Each cycle lasts up + down steps (``step_size_up``, ``step_size_down``;
    down defaults to up). With c = floor(t / (up + down)) and
    r = t - c * (up + down), the position is s = r / up while r <= up, else
    (up + down - r) / down, and

    value(t) = base_value + (max_value - base_value) * s * g

    with g = 1 for ``mode="triangular"``, g = 0.5 ** c for ``"triangular2"``
    (the amplitude halves every cycle) and g = gamma ** t for ``"exp_range"``.
    The cycle index and position are computed on integers.

    Constraints: ``step_size_up >= 0``, ``step_size_down >= 0`` and their sum
    at least 1; ``0 < gamma <= 1`` (used by ``"exp_range"`` only). With
    ``step_size_up=0`` every cycle starts at ``max_value`` (torch divides by
    zero there). With ``step_size_down=0`` the value climbs for
    ``step_size_up`` steps and restarts at ``base_value`` without reaching
    ``max_value``, as torch does.

    Reproduces ``torch.optim.lr_scheduler.CyclicLR(base_lr=base_value,
    max_lr=max_value, step_size_up, step_size_down, mode, gamma)``, which
    overwrites the optimizer's learning rate with ``base_lr``; its momentum
    cycling (``cycle_momentum``) is a separate schedule here.

    >>> schedule = Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, step_size_down=3)
    >>> [round(schedule(t), 6) for t in range(7)]
    [0.1, 0.55, 1.0, 0.7, 0.4, 0.1, 0.55]
    """

    base_value: float
    max_value: float
    step_size_up: int
    step_size_down: int | None = None
    mode: str = "triangular"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "base_value", check_number("base_value", self.base_value))
        _set(self, "max_value", check_number("max_value", self.max_value))
        _set(self, "step_size_up", check_int("step_size_up", self.step_size_up, low=0))
        _set(self, "step_size_down", check_int("step_size_down", self.step_size_down, low=0, allow_none=True))
        if self.step_size_up + self._down == 0:
            raise ValueError(
                "step_size_up + step_size_down must be at least 1, "
                f"got step_size_up={self.step_size_up!r} and step_size_down={self.step_size_down!r}"
            )
        _set(self, "mode", check_choice("mode", self.mode, ("triangular", "triangular2", "exp_range")))
        _set(self, "gamma", check_number("gamma", self.gamma, low=0.0, high=1.0, low_inclusive=False))

    @property
    def _down(self) -> int:
        return self.step_size_up if self.step_size_down is None else self.step_size_down

    @property
    def _period(self) -> int:
        return self.step_size_up + self._down

    def _evaluate(self, step: StepArray) -> Any:
        up, down, period = self.step_size_up, self._down, self._period
        cycle, position = step.divmod(period)

        if up == 0:
            fraction = steps_until(step, position, period) / float(down)
        elif down == 0:
            fraction = step.as_float(position) / float(up)
        else:
            rising = step.as_float(position) / float(up)
            falling = steps_until(step, position, period) / float(down)
            fraction = step.xp.where(position <= step.integer(up), rising, falling)

        if self.mode == "triangular2":
            fraction = fraction * power(step, 0.5, [(cycle, 1.0)])
        elif self.mode == "exp_range" and self.gamma != 1.0:
            fraction = fraction * power(step, self.gamma, [(step.count, 1.0)])
        return self.base_value + (self.max_value - self.base_value) * fraction

    def _is_periodic(self) -> bool:
        return self.mode == "triangular" or (self.mode == "exp_range" and self.gamma == 1.0)

    def _horizon(self) -> int | None:
        if self.base_value == self.max_value:
            return 0
        if self.mode == "triangular2":
            return _vanishing_count(0.5) * self._period
        if self.mode == "exp_range" and self.gamma != 1.0:
            return _vanishing_count(self.gamma)
        return None

    def _reduce_large_step(self, step: int, horizon: int | None) -> int | float:
        if horizon is None and self._is_periodic():
            # The value repeats every cycle, so a step too large for int64 reduces exactly.
            step %= self._period
        return super()._reduce_large_step(step, horizon)
