"""``optstrat demo``: one policy trained in every installed framework, and the numbers compared.

A 64-64-10 MLP (ReLU) learns scikit-learn's bundled handwritten digits with SGD
(momentum 0.9), a warmup + cosine learning rate and global-norm clipping, in
PyTorch, Optax and Keras. Every framework starts from the same NumPy weights
and trains on the same batches. The demo prints one row per epoch, a summary, and
the largest difference between the learning rates that the frameworks'
optimizers actually applied, read back from each optimizer at every update.

Importing this package imports no framework; each one is imported inside its
own run (``_torch``, ``_optax``, ``_keras``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

import optstrat
from optstrat.clipping import ClipByGlobalNorm, suggest_max_norm
from optstrat.demo._data import Monitor, Run, Settings, batch_indices, initial_weights, load_digits, steps_per_epoch
from optstrat.schedules import Schedule

__all__ = ["FRAMEWORKS", "add_arguments", "default_schedule", "run"]

FRAMEWORKS = ("torch", "optax", "keras")
KERAS_BACKENDS = ("tensorflow", "jax", "torch")

DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
DEFAULT_PEAK_LR = 0.05
DEFAULT_WARMUP_FRACTION = 0.1
DEFAULT_MAX_NORM = 1.0
MOMENTUM = 0.9

# JAX and Keras compute the learning rate in float32 and PyTorch in float64. For the default
# schedule (peak 0.05) the float32 values stay within 1e-8 of float64, far inside this tolerance,
# which is absolute up to a learning rate of 1 and relative above.
LR_TOLERANCE = 1e-6

_MODULES = {"torch": "optstrat.demo._torch", "optax": "optstrat.demo._optax", "keras": "optstrat.demo._keras"}
_INSTALL_HINTS = {
    "torch": "pip install -e '.[torch]' in the optstrat checkout",
    "optax": "pip install -e '.[jax]' in the optstrat checkout",
    "keras": "pip install -e '.[keras]' in the optstrat checkout",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--frameworks",
        metavar="LIST",
        default=",".join(FRAMEWORKS),
        help=f"comma-separated frameworks to train in, from {', '.join(FRAMEWORKS)} (default: all)",
    )
    parser.add_argument(
        "--epochs",
        metavar="N",
        type=_positive_int("--epochs"),
        default=DEFAULT_EPOCHS,
        help=f"passes over the training images, 80%% of the 1797 digits (default {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int("--batch-size"),
        default=DEFAULT_BATCH_SIZE,
        help=f"images per optimizer update (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=_non_negative_int("--seed"),
        default=0,
        help="seed of the train/test split, the initial weights and the batch order (default 0)",
    )
    parser.add_argument(
        "--policy",
        metavar="SPEC",
        help=(
            "learning-rate schedule as a spec string, in optimizer updates; the default is "
            f"warmup_cosine(peak_value={DEFAULT_PEAK_LR}, warmup_steps=<10%% of all updates>, "
            "decay_steps=<all updates>), sized to --epochs and --batch-size. "
            "A schedule given here is used as written, so size its decay to the run yourself"
        ),
    )
    parser.add_argument(
        "--max-norm",
        metavar="NORM",
        type=float,
        default=DEFAULT_MAX_NORM,
        help=f"largest global L2 norm of the gradients; larger ones are scaled down to it (default {DEFAULT_MAX_NORM})",
    )
    parser.add_argument(
        "--keras-backend",
        choices=KERAS_BACKENDS,
        help=(
            "backend Keras runs on; sets KERAS_BACKEND, which Keras reads once when it is imported "
            "(default: $KERAS_BACKEND, else tensorflow)"
        ),
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="write the results and the learning rate and gradient norm of every update to this JSON file",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="draw the learning rate and the gradient norm per update of every framework into this PNG (needs matplotlib)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="hide the progress bar (it is shown only when stderr is a terminal)",
    )


def default_schedule(epochs: int, batch_size: int, train_count: int) -> Schedule:
    """Return the default policy's schedule: 10% linear warmup, then cosine decay to 0 at the last update."""
    total = epochs * steps_per_epoch(train_count, batch_size)
    warmup = min(max(1, round(total * DEFAULT_WARMUP_FRACTION)), total - 1)
    return optstrat.WarmupCosine(peak_value=DEFAULT_PEAK_LR, warmup_steps=warmup, decay_steps=total)


