"""The ``optstrat`` command: list the catalog, show and plot schedules, run the demo.

``import optstrat`` never imports this module. It needs only the core;
matplotlib is imported by ``plot --out`` and the frameworks by ``demo``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import optstrat
from optstrat.clipping import Clipper
from optstrat.schedules import Schedule

__all__ = ["build_parser", "main", "text_plot"]

_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml")

# Points evaluated per preview column and per PNG: a curve over 10^7 steps is sampled, not evaluated whole.
_PREVIEW_SAMPLES_PER_COLUMN = 200
_PNG_SAMPLES = 100_000

# The plotted steps are NumPy int64 arrays.
_MAX_PLOT_STEP = 2**62

_SPEC_HELP = (
    "a schedule as a spec string such as "
    "'warmup_cosine(peak_value=0.1, warmup_steps=100, decay_steps=1000)', "
    "or the path of a .json, .yaml or .toml config file; `optstrat list` shows the kinds"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optstrat`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``optstrat`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="optstrat",
        description=(
            "Learning-rate schedules and gradient clipping for PyTorch, Optax and Keras. "
            "Steps count optimizer updates: step 0 is the value the first update uses."
        ),
    )
    parser.add_argument("--version", action="version", version=f"optstrat {optstrat.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    list_parser = commands.add_parser(
        "list",
        help="print the catalog of schedule and clipper kinds",
        description="Print every registered schedule and clipper kind with the first line of its docstring.",
    )
    list_parser.set_defaults(handler=_run_list, parser=list_parser)

    show_parser = commands.add_parser(
        "show",
        help="print a table of a schedule's values at given steps",
        description="Print a table of step and value for a schedule.",
    )
    show_parser.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    show_parser.add_argument(
        "--at",
        metavar="STEPS",
        type=_parse_steps,
        help=(
            "comma-separated optimizer steps (integers >= 0) to evaluate at; an item START:STOP or "
            "START:STOP:STRIDE adds a range that excludes STOP, e.g. 0,100,1000 or 0:1000:100. "
            "Default: 11 evenly spaced steps from 0 to 10%% past the step where the schedule stops changing"
        ),
    )
    show_parser.set_defaults(handler=_run_show, parser=show_parser)

    plot_parser = commands.add_parser(
        "plot",
        help="draw a schedule as a terminal preview and optionally as a PNG",
        description=(
            "Print a text plot of a schedule over steps 0 to N; with --out also draw it into "
            "an image file with matplotlib."
        ),
    )
    plot_parser.add_argument("spec", metavar="SPEC", help=_SPEC_HELP)
    plot_parser.add_argument(
        "--steps",
        metavar="N",
        type=_parse_positive_int("--steps", maximum=_MAX_PLOT_STEP),
        help=(
            "last optimizer step drawn; the curve covers steps 0 to N. Default: 10%% past the step "
            "where the schedule stops changing, at least 100; 1000 if it never stops changing"
        ),
    )
    plot_parser.add_argument(
        "--out",
        metavar="FILE",
        help="also write the plot to this image file (PNG, or any format matplotlib infers from the suffix)",
    )
    plot_parser.add_argument(
        "--width", type=_parse_positive_int("--width"), default=60, help="preview width in characters (default 60)"
    )
    plot_parser.add_argument(
        "--height", type=_parse_positive_int("--height"), default=15, help="preview height in lines (default 15)"
    )
    plot_parser.set_defaults(handler=_run_plot, parser=plot_parser)

    demo_parser = commands.add_parser(
        "demo",
        help="train a small network with one policy in every installed framework",
        description=(
            "Train a 64-64-10 MLP on scikit-learn's handwritten digits with SGD (momentum 0.9), "
            "a warmup + cosine learning rate and global-norm clipping in PyTorch, Optax and Keras, "
            "from the same initial weights and batches, and compare the learning rates that each "
            "framework's optimizer applied at every update."
        ),
    )
    # The demo module imports no framework at import time, only inside each framework's run.
    from optstrat import demo

    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=_run_demo, parser=demo_parser)
    return parser


# Argument types -----------------------------------------------------------------------------------


def _parse_steps(text: str) -> list[int]:
    steps: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if ":" in item:
            steps.extend(_parse_range(item))
        else:
            steps.append(_parse_step(item))
    if not steps:
        raise argparse.ArgumentTypeError(f"expected at least one step, got {text!r}")
    return steps


def _parse_range(item: str) -> range:
    parts = item.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a range must be START:STOP or START:STOP:STRIDE, got {item!r}")
    start, stop = _parse_step(parts[0]), _parse_step(parts[1])
    stride = _parse_step(parts[2]) if len(parts) == 3 else 1
    if stride == 0:
        raise argparse.ArgumentTypeError(f"the stride of a range must be a positive integer, got {item!r}")
    if stop <= start:
        raise argparse.ArgumentTypeError(f"a range must have STOP greater than START, got {item!r}")
    return range(start, stop, stride)


def _parse_step(text: str) -> int:
    try:
        step = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a step must be an integer >= 0, got {text!r}") from None
    if step < 0:
        raise argparse.ArgumentTypeError(f"a step must be an integer >= 0, got {text!r}")
    return step


def _parse_positive_int(option: str, maximum: int | None = None) -> Any:
    rule = "a positive integer" if maximum is None else f"a positive integer up to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be {rule}, got {text!r}") from None
        if value <= 0 or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{option} must be {rule}, got {text!r}")
        return value

    return parse


# Subcommands ----------------------------------------------------------------------------------------


def _run_list(args: argparse.Namespace) -> int:
    groups = [
        ("Schedules", optstrat.kinds(Schedule)),
        ("Clippers", optstrat.kinds(Clipper)),
    ]
    listed = {name for _, catalog in groups for name in catalog}
    others = {name: cls for name, cls in optstrat.kinds().items() if name not in listed}
    if others:
        groups.append(("Other kinds", others))

    width = max(len(name) for _, catalog in groups for name in catalog)
    for index, (title, catalog) in enumerate(groups):
        if index:
            print()
        print(f"{title}:")
        for name, cls in catalog.items():
            print(f"  {name:<{width}}  {_summary_line(cls)}")
    return 0


def _run_show(args: argparse.Namespace) -> int:
    schedule = _load_schedule(args.spec, args.parser)
    steps = args.at
    if steps is None:
        last = _default_last_step(schedule)
        steps = sorted({round(last * index / 10) for index in range(11)})

    rows = [(str(step), _format_value(schedule(step))) for step in steps]
    step_width = max(len("step"), *(len(step) for step, _ in rows))
    print(f"{'step':>{step_width}}  value")
    for step, value in rows:
        print(f"{step:>{step_width}}  {value}")
    return 0


def _run_plot(args: argparse.Namespace) -> int:
    schedule = _load_schedule(args.spec, args.parser)
    last = args.steps if args.steps is not None else _default_last_step(schedule)
    title = optstrat.to_spec(schedule)

    if args.out is not None and not args.out.lower().endswith(".png"):
        args.parser.error(f"--out must be a path ending in .png, got {args.out!r}")
    if args.out is not None:
        try:
            _write_png(schedule, last, title, args.out)
        except ImportError:
            print(_MATPLOTLIB_MISSING, file=sys.stderr)
            return 1
        except OSError as error:
            print(f"optstrat plot: error: cannot write {args.out!r}: {error.strerror or error}", file=sys.stderr)
            return 1

    steps = _sample_steps(last, args.width * _PREVIEW_SAMPLES_PER_COLUMN)
    values = np.asarray(schedule(steps), dtype=np.float64)
    print(title)
    print(text_plot(steps, values, width=args.width, height=args.height))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from optstrat import demo

    return demo.run(args)


# Helpers --------------------------------------------------------------------------------------------

_MATPLOTLIB_MISSING = (
    "optstrat plot: error: writing an image needs matplotlib, which is not installed. "
    "Install it with `pip install matplotlib`, "
    "or leave out --out for the terminal preview"
)


def _load_schedule(spec: str, parser: argparse.ArgumentParser) -> Schedule:
    """Build the schedule that ``spec`` (a spec string or a config file path) describes.

    Any invalid input ends the command through ``parser.error``: a message on
    stderr and exit status 2.
    """
    is_file = "(" not in spec and spec.lower().endswith(_CONFIG_SUFFIXES)
    try:
        built = optstrat.load(spec) if is_file else optstrat.from_spec(spec)
    except (ValueError, TypeError) as error:
        parser.error(f"invalid schedule {spec!r}: {error}")
    except OSError as error:
        parser.error(f"cannot read config file {spec!r}: {error.strerror or error}")
    except ImportError as error:
        parser.error(str(error))

    if not isinstance(built, Schedule):
        parser.error(
            f"SPEC must describe a schedule, got kind {built.kind!r} ({type(built).__name__}); "
            "`optstrat list` shows the schedule kinds"
        )
    return built


def _default_last_step(schedule: Schedule) -> int:
    """Return 10% past the step where ``schedule`` stops changing (at least 100), or 1000."""
    horizon = schedule._horizon()
    if horizon is None:
        return 1000
    return max(100, math.ceil(horizon * 1.1))


def _summary_line(cls: type) -> str:
    lines = (cls.__doc__ or "").strip().splitlines()
    summary = lines[0].strip() if lines else "(no description)"
    return summary.replace("``", "")


def _format_value(value: float) -> str:
    return f"{value:.10g}"


def _sample_steps(last: int, count: int) -> np.ndarray:
    """Return the integer steps 0..last, or ``count`` of them evenly spaced when there are more."""
    if last + 1 <= count:
        return np.arange(last + 1, dtype=np.int64)
    return np.unique(np.linspace(0, last, count).round().astype(np.int64))


def _write_png(schedule: Schedule, last: int, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _sample_steps(last, _PNG_SAMPLES)
    values = np.asarray(schedule(steps), dtype=np.float64)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    try:
        axes.plot(steps, values, linewidth=1.5, drawstyle="steps-post")
        axes.set_xlabel("step (optimizer updates)")
        axes.set_ylabel("value")
        axes.set_title(title, fontsize=8, wrap=True)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)


def text_plot(steps: np.ndarray, values: np.ndarray, *, width: int = 60, height: int = 15) -> str:
    """Render ``values`` over ``steps`` as a ``width`` x ``height`` character plot with axis labels.

    Each column covers an equal range of steps. It marks every row between the
    smallest and the largest value in that range, extended to the last value
    of the column before, so jumps and fast cycles show as one joined line.
    The y axis is labelled with the maximum, middle and minimum value, the x
    axis with the first and last step.
    """
    first, last = int(steps[0]), int(steps[-1])
    low, high = float(np.min(values)), float(np.max(values))
    span = high - low

    # Float arithmetic, because (step - first) * width can exceed int64 for steps near 2**62.
    fractions = (steps - first).astype(np.float64) / float(last - first + 1)
    columns = np.minimum((fractions * width).astype(np.int64), width - 1)
    if span > 0:
        rows = np.round((values - low) / span * (height - 1)).astype(np.int64)
    else:
        rows = np.full(values.shape, (height - 1) // 2, dtype=np.int64)

    grid = [[" "] * width for _ in range(height)]
    previous_row = None
    for column in np.unique(columns):
        in_column = rows[columns == column]
        low_row, high_row = int(in_column.min()), int(in_column.max())
        # Reaching back to the previous column's last value joins the marks into one line.
        if previous_row is not None:
            low_row, high_row = min(low_row, previous_row), max(high_row, previous_row)
        for row in range(low_row, high_row + 1):
            grid[height - 1 - row][column] = "*"
        previous_row = int(in_column[-1])

    labels = [""] * height
    middle = (height - 1) // 2
    if span > 0:
        labels[0] = _format_axis(high)
        labels[-1] = _format_axis(low)
        if height >= 5:
            labels[middle] = _format_axis(low + span * (height - 1 - middle) / (height - 1))
    else:
        labels[middle] = _format_axis(low)
    margin = max(len(label) for label in labels)

    lines = [f"{label:>{margin}} |{''.join(row)}" for label, row in zip(labels, grid)]
    lines.append(" " * margin + " +" + "-" * width)
    left, right, caption = str(first), str(last), "step"
    gap = max(1, width - len(left) - len(right))
    axis = left + caption.center(gap) + right if gap >= len(caption) + 2 else left + " " * gap + right
    lines.append(" " * (margin + 2) + axis)
    return "\n".join(lines)


def _format_axis(value: float) -> str:
    return f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
