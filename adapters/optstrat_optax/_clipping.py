"""optstrat clippers as Optax gradient transformations."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optstrat.clipping import DEFAULT_NONFINITE, ClipByGlobalNorm, ClipInfo, Clipper, global_norm
from optstrat.clipping._base import (
    apply_factors,
    as_threshold,
    check_state_namespace,
    factor_to_limit,
    make_info,
    raise_if_nonfinite,
)
from optstrat.clipping._global import LimitClipper
from optstrat.clipping._norms import l2_norm_and_finite, safe_sqrt

__all__ = ["ClipState", "clip", "clip_by_global_norm", "last_clip_info"]


class ClipState(NamedTuple):
    """The Optax state of an optstrat clipper.

    ``clipper_state`` is the clipper's own state (an empty NamedTuple for the
    stateless kinds). ``info`` is the :class:`optstrat.ClipInfo` of the latest
    update: ``info.norm`` is the global L2 norm of the gradients before
    clipping. Right after ``init`` it contains norm 0, scale 1, finite True and
    clipped False.
    """

    clipper_state: Any
    info: ClipInfo


def clip(clipper: Clipper) -> optax.GradientTransformation:
    """Wrap an optstrat clipper as an ``optax.GradientTransformation``.

    The transformation flattens the updates with ``jax.tree_util``, calls
    ``clipper.update(leaves, state, param_leaves)`` and rebuilds the pytree.
    ``params``, when given, must have the same tree structure as the updates.
    The adaptive clippers need them. The state is a :class:`ClipState`, so the
    pre-clip norm can be logged from the optimizer state with
    :func:`last_clip_info`. Everything runs under ``jax.jit`` and ``jax.vmap``.
    ClipByGlobalNorm with the L2 norm, ZClip and AutoClip on float16,
    bfloat16 and float32 leaves (without 64-bit mode) take a path that reads
    the gradients once when nothing is clipped and gives the core's result.

    A non-finite gradient under the default policy ``nonfinite="skip"``
    becomes zeros, but an optimizer chained after ``clip`` still counts the
    update and decays its moments. Wrap the optimizer with
    :func:`optstrat_optax.skip_nonfinite` to skip such updates whole.
    ``nonfinite="error"`` raises only outside ``jit``, and under ``jit`` it acts
    like "skip".

    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optstrat_optax import clip, last_clip_info
    >>> optimizer = optax.chain(clip(ClipByGlobalNorm(max_norm=1.0)), optax.sgd(learning_rate=0.1))
    >>> params = {"w": jnp.zeros(2)}
    >>> state = optimizer.init(params)
    >>> updates, state = optimizer.update({"w": jnp.array([3.0, 4.0])}, state, params)
    >>> updates["w"].tolist(), float(last_clip_info(state).norm)
    ([-0.06000000238418579, -0.08000000566244125], 5.0)
    """
    if not isinstance(clipper, Clipper):
        raise TypeError(
            "clipper must be an optstrat clipper (a subclass of optstrat.clipping.Clipper), "
            f"got {clipper!r} ({type(clipper).__name__})"
        )

    def init_fn(params: Any) -> ClipState:
        leaves = leaves_of(params)
        clipper_state = clipper.init(leaves)
        return ClipState(clipper_state=clipper_state, info=initial_info(clipper, leaves, clipper_state))

    def update_fn(updates: Any, state: ClipState, params: Any = None) -> tuple[Any, ClipState]:
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        param_leaves = flatten_params(params, treedef)
        clipped, clipper_state, info = clip_leaves(clipper, _as_jax(leaves), state.clipper_state, param_leaves)
        return jax.tree_util.tree_unflatten(treedef, clipped), ClipState(clipper_state=clipper_state, info=info)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(
    max_norm: float, norm_type: float | str = 2.0, nonfinite: str = DEFAULT_NONFINITE
) -> optax.GradientTransformation:
    """Clip the updates to a global ``norm_type``-norm of at most ``max_norm``.

    scale = min(1, max_norm / norm), applied to every leaf. Shorthand for
    ``clip(ClipByGlobalNorm(max_norm, norm_type, nonfinite))``.

    Reproduces ``optax.clip_by_global_norm(max_norm)`` up to float32 rounding.
    Unlike optax, zero gradients with ``max_norm=0`` stay zero (optax gives
    NaN), the norm is accumulated without overflow for large float32 and
    float16 values, and the pre-clip norm is kept in the state
    (:func:`last_clip_info`). ``max_norm`` is a Python number fixed when
    built, so ``optax.inject_hyperparams`` cannot inject it (the clipper
    raises TypeError for an array).

    >>> import jax.numpy as jnp
    >>> from optstrat_optax import clip_by_global_norm
    >>> transform = clip_by_global_norm(1.0)
    >>> grads = [jnp.array([3.0, 4.0])]
    >>> clipped, _ = transform.update(grads, transform.init(grads))
    >>> clipped[0].tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    return clip(ClipByGlobalNorm(max_norm=max_norm, norm_type=norm_type, nonfinite=nonfinite))


