"""ClippedOptimizer: a Keras optimizer wrapper that clips gradients with any optstrat clipper."""

from __future__ import annotations

from typing import Any

import keras

import optstrat
from optstrat.clipping import Clipper
from optstrat_keras._schedule import tensorflow_namespace

__all__ = ["ClippedOptimizer"]

_KERAS_CLIP_ARGUMENTS = ("clipnorm", "clipvalue", "global_clipnorm")


@keras.saving.register_keras_serializable(package="optstrat")
class ClippedOptimizer(keras.optimizers.Optimizer):
    """Clip gradients with an optstrat clipper, then apply them with an inner Keras optimizer.

    On every ``apply`` (once per batch in ``model.fit``) the wrapper passes the
    gradients as a flat list to ``clipper.update``, records what the clipper
    measured, and hands the clipped gradients to ``optimizer``. It works on the
    TensorFlow, JAX and PyTorch backends, inside ``tf.function``, XLA and
    ``jax.jit``, like ``keras.optimizers.LossScaleOptimizer``, which wraps an
    inner optimizer in the same way.

    ``ClippedOptimizer(optimizer, ClipByGlobalNorm(max_norm=c))`` reproduces
    ``optimizer`` built with ``global_clipnorm=c``. Keras scales by
    ``c * min(1 / norm, 1 / c)``, which equals the clipper's
    ``min(1, c / norm)`` up to float32 rounding. For NaN or infinite gradients
    Keras makes every gradient NaN, while the wrapper follows the clipper's
    ``nonfinite`` policy.

    Non-finite gradients follow the clipper's ``nonfinite`` policy. With
    ``"skip"`` (the default), a step with NaN or infinity is skipped whole.
    The weights, the inner optimizer's moments and ``iterations`` stay as they
    were, so the learning-rate schedule does not advance, and ``skip_count``
    grows by one. ``"error"`` raises
    ``optstrat.clipping.NonFiniteGradientError`` when the step runs eagerly
    (``model.fit`` on PyTorch, or ``run_eagerly=True``) and skips like
    ``"skip"`` under ``tf.function`` and ``jax.jit``. ``"propagate"`` applies
    the update as it is.

    Non-trainable variables, updated on every step and read by
    :class:`TrainingLogger` or any callback:

    - ``grad_norm``: the global L2 norm of the gradients before clipping.
    - ``clip_scale``: the scale the clipper applied (1 when nothing was clipped).
    - ``clipped``: whether the step applied clipped gradients.
    - ``finite``: whether every gradient was finite.
    - ``applied_learning_rate``: the learning rate the inner optimizer used.
    - ``step_count``, ``clip_count``, ``skip_count``: the number of steps
      seen, clipped and skipped.

    The clipper's state (for the stateful clippers) is kept in optimizer
    variables too, so it is saved and restored with the model.

    Raises ValueError when ``optimizer`` already clips (``clipnorm``,
    ``clipvalue`` or ``global_clipnorm`` is set), because the gradients would
    be clipped twice. Raises ValueError when it accumulates gradients
    (``gradient_accumulation_steps``), because the clipper would then clip
    each micro-batch gradient instead of their average. Raises ValueError
    when it is a ``LossScaleOptimizer``: wrap the other way round,
    ``LossScaleOptimizer(ClippedOptimizer(...))``, so that the clipper gets
    unscaled gradients. A ``loss_scale_factor`` set on ``optimizer`` moves to
    the wrapper, which unscales before clipping.

    On the TensorFlow backend only the default distribution strategy is
    supported, because under ``tf.distribute`` each replica would clip its
    local gradients before they are summed.

    >>> import keras
    >>> from optstrat_keras import ClippedOptimizer
    >>> optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.5), ClipByGlobalNorm(max_norm=1.0))
    >>> weights = keras.Variable([1.0, 1.0])
    >>> optimizer.apply([keras.ops.convert_to_tensor([3.0, 4.0])], [weights])
    >>> [round(float(value), 6) for value in keras.ops.unstack(weights)]
    [0.7, 0.6]
    >>> float(optimizer.grad_norm.value)
    5.0
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        clipper: Clipper | dict[str, Any],
        *,
        loss_scale_factor: float | None = None,
        name: str | None = None,
    ) -> None:
        _check_inner_optimizer(optimizer)
        clipper = _check_clipper(clipper)
        if optimizer.loss_scale_factor is not None:
            if loss_scale_factor is not None:
                raise ValueError(
                    "loss_scale_factor is set both on the inner optimizer "
                    f"({optimizer.loss_scale_factor!r}) and on ClippedOptimizer ({loss_scale_factor!r}). "
                    "Set it on one of them"
                )
            loss_scale_factor = optimizer.loss_scale_factor

        super().__init__(learning_rate=0.0, loss_scale_factor=loss_scale_factor, name=name)
        self.inner_optimizer = optimizer
        self.clipper = clipper
        # The wrapper unscales before clipping, so the inner optimizer must not unscale again.
        self.inner_optimizer.loss_scale_factor = None

    def build(self, var_list: list[Any]) -> None:
        self.grad_norm = self.add_variable(shape=(), dtype="float32", name="grad_norm")
        self.clip_scale = self.add_variable(shape=(), dtype="float32", initializer="ones", name="clip_scale")
        self.clipped = self.add_variable(shape=(), dtype="bool", name="clipped")
        self.finite = self.add_variable(shape=(), dtype="bool", initializer="ones", name="finite")
        self.applied_learning_rate = self.add_variable(shape=(), dtype="float32", name="applied_learning_rate")
        self.step_count = self.add_variable(shape=(), dtype="int", name="step_count")
        self.clip_count = self.add_variable(shape=(), dtype="int", name="clip_count")
        self.skip_count = self.add_variable(shape=(), dtype="int", name="skip_count")
        self._build_clipper_state(var_list)
        if not self.inner_optimizer.built:
            self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _build_clipper_state(self, var_list: list[Any]) -> None:
        zeros = [keras.ops.zeros(variable.shape, dtype=variable.dtype) for variable in var_list]
        state = _from_core(self.clipper.init(_to_core(zeros)))
        leaves = [keras.ops.convert_to_tensor(leaf) for leaf in keras.tree.flatten(state)]
        # The structure is kept with placeholder leaves, because the values live in the variables.
        self._state_template = keras.tree.pack_sequence_as(state, [0] * len(leaves))
        self._state_variables = []
        for index, leaf in enumerate(leaves):
            variable = self.add_variable(
                shape=tuple(leaf.shape),
                dtype=keras.backend.standardize_dtype(leaf.dtype),
                name=f"clipper_state_{index}",
            )
            # A copy, because init may return one array for two fields and JAX must not donate it twice.
            variable.assign(keras.ops.copy(leaf))
            self._state_variables.append(variable)

    @property
    def variables(self) -> list[Any]:
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> None:
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "ClippedOptimizer is not built yet, so apply needs trainable_variables. "
                    "Pass them, or call optimizer.build(trainable_variables) first"
                )
            self.build(list(trainable_variables))
        if keras.backend.backend() == "tensorflow":
            _check_distribution_strategy()

        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        grads = list(grads)
        if len(grads) != len(variables):
            raise ValueError(
                f"grads must have one entry per trainable variable, got {len(grads)} gradients "
                f"for {len(variables)} variables"
            )
        present = [index for index, grad in enumerate(grads) if grad is not None]
        if not present:
            raise ValueError("No gradients provided for any variable.")

        leaves = [grads[index] for index in present]
        if self.loss_scale_factor is not None:
            leaves = [leaf / self.loss_scale_factor for leaf in leaves]
        params = [keras.ops.convert_to_tensor(variables[index]) for index in present]
        clipped_leaves, state, info = self._clip(leaves, params)
        clipped_grads = list(grads)
        for index, leaf in zip(present, clipped_leaves):
            clipped_grads[index] = leaf

        # Read before the update, so the schedule is evaluated at the iterations the update uses.
        learning_rate = self.inner_optimizer.learning_rate

        def update() -> None:
            self.inner_optimizer.apply(clipped_grads, trainable_variables)

        skips = self.clipper.nonfinite != "propagate"
        if not skips:
            update()
        elif keras.backend.backend() == "jax":
            self._apply_unless_nonfinite(info.finite, update, variables)
        else:
            keras.ops.cond(info.finite, update, lambda: None)
        self._record(info, state, learning_rate, skips)

    def _clip(self, leaves: list[Any], params: list[Any]) -> tuple[list[Any], Any, Any]:
        state = keras.tree.pack_sequence_as(
            self._state_template, [keras.ops.convert_to_tensor(variable) for variable in self._state_variables]
        )
        if keras.backend.backend() == "tensorflow":
            namespace = tensorflow_namespace()
            update = self.clipper.update
            result = namespace.call_core(update, _to_core(leaves), _to_core(state), params=_to_core(params))
        else:
            result = self.clipper.update(leaves, state, params=params)
        clipped, state, info = _from_core(result)
        return clipped, state, info

    def _apply_unless_nonfinite(self, finite: Any, update: Any, variables: list[Any]) -> None:
        """Run ``update``, then put back every value it changed when ``finite`` is False.

        JAX traces both outcomes, so the skip is a select and not a branch, as
        Keras's JAX optimizer does for gradient accumulation.
        """
        touched = list(self.inner_optimizer.variables) + list(variables)
        before = [keras.ops.convert_to_tensor(variable) for variable in touched]
        update()
        for variable, old in zip(touched, before):
            variable.assign(keras.ops.where(finite, keras.ops.convert_to_tensor(variable), old))

    def _record(self, info: Any, state: Any, learning_rate: Any, skips: bool) -> None:
        finite = keras.ops.convert_to_tensor(info.finite)
        clipped = keras.ops.logical_and(info.clipped, finite)
        skipped = keras.ops.logical_not(finite) if skips else keras.ops.zeros((), dtype="bool")
        self.grad_norm.assign(keras.ops.cast(info.norm, "float32"))
        self.clip_scale.assign(keras.ops.cast(info.scale, "float32"))
        self.clipped.assign(clipped)
        self.finite.assign(finite)
        self.applied_learning_rate.assign(keras.ops.cast(learning_rate, "float32"))
        self.step_count.assign_add(keras.ops.ones((), dtype=self.step_count.dtype))
        self.clip_count.assign_add(keras.ops.cast(clipped, self.clip_count.dtype))
        self.skip_count.assign_add(keras.ops.cast(skipped, self.skip_count.dtype))
        for variable, value in zip(self._state_variables, keras.tree.flatten(state)):
            variable.assign(value)

    def scale_loss(self, loss: Any) -> Any:
        if self.loss_scale_factor is not None:
            return loss * self.loss_scale_factor
        return loss

    def finalize_variable_values(self, var_list: list[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "clipper": self.clipper.to_config(),
            "loss_scale_factor": self.loss_scale_factor,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> ClippedOptimizer:
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(optimizer, **config)


def _check_inner_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"optimizer must be a keras.optimizers.Optimizer, got {optimizer!r} ({type(optimizer).__name__})"
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "optimizer must not be a LossScaleOptimizer, because the clipper would see scaled "
            "gradients. Wrap the other way round: LossScaleOptimizer(ClippedOptimizer(optimizer, clipper))"
        )
    for argument in _KERAS_CLIP_ARGUMENTS:
        value = getattr(optimizer, argument)
        if value is not None:
            raise ValueError(
                f"optimizer already clips gradients ({argument}={value!r}), which conflicts with the "
                "clipper; create it without clipnorm, clipvalue and global_clipnorm"
            )
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            "optimizer accumulates gradients "
            f"(gradient_accumulation_steps={optimizer.gradient_accumulation_steps!r}), so the clipper "
            "would clip each micro-batch gradient instead of their average; create it without "
            "gradient_accumulation_steps"
        )


def _check_clipper(clipper: Any) -> Clipper:
    if isinstance(clipper, dict):
        clipper = optstrat.from_config(clipper)
    if not isinstance(clipper, Clipper):
        raise TypeError(
            f"clipper must be an optstrat clipper or its config dict, got {clipper!r} ({type(clipper).__name__})"
        )
    return clipper


def _check_distribution_strategy() -> None:
    import tensorflow as tf

    # NOTE: tf.distribute strategies are rejected, not supported. A global norm over all
    # replicas would need the clipping after the all-reduce, which the inner optimizer does.
    if tf.distribute.has_strategy():
        strategy = type(tf.distribute.get_strategy()).__name__
        raise ValueError(
            f"ClippedOptimizer supports only the default TensorFlow distribution strategy, got {strategy}. "
            "Under tf.distribute each replica would clip its local gradients before they are summed, "
            "so train without a distribution strategy"
        )


def _to_core(structure: Any) -> Any:
    """Prepare backend tensors for the core: TensorFlow tensors get the namespace tag, others pass."""
    if keras.backend.backend() != "tensorflow":
        return structure
    namespace = tensorflow_namespace()
    return keras.tree.map_structure(namespace.TensorFlowArray, structure)


def _from_core(structure: Any) -> Any:
    if keras.backend.backend() != "tensorflow":
        return structure
    namespace = tensorflow_namespace()
    return keras.tree.map_structure(namespace.unwrap, structure)
