"""The demo in PyTorch: ``optstrat_torch.ScheduleLR`` and ``optstrat_torch.clip_grad_norm_``."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use; this counts that time as import time)
import torch.nn.functional as F

import optstrat_torch
from optstrat.demo._data import CLASSES, HIDDEN, INPUTS, Digits, Monitor, Run, Settings

__all__ = ["describe", "train"]


def describe() -> str:
    """Return the framework, its version and the optstrat objects used, in one line."""
    return f"PyTorch {torch.__version__}, SGD + optstrat_torch.ScheduleLR + optstrat_torch.clip_grad_norm_"


def train(
    digits: Digits,
    weights: dict[str, np.ndarray],
    batches: list[list[np.ndarray]],
    settings: Settings,
    monitor: Monitor,
) -> Run:
    """Train the MLP with PyTorch and return the record of the run."""
    # A 64-64-10 MLP on small batches is too small to split across threads. With several,
    # thread synchronization costs more than the arithmetic, all the more on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(digits, weights, batches, settings, monitor)
    finally:
        torch.set_num_threads(threads)


def _train(
    digits: Digits,
    weights: dict[str, np.ndarray],
    batches: list[list[np.ndarray]],
    settings: Settings,
    monitor: Monitor,
) -> Run:
    run = Run("torch", detail=f"torch {torch.__version__}")
    started = time.perf_counter()

    model = _build_model(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.schedule(0), momentum=settings.momentum)
    scheduler = optstrat_torch.ScheduleLR(optimizer, settings.schedule)
    x_train = torch.from_numpy(digits.x_train)
    y_train = torch.from_numpy(digits.y_train)
    x_test = torch.from_numpy(digits.x_test)

    for epoch, epoch_batches in enumerate(batches):
        loss_sum = 0.0
        for done, indices in enumerate(epoch_batches, start=1):
            index = torch.from_numpy(indices)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = optstrat_torch.clip_grad_norm_(model.parameters(), settings.max_norm)

            # The scheduler set this value after the previous update, so it is the rate this update applies.
            run.lr.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()

            run.grad_norm.append(float(norm))
            loss_sum += float(loss.detach()) * len(indices)
            monitor.batch(done, len(epoch_batches))

        run.loss.append(loss_sum / len(digits.y_train))
        with torch.no_grad():
            predicted = model(x_test).argmax(dim=1).numpy()
        run.test_accuracy.append(float(np.mean(predicted == digits.y_test)))
        monitor.epoch(run, epoch)

    run.seconds = time.perf_counter() - started
    return run


def _build_model(weights: dict[str, np.ndarray]) -> torch.nn.Sequential:
    model = torch.nn.Sequential(
        torch.nn.Linear(INPUTS, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )
    with torch.no_grad():
        # torch stores a Linear weight as (outputs, inputs), the transpose of the shared kernels.
        for layer, name in ((model[0], "1"), (model[2], "2")):
            layer.weight.copy_(torch.from_numpy(weights[f"kernel{name}"].T))
            layer.bias.copy_(torch.from_numpy(weights[f"bias{name}"]))
    return model
