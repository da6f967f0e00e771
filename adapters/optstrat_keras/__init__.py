"""optstrat for Keras 3: schedules, gradient clipping and logging on every Keras backend.

- :class:`KerasSchedule` turns any optstrat schedule into a
  ``keras.optimizers.schedules.LearningRateSchedule`` that saves into
  ``.keras`` files.
- :class:`ClippedOptimizer` wraps a Keras optimizer and clips its gradients
  with any optstrat clipper inside ``model.fit``.
- :class:`TrainingLogger` is a callback that records the learning rate and
  the gradient norm of every batch and epoch.

Each runs on the TensorFlow, JAX and PyTorch backends. Keras picks one when it
is first imported, from the ``KERAS_BACKEND`` environment variable.
"""

from optstrat_keras._callbacks import TrainingLogger
from optstrat_keras._optimizer import ClippedOptimizer
from optstrat_keras._schedule import KerasSchedule

__all__ = ["ClippedOptimizer", "KerasSchedule", "TrainingLogger"]
