"""Time clipping by global norm: optstrat against torch and optax on GPT-2-small and ResNet-50 gradients.

Cases, each when clipping is needed (max_norm = norm / 2) and when it is not
(max_norm = 2 * norm), on float32 gradients with the parameter shapes of
GPT-2 small (148 tensors, 124,439,808 values) and torchvision's ResNet-50
(161 tensors, 25,557,032 values):

* torch on the CPU: ``optstrat_torch.clip_grad_norm_`` against
  ``torch.nn.utils.clip_grad_norm_(foreach=True)``, both in place;
* JAX on the CPU, under ``jax.jit`` with the gradients donated:
  ``optstrat_optax.clip_by_global_norm`` against ``optax.clip_by_global_norm``.

Before every timed call the gradients are restored from a pristine copy
(untimed), and the implementations alternate within each repeat so that both
see the same machine load. The table gives median times and the ratio
optstrat / framework of those medians. Beside them are two memory-bandwidth
floors, measured in the same run with torch on flat float32 buffers of the
same size. The read floor is one pass (``a.sum()``), the minimum cost of a norm.
The 3-pass floor is ``torch.add(a, b, out=a)`` (read, read, write in place),
the minimum cost of a clipped update. The "norm only" column times the
framework's own norm of the same gradients without any clipping (torch's
``_foreach_norm`` that ``clip_grad_norm_`` takes, and a jitted sum of squares
for JAX), in the same loop: an implementation that skips the multiply with
the same reduction cannot be faster than that.

Usage::

    python benchmarks/clip.py                 # full sizes, 15 repeats
    python benchmarks/clip.py --quick         # 12 tensors of each model, 3 repeats (a smoke test)
    python benchmarks/clip.py --single-thread --json results.json
    python benchmarks/clip.py --models mlp-64x6 --repeats 301   # a small model

A run with ``--models mlp-64x6`` times the gradients of six 64 x 64 linear
layers (12 tensors, 24,960 values), where the time of a call is mostly fixed
costs rather than memory traffic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

MODELS = ("gpt2-small", "resnet50")
SMALL_MODELS = ("mlp-64x6",)
# --quick keeps the first tensors of each model up to these limits, which also keeps
# XLA's compile time (which grows with the number of arrays) to about a second per case.
QUICK_VALUES = 1_000_000
QUICK_TENSORS = 12


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    """Return the parameter shapes of GPT-2 small (Hugging Face layout, Conv1D weights as (in, out))."""
    width, vocabulary, positions, layers = 768, 50257, 1024, 12
    shapes = [(vocabulary, width), (positions, width)]  # wte, wpe
    for _ in range(layers):
        shapes += [
            (width,), (width,),  # ln_1 weight, bias
            (width, 3 * width), (3 * width,),  # attn.c_attn weight, bias
            (width, width), (width,),  # attn.c_proj weight, bias
            (width,), (width,),  # ln_2 weight, bias
            (width, 4 * width), (4 * width,),  # mlp.c_fc weight, bias
            (4 * width, width), (width,),  # mlp.c_proj weight, bias
        ]
    shapes += [(width,), (width,)]  # ln_f weight, bias
    return shapes


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Return the parameter shapes of torchvision's resnet50 in ``model.parameters()`` order."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]  # conv1, bn1 weight and bias
    in_channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out_channels = 4 * width
        for block in range(blocks):
            shapes += [
                (width, in_channels, 1, 1), (width,), (width,),  # conv1, bn1
                (width, width, 3, 3), (width,), (width,),  # conv2, bn2
                (out_channels, width, 1, 1), (out_channels,), (out_channels,),  # conv3, bn3
            ]
            if block == 0:
                shapes += [(out_channels, in_channels, 1, 1), (out_channels,), (out_channels,)]  # downsample
            in_channels = out_channels
    shapes += [(1000, 2048), (1000,)]  # fc weight, bias
    return shapes


def mlp_shapes() -> list[tuple[int, ...]]:
    """Return the parameter shapes of six torch.nn.Linear(64, 64) layers, a model where fixed costs per call dominate."""
    return [(64, 64), (64,)] * 6


SHAPES: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "gpt2-small": gpt2_small_shapes,
    "resnet50": resnet50_shapes,
    "mlp-64x6": mlp_shapes,
}
EXPECTED = {"gpt2-small": (148, 124_439_808), "resnet50": (161, 25_557_032), "mlp-64x6": (12, 24_960)}


def subset(shapes: list[tuple[int, ...]], values: int, tensors: int) -> list[tuple[int, ...]]:
    """Return up to ``tensors`` shapes, in order, whose sizes add up to at most ``values``, skipping larger ones."""
    chosen, total = [], 0
    for shape in shapes:
        size = math.prod(shape)
        if total + size <= values and len(chosen) < tensors:
            chosen.append(shape)
            total += size
    return chosen


def make_gradients(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-3) for shape in shapes]


def exact_norm(grads: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.dot(grad.ravel().astype(np.float64), grad.ravel().astype(np.float64))) for grad in grads))


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


# torch -----------------------------------------------------------------------------------------------


def time_torch(grads: list[np.ndarray], norm: float, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Return {case: {implementation: seconds per repeat}} for the torch clipping functions.

    Each implementation clips its own copy of the gradients in place, so no
    restore pass runs between timed calls: without clipping the gradients do
    not change, and with clipping every call halves the current norm (every
    twenty calls both copies are restored, untimed).
    """
    import torch

    import optstrat_torch

    pristine = [torch.from_numpy(grad) for grad in grads]
    functions = {
        "optstrat": lambda params, max_norm: optstrat_torch.clip_grad_norm_(params, max_norm),
        "framework": lambda params, max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
    }
    params = {name: parameters_with_grads(pristine) for name in functions}
    check_torch(params, functions, norm)

    times: dict[str, dict[str, list[float]]] = {}
    for case, max_norm in cases(norm):
        times[case] = {name: [] for name in (*functions, "norm only")}
        for name in functions:
            torch._foreach_copy_([param.grad for param in params[name]], pristine)
        current = norm
        for _ in range(repeats):
            if case == "clipping":
                if current < norm * 2.0**-20:
                    # After twenty halvings both copies start again from the original values
                    # (untimed), so that no value comes near float32's subnormal range.
                    for name in functions:
                        torch._foreach_copy_([param.grad for param in params[name]], pristine)
                    current = norm
                max_norm = current / 2
                current = max_norm
            for name, clip in functions.items():
                start = time.perf_counter()
                clip(params[name], max_norm)
                times[case][name].append(time.perf_counter() - start)
            # The norm that torch.nn.utils.clip_grad_norm_ takes, without the clipping.
            start = time.perf_counter()
            torch.linalg.vector_norm(torch.stack(torch._foreach_norm(pristine)))
            times[case]["norm only"].append(time.perf_counter() - start)
    return times


