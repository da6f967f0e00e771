"""Sample instances of every registered kind, used by the tests that run over all kinds.

Each kind maps to a few instances that cover its options. A test checks that
every kind registered in optstrat has an entry here, so a new kind must add one.
"""

from __future__ import annotations

import optstrat as ops

SCHEDULE_EXAMPLES = {
    "constant": [ops.Constant(value=0.1)],
    "step_decay": [ops.StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=3)],
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
    ],
}
