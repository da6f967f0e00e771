"""The demo in Optax on JAX: the schedule as the learning rate and ``optstrat_optax.clip_by_global_norm``.

The optimizer is ``optax.inject_hyperparams(optax.sgd)`` with the schedule as
its learning rate, so its state contains the learning rate of the latest
update. One jitted function computes the loss, the gradients and the update.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optstrat_optax
from optstrat.demo._data import Digits, Monitor, Run, Settings

__all__ = ["describe", "train"]


def describe() -> str:
    """Return the framework, its version and the optstrat objects used, in one line."""
    return (
        f"Optax {optax.__version__} on JAX {jax.__version__}, inject_hyperparams(sgd) with the schedule "
        "as learning rate + optstrat_optax.clip_by_global_norm, under jax.jit"
    )


def train(
    digits: Digits,
    weights: dict[str, np.ndarray],
    batches: list[list[np.ndarray]],
    settings: Settings,
    monitor: Monitor,
) -> Run:
    """Train the MLP with Optax and return the record of the run."""
    run = Run("optax", detail=f"optax {optax.__version__}, jax {jax.__version__}")
    started = time.perf_counter()

    params = {name: jnp.asarray(value) for name, value in weights.items()}
    optimizer = optax.chain(
        optstrat_optax.clip_by_global_norm(settings.max_norm),
        optax.inject_hyperparams(optax.sgd)(learning_rate=settings.schedule, momentum=settings.momentum),
    )
    # Everything outside the two jitted functions stays in NumPy: each eager JAX operation
    # would compile a program of its own.
    opt_state = jax.jit(optimizer.init)(params)
    update = _make_update(optimizer)
    predict = jax.jit(_logits)

    for epoch, epoch_batches in enumerate(batches):
        # Device arrays, fetched once per epoch so that the loop does not wait on every update.
        losses, lrs, norms = [], [], []
        for done, indices in enumerate(epoch_batches, start=1):
            x, y, mask = _padded_batch(digits, indices, settings.batch_size)
            params, opt_state, loss, lr, norm = update(params, opt_state, x, y, mask)
            losses.append(loss)
            lrs.append(lr)
            norms.append(norm)
            monitor.batch(done, len(epoch_batches))

        losses, lrs, norms = jax.device_get((losses, lrs, norms))
        run.lr.extend(float(lr) for lr in lrs)
        run.grad_norm.extend(float(norm) for norm in norms)
        sizes = [len(indices) for indices in epoch_batches]
        run.loss.append(float(np.dot(losses, sizes)) / len(digits.y_train))
        predicted = np.argmax(np.asarray(predict(params, digits.x_test)), axis=1)
        run.test_accuracy.append(float(np.mean(predicted == digits.y_test)))
        monitor.epoch(run, epoch)

    run.seconds = time.perf_counter() - started
    return run


def _logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["kernel1"] + params["bias1"])
    return hidden @ params["kernel2"] + params["bias2"]


def _loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    losses = optax.softmax_cross_entropy_with_integer_labels(_logits(params, x), y)
    return jnp.sum(losses * mask) / jnp.sum(mask)


def _padded_batch(digits: Digits, indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    """Return the batch padded to ``batch_size`` rows and a mask that is 1 on the real rows.

    The padded rows get weight 0 in the loss, so the gradient is the mean over
    the real rows, and every batch has one shape: the update compiles once.
    """
    padding = batch_size - len(indices)
    x = np.pad(digits.x_train[indices], ((0, padding), (0, 0)))
    y = np.pad(digits.y_train[indices], (0, padding))
    mask = np.pad(np.ones(len(indices), dtype=np.float32), (0, padding))
    return x, y, mask


def _make_update(optimizer: optax.GradientTransformation) -> Any:
    @jax.jit
    def update(params: Any, opt_state: Any, x: Any, y: Any, mask: Any) -> tuple[Any, Any, Any, Any, Any]:
        loss, grads = jax.value_and_grad(_loss)(params, x, y, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

        # After an update, the inject_hyperparams state contains the learning rate that this update used.
        lr = opt_state[1].hyperparams["learning_rate"]
        norm = optstrat_optax.last_clip_info(opt_state).norm
        return params, opt_state, loss, lr, norm

    return update