def parameters_with_grads(grads):
    import torch

    params = []
    for grad in grads:
        param = torch.nn.Parameter(torch.empty_like(grad))
        param.grad = grad.clone()
        params.append(param)
    return params


def check_torch(params, functions, norm) -> None:
    """Fail unless both implementations report the same norm and clip to the same global norm."""
    results = {}
    for name, clip in functions.items():
        reported = float(clip(params[name], norm / 2))
        after = math.sqrt(sum(float((param.grad.double() ** 2).sum()) for param in params[name]))
        results[name] = (reported, after)
    for reported, after in results.values():
        if not (math.isclose(reported, norm, rel_tol=1e-3) and math.isclose(after, norm / 2, rel_tol=1e-3)):
            raise RuntimeError(f"torch clipping check failed: {results} for norm {norm}")


def time_floors(value_count: int, repeats: int) -> dict[str, list[float]]:
    """Time one read pass and three passes (read, read, write) over ``value_count`` float32 values with torch."""
    import torch

    first = torch.ones(value_count)
    second = torch.full((value_count,), 1e-7)
    floors: dict[str, list[float]] = {"read": [], "read+read+write": []}
    for _ in range(repeats):
        start = time.perf_counter()
        first.sum()
        floors["read"].append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.add(first, second, out=first)
        floors["read+read+write"].append(time.perf_counter() - start)
    return floors


