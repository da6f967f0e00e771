"""Clipping DTensor gradients on a one-process CPU mesh (gloo backend, world size 1).

DTensor gradients are tensor subclasses, so they take the portable core path,
whose torch operations DTensor dispatches. One process cannot check sharding
across ranks; these tests check that the path runs and gives the values of
plain tensors.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor  # noqa: E402

import optstrat as ops  # noqa: E402
from optstrat_torch import ClippedOptimizer, clip_, clip_grad_norm_  # noqa: E402


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a torch.distributed process group is already initialized in this process")
    store = dist.FileStore(str(tmp_path_factory.mktemp("dist") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def plain_grads():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=generator) * 5.0, torch.randn(6, generator=generator)]


def dtensor_params(mesh, grads):
    placements = [[Shard(0)], [Replicate()]]
    params = []
    for grad, placement in zip(grads, placements):
        param = torch.nn.Parameter(distribute_tensor(torch.zeros_like(grad), mesh, placement))
        param.grad = distribute_tensor(grad.clone(), mesh, placement)
        params.append(param)
    return params


def plain_params(grads):
    params = []
    for grad in grads:
        param = torch.nn.Parameter(torch.zeros_like(grad))
        param.grad = grad.clone()
        params.append(param)
    return params


def local(tensor):
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_dtensor_matches_plain(mesh, norm_type):
    grads = plain_grads()
    params = dtensor_params(mesh, grads)
    reference = plain_params(grads)

    norm = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)
    reference_norm = clip_grad_norm_(reference, max_norm=1.0, norm_type=norm_type)

    assert isinstance(norm, DTensor)
    torch.testing.assert_close(local(norm), reference_norm, rtol=1e-6, atol=0.0)
    for param, expected in zip(params, reference):
        assert isinstance(param.grad, DTensor)
        torch.testing.assert_close(local(param.grad), expected.grad, rtol=1e-6, atol=0.0)


def test_clip_stateful_clipper_dtensor(mesh):
    clipper = ops.ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=1)
    params = dtensor_params(mesh, plain_grads())
    reference = plain_params(plain_grads())
    state = reference_state = None

    for scale in (1.0, 100.0):
        for param, grad in zip(params, plain_grads()):
            param.grad = distribute_tensor(grad * scale, mesh, param.grad.placements)
        for param, grad in zip(reference, plain_grads()):
            param.grad = grad * scale
        state, info = clip_(params, clipper, state)
        reference_state, reference_info = clip_(reference, clipper, reference_state)

    assert bool(local(info.clipped)) == bool(reference_info.clipped)
    torch.testing.assert_close(local(info.norm), reference_info.norm, rtol=1e-6, atol=0.0)
    for param, expected in zip(params, reference):
        torch.testing.assert_close(local(param.grad), expected.grad, rtol=1e-6, atol=0.0)


def test_skip_zeroes_nonfinite_dtensor(mesh):
    grads = plain_grads()
    grads[1][2] = math.inf
    params = dtensor_params(mesh, grads)

    _, info = clip_(params, ops.ClipByGlobalNorm(max_norm=1.0))

    assert not bool(local(info.finite))
    for param in params:
        assert torch.equal(local(param.grad), torch.zeros_like(local(param.grad)))


def test_clipped_optimizer_dtensor_step(mesh):
    grads = plain_grads()
    params = dtensor_params(mesh, grads)
    reference = plain_params(grads)
    optimizer = ClippedOptimizer(torch.optim.SGD(params, lr=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    reference_optimizer = ClippedOptimizer(torch.optim.SGD(reference, lr=0.1), ops.ClipByGlobalNorm(max_norm=1.0))

    optimizer.step()
    reference_optimizer.step()

    for param, expected in zip(params, reference):
        torch.testing.assert_close(local(param.detach()), expected.detach(), rtol=1e-6, atol=0.0)
    assert optimizer.skipped_steps == 0
