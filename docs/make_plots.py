"""Draw the example of every schedule kind in docs/schedules.md into docs/img/<kind>.png.

Each example is a spec string, the same one that docs/schedules.md quotes in the
kind's section (tests/test_docs.py checks that they match). The schedule is
evaluated once on a NumPy array of steps. Run from anywhere:

    python docs/make_plots.py               # writes docs/img/<kind>.png
    python docs/make_plots.py --out DIR     # writes DIR/<kind>.png

It needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import optstrat

# kind -> (spec string, last step plotted). Each plot runs a little past the
# schedule's end, where there is one, to show the value it holds.
EXAMPLES: dict[str, tuple[str, int]] = {
    "constant": ("constant(value=0.1)", 100),
    "linear": ("linear(init_value=1.0, end_value=0.1, transition_steps=60, transition_begin=20)", 100),
    "polynomial": ("polynomial(init_value=1.0, end_value=0.1, transition_steps=80, power=2.0)", 100),
    "exponential_decay": (
        "exponential_decay(init_value=1.0, transition_steps=20, decay_rate=0.5, transition_begin=10, end_value=0.1)",
        100,
    ),
    "step_decay": ("step_decay(init_value=1.0, decay_rate=0.5, decay_steps=25)", 100),
    "multistep": ("multistep(init_value=1.0, boundaries=[30, 60, 80], decay_rate=0.3)", 100),
    "piecewise_constant": ("piecewise_constant(boundaries=[20, 50, 80], values=[0.2, 1.0, 0.5, 0.1])", 100),
    "piecewise_linear": ("piecewise_linear(boundaries=[0, 20, 60, 90], values=[0.0, 1.0, 0.4, 0.1])", 100),
    "inverse_time": ("inverse_time(init_value=1.0, decay_rate=0.5, decay_steps=10)", 100),
    "inverse_sqrt": ("inverse_sqrt(peak_value=1.0, warmup_steps=10)", 100),
    "cosine_decay": ("cosine_decay(init_value=1.0, decay_steps=80, end_value=0.1)", 100),
    "cosine_restarts": (
        "cosine_restarts(init_value=1.0, first_period=10, period_mult=2.0, value_mult=0.7, end_value=0.05)",
        150,
    ),
    "one_cycle": ("one_cycle(max_value=1.0, total_steps=100)", 110),
    "cyclic": (
        'cyclic(base_value=0.1, max_value=1.0, step_size_up=10, step_size_down=15, mode="triangular2")',
        100,
    ),
    "warmup": (
        "warmup(schedule=exponential_decay(init_value=1.0, transition_steps=20, decay_rate=0.5), warmup_steps=10)",
        100,
    ),
    "warmup_cosine": ("warmup_cosine(peak_value=1.0, warmup_steps=10, decay_steps=80, end_value=0.1)", 100),
    "wsd": (
        'wsd(peak_value=1.0, warmup_steps=10, stable_steps=50, decay_steps=30, end_value=0.1, decay_shape="1-sqrt")',
        100,
    ),
    "join": (
        "join(schedules=[linear(init_value=0.0, end_value=1.0, transition_steps=10), "
        "cosine_decay(init_value=1.0, decay_steps=50, end_value=0.3), constant(value=0.1)], boundaries=[10, 70])",
        100,
    ),
    "scale": ("scale(schedule=cosine_decay(init_value=1.0, decay_steps=100), factor=3e-4)", 100),
    "clamp": ("clamp(schedule=inverse_time(init_value=1.0, decay_rate=1.0, decay_steps=5), min_value=0.2)", 100),
}

# 480 x 240 pixels.
FIGURE_SIZE_INCHES = (6.0, 3.0)
DPI = 80


def plot_example(kind: str, spec: str, last_step: int, path: Path) -> None:
    """Evaluate ``spec`` on steps 0..last_step in one call and save the curve as a PNG."""
    import matplotlib.pyplot as plt

    steps = np.arange(last_step + 1)
    values = optstrat.from_spec(spec)(steps)

    figure, axes = plt.subplots(figsize=FIGURE_SIZE_INCHES, dpi=DPI)
    # steps-post draws each value as a flat segment from its step to the next one.
    axes.plot(steps, values, drawstyle="steps-post", linewidth=1.5)
    # The value axis always includes 0, so a constant or a shallow curve is not magnified.
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    padding = 0.05 * ((high - low) or 1.0)
    axes.set_ylim(low - padding, high + padding)
    axes.set_title(kind, fontsize=10)
    axes.set_xlabel("step", fontsize=9)
    axes.set_ylabel("value", fontsize=9)
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)
    # Fixed margins instead of tight_layout(), which draws every figure one extra time.
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.19, top=0.9)
    # Leave out the "Software" entry, which names the matplotlib version.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "img",
        help="folder for the PNG files (default: docs/img next to this script)",
    )
    args = parser.parse_args(argv)

    missing = sorted(set(optstrat.kinds(optstrat.Schedule)) - set(EXAMPLES))
    if missing:
        print(
            f"make_plots: error: no example for kinds {', '.join(missing)}. "
            "Add a spec string for each to EXAMPLES in docs/make_plots.py and to docs/schedules.md.",
            file=sys.stderr,
        )
        return 1

    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, (spec, last_step) in EXAMPLES.items():
        plot_example(kind, spec, last_step, args.out / f"{kind}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