def last_clip_info(opt_state: Any) -> ClipInfo:
    """Return the :class:`optstrat.ClipInfo` of the latest update from an Optax state.

    ``opt_state`` is the state of any optimizer that contains one transformation
    from :func:`clip`, :func:`clip_by_global_norm` or :func:`skip_nonfinite`,
    at any depth (``optax.chain``, ``optax.inject_hyperparams`` and other
    wrappers whose states are pytrees). It raises ValueError when the state
    contains none or several. Read ``ClipState.info`` directly in that case.

    >>> import jax.numpy as jnp
    >>> from optstrat_optax import clip_by_global_norm, last_clip_info
    >>> state = clip_by_global_norm(1.0).init([jnp.zeros(2)])
    >>> float(last_clip_info(state).norm)
    0.0
    """
    nodes = jax.tree_util.tree_leaves(opt_state, is_leaf=lambda node: isinstance(node, ClipState))
    found = [node for node in nodes if isinstance(node, ClipState)]
    if not found:
        raise ValueError(
            "opt_state contains no optstrat clipping state. Build the optimizer with "
            "optstrat_optax.clip, clip_by_global_norm or skip_nonfinite"
        )
    if len(found) > 1:
        raise ValueError(
            f"opt_state contains {len(found)} optstrat clipping states, so the latest ClipInfo is ambiguous. "
            "Read the info field of the ClipState you need"
        )
    return found[0].info


def clip_leaves(clipper: Clipper | None, leaves: list[Any], clipper_state: Any, param_leaves: Any) -> tuple:
    """Clip a flat list of JAX arrays, or only measure their global L2 norm when ``clipper`` is None."""
    if clipper is None:
        norm = jnp.asarray(global_norm(leaves))
        info = ClipInfo(
            norm=norm,
            scale=jnp.ones_like(norm),
            finite=jnp.isfinite(norm),
            clipped=jnp.zeros((), dtype=bool),
        )
        return leaves, clipper_state, info
    if _takes_fast_path(clipper, leaves):
        return _clip_by_global_l2_fast(clipper, leaves, clipper_state)
    # NOTE: the per-tensor kinds (ClipByNorm, ClipByValue, AdaptiveClip) take the portable core
    # here, which takes several times as long as optax.clip_by_global_norm on large models.
    clipped, clipper_state, info = clipper.update(leaves, clipper_state, param_leaves)
    # The core returns NumPy values for an empty pytree, but the state must contain JAX arrays.
    return list(clipped), clipper_state, ClipInfo(*(jnp.asarray(field) for field in info))


def _takes_fast_path(clipper: Clipper, leaves: list[Any]) -> bool:
    """Tell whether ``clipper`` scales by the global L2 norm, and ``leaves`` are float16, bfloat16 or float32.

    Such clippers are ClipByGlobalNorm with the L2 norm and the LimitClipper
    kinds (ZClip, AutoClip). With 64-bit mode on, the core sums squares in
    float64 instead, and it decides.
    """
    by_global_l2 = (type(clipper) is ClipByGlobalNorm and clipper.norm_type == 2.0) or isinstance(
        clipper, LimitClipper
    )
    return (
        by_global_l2
        and bool(leaves)
        and not jax.config.jax_enable_x64
        and all(leaf.dtype in (jnp.float16, jnp.bfloat16, jnp.float32) for leaf in leaves)
    )


