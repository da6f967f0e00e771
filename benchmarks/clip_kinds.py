"""Time every optstrat clipper against the framework's own global-norm clipping, on the same gradients.

For each clipper kind, the median time of one clipping call on float32
gradients shaped like torchvision's ResNet-50 (161 tensors, 25,557,032
values), next to the framework's ``clip_grad_norm_`` (torch) or
``optax.clip_by_global_norm`` (JAX under ``jax.jit``) in the same run:

* torch on the CPU: ``optstrat_torch.clip_`` with the clipper, its state
  carried from call to call;
* JAX on the CPU: ``optstrat_optax.clip`` with the clipper, jitted.

The thresholds are set so that nothing is clipped, so every call gets the
same values. The ratio is optstrat / framework. ClipByGlobalNorm, ZClip and
AutoClip take the adapters' fast paths; the per-tensor kinds take the
portable core.

Usage::

    python benchmarks/clip_kinds.py
    python benchmarks/clip_kinds.py --quick   # 12 tensors, 1 repeat: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip import QUICK_TENSORS, QUICK_VALUES, make_gradients, parameters_with_grads, resnet50_shapes, subset  # noqa: E402


def clippers():
    """Return the clipper of each kind, with thresholds that clip nothing on these gradients."""
    import optstrat as ops

    return {
        "clip_by_global_norm": ops.ClipByGlobalNorm(max_norm=1e9),
        "zclip": ops.ZClip(),
        "autoclip": ops.AutoClip(percentile=100.0, history_size=100),
        "clip_by_norm": ops.ClipByNorm(max_norm=1e9),
        "clip_by_value": ops.ClipByValue(max_value=1e9),
        "adaptive_clip": ops.AdaptiveClip(clipping=1e9),
    }


def time_torch(grads, repeats: int) -> dict[str, float]:
    import torch

    import optstrat_torch

    pristine = [torch.from_numpy(grad) for grad in grads]
    params = parameters_with_grads(pristine)
    calls = {"framework": lambda state: (torch.nn.utils.clip_grad_norm_(params, 1e9, foreach=True), state)[1]}
    for name, clipper in clippers().items():
        calls[name] = lambda state, clipper=clipper: optstrat_torch.clip_(params, clipper, state)[0]
    return _median_times(calls, repeats)


def time_jax(grads, repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    import optax

    import optstrat_optax

    leaves = [jnp.asarray(grad) for grad in grads]
    transforms = {"framework": optax.clip_by_global_norm(1e9)}
    transforms.update({name: optstrat_optax.clip(clipper) for name, clipper in clippers().items()})
    calls = {}
    for name, transform in transforms.items():
        update = jax.jit(transform.update)
        state = transform.init(leaves)
        jax.block_until_ready(update(leaves, state, leaves))

        def call(state, update=update, initial=state):
            return jax.block_until_ready(update(leaves, initial if state is None else state, leaves))[1]

        calls[name] = call
    return _median_times(calls, repeats)


def _median_times(calls, repeats: int) -> dict[str, float]:
    """Call each function ``repeats`` times, alternating between them; return median milliseconds."""
    states = {name: None for name in calls}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            states[name] = call(states[name])
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"time at most {QUICK_TENSORS} tensors and {QUICK_VALUES:,} values, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per clipper (default 9, 1 with --quick)")
    parser.add_argument("--frameworks", nargs="+", choices=("torch", "jax"), default=["torch", "jax"], help="frameworks to time")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 9
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")

    shapes = resnet50_shapes()
    if args.quick:
        shapes = subset(shapes, QUICK_VALUES, QUICK_TENSORS)
    grads = make_gradients(shapes, seed=0)
    print("| framework | clipper | optstrat ms | framework ms | ratio |")
    print("|---|---|---|---|---|")
    for framework in args.frameworks:
        times = (time_torch if framework == "torch" else time_jax)(grads, args.repeats)
        reference = times.pop("framework")
        for name, milliseconds in times.items():
            print(f"| {framework} | {name} | {milliseconds:.1f} | {reference:.1f} | {milliseconds / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