def run(args: argparse.Namespace) -> int:
    """Run the demo with the parsed options; return the exit status."""
    parser: argparse.ArgumentParser = args.parser
    requested = _parse_frameworks(args.frameworks, parser)
    schedule = _parse_policy(args.policy, parser)
    try:
        clipper = ClipByGlobalNorm(max_norm=args.max_norm)
    except (ValueError, TypeError) as error:
        parser.error(f"invalid --max-norm: {error}")

    for option, path in (("--json", args.json), ("--plot", args.plot)):
        directory = os.path.dirname(path) if path is not None else ""
        if directory and not os.path.isdir(directory):
            parser.error(f"{option}: directory {directory!r} of {path!r} does not exist")

    if not _check_optional_modules(args):
        return 1
    keras_backend = _select_keras_backend(args.keras_backend) if "keras" in requested else None
    available = _installed_frameworks(requested, keras_backend)
    if not available:
        print("optstrat demo: error: none of the requested frameworks is installed", file=sys.stderr)
        return 1

    digits = load_digits(args.seed)
    if schedule is None:
        schedule = default_schedule(args.epochs, args.batch_size, len(digits.y_train))
    settings = Settings(
        schedule=schedule,
        max_norm=clipper.max_norm,
        epochs=args.epochs,
        batch_size=args.batch_size,
        momentum=MOMENTUM,
        seed=args.seed,
    )
    weights = initial_weights(args.seed)
    batches = batch_indices(len(digits.y_train), args.batch_size, args.epochs, args.seed)
    _print_header(digits, batches, settings)

    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    runs: dict[str, Run] = {}
    for framework in available:
        runs[framework] = _train(framework, digits, weights, batches, settings, progress, keras_backend)

    comparison = _compare(runs, schedule)
    _print_summary(runs, comparison, settings)
    try:
        if args.json is not None:
            _write_json(args.json, runs, comparison, settings, keras_backend)
            print(f"wrote {args.json}")
        if args.plot is not None:
            _write_plot(args.plot, runs, settings)
            print(f"wrote {args.plot}")
    except OSError as error:
        print(f"optstrat demo: error: cannot write {error.filename!r}: {error.strerror or error}", file=sys.stderr)
        return 1

    if not comparison["agree"]:
        print(
            f"optstrat demo: error: the applied learning rates differ by {comparison['max_lr_difference']:.3g}, "
            f"more than the tolerance {comparison['tolerance']:.3g}",
            file=sys.stderr,
        )
        return 1
    return 0


# Options ----------------------------------------------------------------------------------------


def _positive_int(option: str) -> Any:
    return _int_at_least(option, 1, "a positive integer")


def _non_negative_int(option: str) -> Any:
    return _int_at_least(option, 0, "an integer >= 0")