def _clip_by_global_l2_fast(
    clipper: ClipByGlobalNorm | LimitClipper, leaves: list[Any], clipper_state: Any
) -> tuple[list[Any], Any, ClipInfo]:
    """Clip as ``clipper.update`` does, reading the gradients once when no clipping is needed.

    Returns the clipped leaves, the clipper's new state and the ClipInfo. A
    LimitClipper's limit and new state come from its ``limit_for``; the
    limit of ClipByGlobalNorm is ``max_norm``.

    Without 64-bit mode the core multiplies every value by a power of two
    chosen from the largest magnitude before squaring, which costs a pass of
    its own. That factor is 1 for gradients whose squares and their float32
    sum neither overflow nor underflow, and then the plain sum of squares
    below is the same computation. ``jax.lax.cond`` runs the core's
    measurement only when the sum is not finite or is too small to rule out
    lost terms. Each lost term is below 2**-126, so a sum of at least
    count * 2**-86 is off by less than 2**-40. A second ``cond`` skips the
    multiply when nothing is clipped. Neither waits for the host.
    """
    count = sum(leaf.size for leaf in leaves)
    total = sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves)
    trusted = jnp.isfinite(total) & (total >= count * 2.0**-86)
    norm, finite = jax.lax.cond(
        trusted,
        lambda: (safe_sqrt(jnp, total), jnp.ones((), dtype=bool)),
        lambda: l2_norm_and_finite(leaves, jnp),
    )
    raise_if_nonfinite(finite, norm, clipper.nonfinite)

    if isinstance(clipper, LimitClipper):
        check_state_namespace(jnp, clipper.check_state(clipper_state), leaves)
        limit, clipper_state = clipper.limit_for(jnp, norm, finite, clipper_state)
    else:
        limit = as_threshold(jnp, clipper.max_norm, norm)
    factor = factor_to_limit(jnp, norm, limit)
    fallback = jnp.ones_like(factor) if clipper.nonfinite == "propagate" else jnp.zeros_like(factor)
    scale = jnp.where(finite, factor, fallback)
    clipped = jax.lax.cond(
        (scale < 1) | ~finite,
        lambda: apply_factors(jnp, leaves, [scale] * len(leaves), finite, clipper.nonfinite),
        lambda: list(leaves),
    )
    return clipped, clipper_state, make_info(jnp, norm, scale, finite, scale < 1)


def initial_info(clipper: Clipper | None, leaves: list[Any], clipper_state: Any) -> ClipInfo:
    """Return the ClipInfo stored at init, with the dtypes and shapes that ``update`` produces.

    The shapes come from ``jax.eval_shape``, which traces the clipper without
    computing anything, so the state keeps one structure from init on (as
    ``lax.scan`` and ``optax.MultiSteps`` require).
    """
    shapes = jax.eval_shape(lambda grads: clip_leaves(clipper, grads, clipper_state, grads)[2], leaves)
    return ClipInfo(
        norm=jnp.zeros(shapes.norm.shape, shapes.norm.dtype),
        scale=jnp.ones(shapes.scale.shape, shapes.scale.dtype),
        finite=jnp.ones(shapes.finite.shape, shapes.finite.dtype),
        clipped=jnp.zeros(shapes.clipped.shape, shapes.clipped.dtype),
    )


def flatten_params(params: Any, treedef: Any) -> list[Any] | None:
    """Return the leaves of ``params`` in the order of ``treedef``, or None when there are no params."""
    if params is None:
        return None
    leaves, params_treedef = jax.tree_util.tree_flatten(params)
    if params_treedef != treedef:
        raise ValueError(
            "params must have the same tree structure as the updates, "
            f"got {params_treedef} for params and {treedef} for updates"
        )
    return _as_jax(leaves)


def leaves_of(tree: Any) -> list[Any]:
    """Return the leaves of a pytree as JAX arrays."""
    return _as_jax(jax.tree_util.tree_leaves(tree))


def _as_jax(leaves: list[Any]) -> list[Any]:
    # NumPy arrays and Python numbers as leaves would give the core a second namespace.
    return [jnp.asarray(leaf) for leaf in leaves]
