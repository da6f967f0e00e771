"""Skipping whole optimizer updates on non-finite gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optstrat.clipping import Clipper, EmptyState
from optstrat_optax._clipping import ClipState, clip_leaves, flatten_params, initial_info, leaves_of

__all__ = ["SkipNonfiniteState", "skip_nonfinite"]


class SkipNonfiniteState(NamedTuple):
    """The state of :func:`skip_nonfinite`.

    ``inner_state`` is the wrapped optimizer's state, unchanged by skipped
    updates. ``clip_state`` is a :class:`ClipState` whose ``info`` describes
    the latest gradients (read it with :func:`last_clip_info`).
    ``skip_count`` is the number of updates skipped so far, an int32 that
    saturates at its maximum.
    """

    inner_state: Any
    clip_state: ClipState
    skip_count: jax.Array


def skip_nonfinite(
    inner: optax.GradientTransformation, clipper: Clipper | None = None
) -> optax.GradientTransformationExtraArgs:
    """Skip the whole update of ``inner`` when the gradients are not finite.

    With ``clipper``, the gradients are clipped first and ``inner`` receives
    the clipped gradients, and the clipper's verdict ``ClipInfo.finite`` decides.
    Without one, the global L2 norm is measured (as
    :func:`optstrat.global_norm` does, without overflow for finite values)
    and an update is skipped when that norm is NaN or infinite.

    A skipped update outputs zeros, leaves ``inner``'s state untouched (its
    step count, so its schedules do not advance, and its moments) and adds 1
    to ``skip_count``. The clipper's state and the ClipInfo are updated on
    every call, skipped or not, so the non-finite norm can be logged. The
    choice is made with ``jax.lax.cond``, so the wrapper runs under
    ``jax.jit`` and ``jax.vmap``. Extra keyword arguments of ``update`` are
    passed on to ``inner``.

    Place the wrapper outside the clipping: in
    ``optax.chain(clip_by_global_norm(1.0), skip_nonfinite(optax.adam(1e-3)))``
    the clipper has already replaced non-finite gradients by zeros, so nothing
    is skipped. Write ``skip_nonfinite(optax.adam(1e-3), ClipByGlobalNorm(1.0))``
    instead.

    This is ``optax.apply_if_finite(inner, max_consecutive_errors)`` with the
    decision taken on the gradients (by the clipper) rather than on the
    updates of ``inner``, and without a limit on consecutive skips.

    >>> import jax.numpy as jnp
    >>> import optax
    >>> from optstrat_optax import skip_nonfinite
    >>> optimizer = skip_nonfinite(optax.adam(learning_rate=0.1), ClipByGlobalNorm(max_norm=1.0))
    >>> params = jnp.zeros(2)
    >>> state = optimizer.init(params)
    >>> updates, state = optimizer.update(jnp.array([jnp.nan, 1.0]), state, params)
    >>> updates.tolist(), int(state.skip_count), int(state.inner_state[0].count)
    ([0.0, 0.0], 1, 0)
    """
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(f"inner must be an optax.GradientTransformation, got {inner!r} ({type(inner).__name__})")
    if clipper is not None and not isinstance(clipper, Clipper):
        raise TypeError(
            "clipper must be None or an optstrat clipper (a subclass of optstrat.clipping.Clipper), "
            f"got {clipper!r} ({type(clipper).__name__})"
        )
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: Any) -> SkipNonfiniteState:
        leaves = leaves_of(params)
        clipper_state = EmptyState() if clipper is None else clipper.init(leaves)
        return SkipNonfiniteState(
            inner_state=inner.init(params),
            clip_state=ClipState(clipper_state=clipper_state, info=initial_info(clipper, leaves, clipper_state)),
            skip_count=jnp.zeros((), dtype=jnp.int32),
        )

    def update_fn(
        updates: Any, state: SkipNonfiniteState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, SkipNonfiniteState]:
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        param_leaves = flatten_params(params, treedef)
        clipped, clipper_state, info = clip_leaves(
            clipper, [jnp.asarray(leaf) for leaf in leaves], state.clip_state.clipper_state, param_leaves
        )
        grads = jax.tree_util.tree_unflatten(treedef, clipped)

        def apply_update(inner_state: Any) -> tuple[Any, Any]:
            return inner.update(grads, inner_state, params, **extra_args)

        def skip_update(inner_state: Any) -> tuple[Any, Any]:
            # Zeros shaped like what inner would output, which may differ in dtype from the gradients.
            shapes = jax.eval_shape(apply_update, inner_state)[0]
            zeros = jax.tree_util.tree_map(lambda shape: jnp.zeros(shape.shape, shape.dtype), shapes)
            return zeros, inner_state

        new_updates, inner_state = jax.lax.cond(info.finite, apply_update, skip_update, state.inner_state)
        skip_count = jnp.where(info.finite, state.skip_count, optax.safe_increment(state.skip_count))
        return new_updates, SkipNonfiniteState(
            inner_state=inner_state,
            clip_state=ClipState(clipper_state=clipper_state, info=info),
            skip_count=skip_count,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
