"""Optax adapter for optstrat: schedules as learning rates, clippers as gradient transformations.

Schedules need no wrapper: an optstrat schedule evaluates on the int32 step
count that Optax passes (also a tracer under ``jax.jit`` and ``jax.vmap``), so
it goes straight into any optimizer, ``optax.sgd(learning_rate=schedule)``, or
into ``optax.inject_hyperparams``. :func:`clip` turns any optstrat clipper into
an ``optax.GradientTransformation`` whose state keeps the pre-clip norm
(:func:`last_clip_info`), and :func:`skip_nonfinite` skips whole updates on
non-finite gradients.

>>> import jax.numpy as jnp
>>> import optax
>>> from optstrat_optax import clip_by_global_norm
>>> schedule = WarmupCosine(peak_value=0.1, warmup_steps=2, decay_steps=10)
>>> optimizer = optax.chain(clip_by_global_norm(1.0), optax.sgd(learning_rate=schedule))
>>> state = optimizer.init(jnp.zeros(2))
>>> updates, state = optimizer.update(jnp.ones(2), state)
>>> updates.tolist()  # schedule(0) is 0 at the start of the warmup
[-0.0, -0.0]
"""

from optstrat_optax._clipping import ClipState, clip, clip_by_global_norm, last_clip_info
from optstrat_optax._skip import SkipNonfiniteState, skip_nonfinite

__all__ = [
    "ClipState",
    "SkipNonfiniteState",
    "clip",
    "clip_by_global_norm",
    "last_clip_info",
    "skip_nonfinite",
]