def _int_at_least(option: str, low: int, rule: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be {rule}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{option} must be {rule}, got {text!r}")
        return value

    return parse


def _parse_frameworks(text: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FRAMEWORKS]
    if unknown or not names:
        parser.error(f"--frameworks must list names from {', '.join(FRAMEWORKS)}, got {text!r}")
    return list(dict.fromkeys(names))


def _parse_policy(spec: str | None, parser: argparse.ArgumentParser) -> Schedule | None:
    if spec is None:
        return None
    try:
        schedule = optstrat.from_spec(spec)
    except (ValueError, TypeError) as error:
        parser.error(f"invalid --policy {spec!r}: {error}")
    if not isinstance(schedule, Schedule):
        parser.error(f"--policy must be a schedule, got kind {schedule.kind!r} ({type(schedule).__name__})")
    return schedule


def _check_optional_modules(args: argparse.Namespace) -> bool:
    """Print an error and return False when scikit-learn, or matplotlib for --plot, is missing."""
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        print(
            "optstrat demo: error: --plot needs matplotlib, which is not installed. "
            "Install it with `pip install matplotlib`, or leave out --plot",
            file=sys.stderr,
        )
        return False
    if importlib.util.find_spec("sklearn") is None:
        print(
            "optstrat demo: error: the demo needs scikit-learn for its data set, which is not installed. "
            "Install it with `pip install scikit-learn`",
            file=sys.stderr,
        )
        return False
    return True


def _installed_frameworks(requested: list[str], keras_backend: str | None) -> list[str]:
    """Return the requested frameworks whose modules are installed; print one line for each other."""
    available = []
    for framework in requested:
        missing = _missing_modules(framework, keras_backend)
        if missing:
            print(
                f"{framework}: skipped, module {missing[0]!r} is not installed "
                f"(install with {_install_hint(framework, keras_backend)})"
            )
        else:
            available.append(framework)
    return available


def _select_keras_backend(requested: str | None) -> str:
    """Set KERAS_BACKEND for the Keras run and return it.

    Keras reads KERAS_BACKEND once, when it is first imported, so this runs
    before the import. In the ``optstrat`` command nothing imports Keras earlier.
    """
    backend = requested or os.environ.get("KERAS_BACKEND") or "tensorflow"
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow":
        # Hide TensorFlow's C++ start-up messages (oneDNN, CUDA probing); errors still show.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return backend


def _missing_modules(framework: str, keras_backend: str | None) -> list[str]:
    required = {
        "torch": ["torch", "optstrat_torch"],
        "optax": ["jax", "optax", "optstrat_optax"],
        "keras": ["keras", str(keras_backend), "optstrat_keras"],
    }[framework]
    return [name for name in required if importlib.util.find_spec(name) is None]


def _install_hint(framework: str, keras_backend: str | None) -> str:
    if framework == "keras" and keras_backend != "tensorflow":
        return f"pip install keras {'jax' if keras_backend == 'jax' else 'torch'}, then pip install -e ."
    return _INSTALL_HINTS[framework]


# Training ---------------------------------------------------------------------------------------

def _print_header(digits: Any, batches: list[list[np.ndarray]], settings: Settings) -> None:
    epochs = f"{settings.epochs} epoch" + ("s" if settings.epochs != 1 else "")
    print(f"data: digits, {len(digits.y_train)} training and {len(digits.y_test)} test images, seed {settings.seed}")
    print(f"policy: learning rate {optstrat.to_spec(settings.schedule)}")
    print(f"        SGD momentum {settings.momentum}, clip by global L2 norm at {settings.max_norm:g}")
    print(f"        {epochs} x {len(batches[0])} updates of up to {settings.batch_size} images")
    print(
        "columns: loss is the mean training cross-entropy, test acc the accuracy on the test images, "
        "lr the learning rate of the epoch's last update, grad norm the mean global L2 norm before "
        "clipping, clipped the share of updates that were clipped"
    )


_ROW_HEADER = f"{'epoch':>5}  {'loss':>8}  {'test acc':>8}  {'lr':>10}  {'grad norm':>9}  {'clipped':>7}"


def _train(
    framework: str,
    digits: Any,
    weights: dict[str, np.ndarray],
    batches: list[list[np.ndarray]],
    settings: Settings,
    progress: _Progress,
    keras_backend: str | None,
) -> Run:
    print()
    label = f"keras ({keras_backend} backend)" if framework == "keras" else framework
    print(f"{label}: importing")

    started = time.perf_counter()
    module = importlib.import_module(_MODULES[framework])
    import_seconds = time.perf_counter() - started
    print(f"{label}: {module.describe()}")
    print(_ROW_HEADER)

    def on_batch(done: int, total: int) -> None:
        progress.show(label, len(record_epochs) + 1, settings.epochs, done, total)

    def on_epoch(run: Run, epoch: int) -> None:
        progress.clear()
        record_epochs.append(epoch)
        print(_epoch_row(run, epoch, batches, settings.max_norm), flush=True)

    record_epochs: list[int] = []
    run = module.train(digits, weights, batches, settings, Monitor(batch=on_batch, epoch=on_epoch))
    progress.clear()
    run.import_seconds = import_seconds
    return run


def _epoch_row(run: Run, epoch: int, batches: list[list[np.ndarray]], max_norm: float) -> str:
    end = sum(len(epoch_batches) for epoch_batches in batches[: epoch + 1])
    begin = end - len(batches[epoch])
    norms = np.asarray(run.grad_norm[begin:end], dtype=np.float64)
    clipped = float(np.mean(norms > max_norm)) if norms.size else math.nan
    mean_norm = float(np.mean(norms)) if norms.size else math.nan
    lr = run.lr[end - 1] if len(run.lr) >= end else math.nan
    return (
        f"{epoch + 1:>5}  {run.loss[epoch]:>8.4f}  {run.test_accuracy[epoch]:>8.4f}  "
        f"{lr:>10.3e}  {mean_norm:>9.4f}  {clipped:>7.1%}"
    )


class _Progress:
    """A one-line progress bar on stderr, redrawn in place with a carriage return."""

    WIDTH = 30

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.length = 0

    def show(self, label: str, epoch: int, epochs: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * done // total
        line = f"{label} epoch {epoch}/{epochs} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}"
        sys.stderr.write("\r" + line.ljust(self.length))
        sys.stderr.flush()
        self.length = len(line)

    def clear(self) -> None:
        if not self.enabled or not self.length:
            return
        sys.stderr.write("\r" + " " * self.length + "\r")
        sys.stderr.flush()
        self.length = 0


# Results ----------------------------------------------------------------------------------------


def _compare(runs: dict[str, Run], schedule: Schedule) -> dict[str, Any]:
    """Compare the applied learning-rate sequences pairwise and each with the schedule itself."""
    lengths = {name: len(run.lr) for name, run in runs.items()}
    to_schedule = {}
    for name, run in runs.items():
        expected = np.asarray(schedule(np.arange(len(run.lr), dtype=np.int64)), dtype=np.float64)
        applied = np.asarray(run.lr, dtype=np.float64)
        to_schedule[name] = float(np.max(np.abs(applied - expected))) if applied.size else 0.0

    if len(runs) < 2:
        difference = None
    elif len(set(lengths.values())) > 1:
        difference = math.inf
    else:
        sequences = [np.asarray(run.lr, dtype=np.float64) for run in runs.values()]
        difference = max(
            float(np.max(np.abs(first - second), initial=0.0))
            for index, first in enumerate(sequences)
            for second in sequences[index + 1 :]
        )

    # Relative above a learning rate of 1, because float32 rounding grows with the value.
    largest = max((float(np.max(np.abs(run.lr))) for run in runs.values() if run.lr), default=0.0)
    tolerance = LR_TOLERANCE * max(1.0, largest)
    return {
        "max_lr_difference": difference,
        "tolerance": tolerance,
        "agree": difference is None or bool(difference <= tolerance),
        "lr_difference_to_schedule": to_schedule,
        "updates": lengths,
    }


def _print_summary(runs: dict[str, Run], comparison: dict[str, Any], settings: Settings) -> None:
    print()
    print("summary")
    print(f"{'framework':<10}  {'test acc':>8}  {'train s':>7}  {'import s':>8}  {'lr vs schedule':>14}")
    for name, run in runs.items():
        accuracy = run.test_accuracy[-1] if run.test_accuracy else math.nan
        print(
            f"{name:<10}  {accuracy:>8.4f}  {run.seconds:>7.2f}  {run.import_seconds:>8.2f}  "
            f"{comparison['lr_difference_to_schedule'][name]:>14.3g}"
        )

    difference = comparison["max_lr_difference"]
    if difference is None:
        print("max learning-rate difference between frameworks: n/a (only one framework ran)")
    elif math.isinf(difference):
        counts = ", ".join(f"{name} {count}" for name, count in comparison["updates"].items())
        print(f"max learning-rate difference between frameworks: the update counts differ ({counts})")
    else:
        verdict = "agree" if comparison["agree"] else "DISAGREE"
        print(
            f"max learning-rate difference between frameworks: {difference:.3g} over "
            f"{next(iter(comparison['updates'].values()))} updates ({verdict} within {comparison['tolerance']:.3g})"
        )

    for name, run in runs.items():
        suggestion = _suggest_max_norm(run)
        if suggestion is not None:
            print(
                f"optstrat.clipping.suggest_max_norm of the {name} norm history: {suggestion:.4g} "
                f"(this run clipped at {settings.max_norm:g})"
            )


def _suggest_max_norm(run: Run) -> float | None:
    return suggest_max_norm(run.grad_norm) if run.grad_norm else None


def _run_summary(run: Run, max_norm: float, to_schedule: float) -> dict[str, Any]:
    norms = np.asarray(run.grad_norm, dtype=np.float64)
    return {
        "test_accuracy": run.test_accuracy[-1] if run.test_accuracy else None,
        "test_accuracy_per_epoch": run.test_accuracy,
        "loss_per_epoch": run.loss,
        "lr": run.lr,
        "grad_norm": run.grad_norm,
        "clipped_fraction": float(np.mean(norms > max_norm)) if norms.size else None,
        "suggested_max_norm": _suggest_max_norm(run),
        "lr_difference_to_schedule": to_schedule,
        "seconds": run.seconds,
        "import_seconds": run.import_seconds,
        "detail": run.detail,
    }


def _write_json(
    path: str, runs: dict[str, Run], comparison: dict[str, Any], settings: Settings, keras_backend: str | None
) -> None:
    difference = comparison["max_lr_difference"]
    document = {
        "frameworks": {
            name: _run_summary(run, settings.max_norm, comparison["lr_difference_to_schedule"][name])
            for name, run in runs.items()
        },
        # JSON has no infinity, so update counts that differ are written as null, like a single framework.
        "max_lr_difference": None if difference is None or math.isinf(difference) else difference,
        "settings": {
            "policy": optstrat.to_spec(settings.schedule),
            "schedule": settings.schedule.to_config(),
            "max_norm": settings.max_norm,
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "momentum": settings.momentum,
            "seed": settings.seed,
            "keras_backend": keras_backend,
        },
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1)
        file.write("\n")


def _write_plot(path: str, runs: dict[str, Run], settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (lr_axes, norm_axes) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    # Decreasing widths and dashes keep every framework visible where the curves coincide.
    styles = [("-", 4.0), ("--", 2.5), (":", 1.5)]
    try:
        for index, (name, run) in enumerate(runs.items()):
            line, width = styles[index % len(styles)]
            lr_axes.plot(np.arange(len(run.lr)), run.lr, line, linewidth=width, label=name)
            norm_axes.plot(np.arange(len(run.grad_norm)), run.grad_norm, line, linewidth=width / 2, label=name)
        norm_axes.axhline(settings.max_norm, color="black", linewidth=1, label=f"max_norm {settings.max_norm:g}")
        lr_axes.set_ylabel("learning rate")
        lr_axes.set_title(optstrat.to_spec(settings.schedule), fontsize=8)
        norm_axes.set_ylabel("global L2 norm before clipping")
        norm_axes.set_xlabel("optimizer update")
        for axes in (lr_axes, norm_axes):
            axes.grid(alpha=0.3)
            axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)