# JAX -------------------------------------------------------------------------------------------------


def time_jax(grads: list[np.ndarray], norm: float, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Return {case: {implementation: seconds per repeat}} for the jitted Optax transformations."""
    import jax
    import jax.numpy as jnp
    import optax

    import optstrat_optax

    pristine = [jnp.asarray(grad) for grad in grads]
    # The sum of squares that optax.clip_by_global_norm takes for its norm, without the clipping.
    sum_of_squares = jax.jit(lambda arrays: sum(jnp.sum(jnp.square(array)) for array in arrays))
    jax.block_until_ready(sum_of_squares(pristine))
    times: dict[str, dict[str, list[float]]] = {}
    for case, max_norm in cases(norm):
        transforms = {
            "optstrat": optstrat_optax.clip_by_global_norm(max_norm),
            "framework": optax.clip_by_global_norm(max_norm),
        }
        compiled = {}
        for name, transform in transforms.items():
            state = transform.init(pristine)
            update = jax.jit(lambda updates, state, transform=transform: transform.update(updates, state)[0], donate_argnums=0)
            clipped = jax.block_until_ready(update(fresh_copy(pristine), state))
            check_jax(name, clipped, norm, max_norm)
            compiled[name] = (update, state)
        times[case] = {name: [] for name in (*compiled, "norm only")}
        # Without clipping the output equals the donated input and is passed on; with
        # clipping each call gets a fresh copy of the original gradients (untimed).
        inputs = {name: fresh_copy(pristine) for name in compiled}
        for _ in range(repeats):
            for name, (update, state) in compiled.items():
                if case == "clipping":
                    inputs[name] = fresh_copy(pristine)
                start = time.perf_counter()
                inputs[name] = jax.block_until_ready(update(inputs[name], state))
                times[case][name].append(time.perf_counter() - start)
            start = time.perf_counter()
            jax.block_until_ready(sum_of_squares(pristine))
            times[case]["norm only"].append(time.perf_counter() - start)
    return times


def fresh_copy(arrays):
    import jax

    return jax.block_until_ready(_copy_all()(arrays))


_COPY_ALL = []


def _copy_all():
    """Return one jitted function that copies a list of arrays (a jnp.copy per array compiles per shape)."""
    if not _COPY_ALL:
        import jax
        import jax.numpy as jnp

        _COPY_ALL.append(jax.jit(lambda arrays: [jnp.copy(array) for array in arrays]))
    return _COPY_ALL[0]


def check_jax(name: str, clipped, norm: float, max_norm: float) -> None:
    after = math.sqrt(sum(float(np.sum(np.asarray(leaf, dtype=np.float64) ** 2)) for leaf in clipped))
    if not math.isclose(after, min(norm, max_norm), rel_tol=1e-3):
        raise RuntimeError(f"JAX clipping check failed for {name}: norm after clipping {after}, expected {min(norm, max_norm)}")


# Report ----------------------------------------------------------------------------------------------


def cases(norm: float) -> list[tuple[str, float]]:
    return [("clipping", norm / 2), ("no clipping", norm * 2)]


def machine_facts(single_thread: bool, load_average_start: tuple[float, float, float]) -> dict[str, object]:
    facts: dict[str, object] = {
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "single_thread": single_thread,
        "load_average_start": load_average_start,
        "load_average_end": os.getloadavg(),
    }
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import jax
        import optax

        facts["jax"] = jax.__version__
        facts["optax"] = optax.__version__
    except ImportError:
        pass
    return facts


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _rounded(values) -> tuple[float, ...]:
    return tuple(round(value, 2) for value in values)


def _milliseconds(value: float) -> str:
    # Three decimals below 1 ms, so that the small model's times are readable.
    return f"{value:.1f}" if value >= 1.0 else f"{value:.3f}"


def format_table(rows: list[dict[str, object]]) -> str:
    header = ["model", "framework", "case", "optstrat ms", "framework ms", "ratio", "norm only ms", "read floor ms", "3-pass floor ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["model"],
            row["framework"],
            row["case"],
            _milliseconds(row["optstrat_ms"]),
            _milliseconds(row["framework_ms"]),
            f"{row['ratio']:.2f}",
            _milliseconds(row["norm_only_ms"]),
            _milliseconds(row["read_floor_ms"]),
            _milliseconds(row["three_pass_floor_ms"]),
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"time at most {QUICK_TENSORS} tensors and {QUICK_VALUES:,} values per model, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per implementation and case (default 15, 3 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the facts and results as JSON to PATH")
    parser.add_argument("--single-thread", action="store_true", help="pin the process to one CPU and run torch on one thread")
    parser.add_argument("--frameworks", nargs="+", choices=("torch", "jax"), default=["torch", "jax"], help="frameworks to time")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS + SMALL_MODELS,
        default=list(MODELS),
        help="gradient shapes to time (default: %(default)s; mlp-64x6 is a small model, where fixed costs per call dominate)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Other processes on the machine change every timing, so the load is reported.
    load_average_start = os.getloadavg()
    if args.single_thread:
        # With only XLA's flags set, JAX still used both cores of a 2-core machine, so the
        # process is pinned to one CPU before jax or torch is imported.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
        import torch

        torch.set_num_threads(1)

    rows = []
    for model in args.models:
        shapes = SHAPES[model]()
        if (len(shapes), sum(math.prod(shape) for shape in shapes)) != EXPECTED[model]:
            raise RuntimeError(f"{model} shapes do not add up to {EXPECTED[model]} tensors and values")
        if args.quick:
            shapes = subset(shapes, QUICK_VALUES, QUICK_TENSORS)
        grads = make_gradients(shapes, seed=0)
        norm = exact_norm(grads)
        value_count = sum(grad.size for grad in grads)
        floors = time_floors(value_count, args.repeats)
        print(f"{model}: {len(shapes)} tensors, {value_count:,} float32 values, global norm {norm:.4f}", flush=True)

        for framework in args.frameworks:
            timer = time_torch if framework == "torch" else time_jax
            for case, times in timer(grads, norm, args.repeats).items():
                optstrat_ms = median_ms(times["optstrat"])
                framework_ms = median_ms(times["framework"])
                rows.append(
                    {
                        "model": model,
                        "framework": framework,
                        "case": case,
                        "tensors": len(shapes),
                        "values": value_count,
                        "optstrat_ms": optstrat_ms,
                        "framework_ms": framework_ms,
                        "ratio": optstrat_ms / framework_ms,
                        "norm_only_ms": median_ms(times["norm only"]),
                        "read_floor_ms": median_ms(floors["read"]),
                        "three_pass_floor_ms": median_ms(floors["read+read+write"]),
                        "optstrat_min_ms": min(times["optstrat"]) * 1e3,
                        "framework_min_ms": min(times["framework"]) * 1e3,
                    }
                )
        del grads

    facts = machine_facts(args.single_thread, load_average_start)
    facts["repeats"] = args.repeats
    facts["quick"] = args.quick
    print()
    print(f"CPU: {facts['cpu']}, {facts['cores']} cores; torch {facts.get('torch')}, jax {facts.get('jax')}, optax {facts.get('optax')}")
    print(
        f"repeats: {args.repeats}, single thread: {args.single_thread}, "
        f"load average (1, 5, 15 min) at the start: {_rounded(load_average_start)}, at the end: {_rounded(facts['load_average_end'])}"
    )
    print("framework: torch.nn.utils.clip_grad_norm_(foreach=True) for torch, optax.clip_by_global_norm for jax")
    print(format_table(rows))
    if args.quick:
        print("--quick times small subsets, where fixed per-call costs dominate: a smoke test, not a result")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as output:
            json.dump({"facts": facts, "results": rows}, output, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
