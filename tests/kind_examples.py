"""Sample instances of every registered kind, used by the tests that run over all kinds.

Each kind maps to a few instances that cover its options. A test checks that
every kind registered in optstrat has an entry here, so a new kind must add one.
"""

from __future__ import annotations

import optstrat as ops

SCHEDULE_EXAMPLES = {
    "constant": [ops.Constant(value=0.1)],
    "step_decay": [ops.StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=3)],
    "linear": [
        ops.Linear(init_value=1.0, end_value=0.0, transition_steps=4, transition_begin=2),
        ops.Linear(init_value=0.0, end_value=2.0, transition_steps=7),
    ],
    "polynomial": [
        ops.Polynomial(init_value=1.0, end_value=0.1, transition_steps=6, power=2.0, transition_begin=1),
        ops.Polynomial(init_value=1.0, end_value=0.0, transition_steps=4, cycle=True),
        ops.Polynomial(init_value=0.0, end_value=1.0, transition_steps=9, power=0.5, cycle=True),
    ],
    "inverse_time": [
        ops.InverseTime(init_value=1.0, decay_rate=0.5, decay_steps=2),
        ops.InverseTime(init_value=2.0, decay_rate=3.0, decay_steps=5, staircase=True),
    ],
    "inverse_sqrt": [
        ops.InverseSqrt(peak_value=1.0, warmup_steps=4),
        ops.InverseSqrt(peak_value=0.5, warmup_steps=0),
        ops.InverseSqrt(peak_value=1.0, warmup_steps=3, timescale=10),
    ],
    "multistep": [
        ops.MultiStep(init_value=1.0, boundaries=[2, 5, 5], decay_rate=0.1),
        ops.MultiStep(init_value=1.0, boundaries=[], decay_rate=0.5),
    ],
    "piecewise_constant": [
        ops.PiecewiseConstant(boundaries=[2, 4], values=[1.0, 0.5, 0.1]),
        ops.PiecewiseConstant(boundaries=[0], values=[1.0, 0.25]),
    ],
    "piecewise_linear": [
        ops.PiecewiseLinear(boundaries=[0, 4, 8], values=[1.0, 0.1, 0.01]),
        ops.PiecewiseLinear(boundaries=[3, 5], values=[0.0, 1.0]),
        ops.PiecewiseLinear(boundaries=[6], values=[0.3]),
    ],
    "scale": [ops.Scale(schedule=ops.CosineDecay(init_value=1.0, decay_steps=8), factor=0.1)],
    "clamp": [
        ops.Clamp(schedule=ops.InverseTime(init_value=1.0, decay_rate=1.0, decay_steps=1), min_value=0.2),
        ops.Clamp(
            schedule=ops.Linear(init_value=0.0, end_value=2.0, transition_steps=8), min_value=0.1, max_value=1.5
        ),
    ],
    "exponential_decay": [
        ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.5),
        ops.ExponentialDecay(
            init_value=1.0, transition_steps=3, decay_rate=0.5, transition_begin=4, staircase=True, end_value=0.2
        ),
        ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=2.0, end_value=3.0),
    ],
    "cosine_decay": [
        ops.CosineDecay(init_value=1.0, decay_steps=10, end_value=0.1),
        ops.CosineDecay(init_value=2.0, decay_steps=7, exponent=2.0),
    ],
    "cosine_restarts": [
        ops.CosineRestarts(init_value=1.0, first_period=3),
        ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=2.0, end_value=0.1),
        ops.CosineRestarts(init_value=2.0, first_period=5, period_mult=1.5, value_mult=0.5, end_value=0.2),
        ops.CosineRestarts(init_value=1.0, first_period=4, value_mult=0.0),
    ],
    "one_cycle": [
        ops.OneCycle(max_value=1.0, total_steps=10),
        ops.OneCycle(max_value=0.5, total_steps=25, pct_start=0.4, anneal="linear", three_phase=True),
        ops.OneCycle(max_value=1.0, total_steps=4, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
    ],
    "cyclic": [
        ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, step_size_down=3),
        ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, mode="triangular2"),
        ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=3, step_size_down=0, mode="exp_range", gamma=0.9),
    ],
    "wsd": [
        ops.WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=3, decay_steps=2, init_value=0.1, end_value=0.1),
        ops.WarmupStableDecay(peak_value=1.0, warmup_steps=0, stable_steps=4, decay_steps=5, decay_shape="cosine"),
        ops.WarmupStableDecay(peak_value=1.0, warmup_steps=3, stable_steps=0, decay_steps=4, decay_shape="1-sqrt"),
    ],
    "warmup": [ops.Warmup(schedule=ops.CosineDecay(init_value=1.0, decay_steps=8), warmup_steps=3, init_value=0.1)],
    "warmup_cosine": [
        ops.WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=10, end_value=0.1),
        ops.WarmupCosine(peak_value=1.0, warmup_steps=0, decay_steps=5),
    ],
    "join": [
        ops.Join(
            schedules=[ops.Constant(value=1.0), ops.CosineDecay(init_value=1.0, decay_steps=4)],
            boundaries=[3],
        ),
        ops.Join(schedules=[ops.Constant(value=1.0), ops.Constant(value=0.5)], boundaries=[0]),
    ],
}

CLIPPER_EXAMPLES = {
    "clip_by_global_norm": [
        ops.ClipByGlobalNorm(max_norm=1.0),
        ops.ClipByGlobalNorm(max_norm=2.0, norm_type=1.0, nonfinite="propagate"),
        ops.ClipByGlobalNorm(max_norm=0.0, norm_type="inf", nonfinite="error"),
        ops.ClipByGlobalNorm(max_norm=1.5, norm_type=3.5),
    ],
    "clip_by_value": [
        ops.ClipByValue(max_value=0.5),
        ops.ClipByValue(max_value=0.0, nonfinite="propagate"),
    ],
    "clip_by_norm": [
        ops.ClipByNorm(max_norm=1.0),
        ops.ClipByNorm(max_norm=2.0, norm_type="inf", nonfinite="error"),
    ],
    "adaptive_clip": [
        ops.AdaptiveClip(),
        ops.AdaptiveClip(clipping=0.1, eps=0.0, unit_axis="first", nonfinite="propagate"),
    ],
    "autoclip": [
        ops.AutoClip(),
        ops.AutoClip(percentile=50.0, history_size=4, nonfinite="error"),
    ],
    "zclip": [
        ops.ZClip(),
        ops.ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=1, nonfinite="propagate"),
    ],
}
