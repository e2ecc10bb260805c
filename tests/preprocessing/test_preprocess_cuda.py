"""CUDA kernel == CPU core (the executable spec), on a GPU only.

Skipped (marker `cuda`) where there is no GPU or no CUDA build.  Device arrays
come from CuPy when installed, else from PyTorch.  Every test runs on both
kernels (THYROFAST_CUDA_KERNEL): the sm_90 cluster kernel and the one-block
fallback; the cluster runs are skipped on GPUs older than sm_90.
"""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast

from _reference import speckle_frames
from conftest import cuda_available

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not cuda_available(), reason="no CUDA device or thyrofast built without CUDA")]

TOL = {"float32": 1e-4, "float16": 2e-3}


class _Lib:
    """Minimal device-array helpers over CuPy or torch."""

    def __init__(self):
        try:
            import cupy

            self.name, self.mod = "cupy", cupy
        except ImportError:
            import torch

            self.name, self.mod = "torch", torch

    def to_device(self, a: np.ndarray):
        if self.name == "cupy":
            return self.mod.asarray(a)
        return self.mod.from_numpy(np.ascontiguousarray(a)).cuda()

    def to_host(self, a) -> np.ndarray:
        if self.name == "cupy":
            return self.mod.asnumpy(a)
        return a.cpu().numpy()

    def full(self, shape, value, dtype):
        if self.name == "cupy":
            return self.mod.full(shape, value, dtype=dtype)
        tdt = {np.float32: self.mod.float32, np.float16: self.mod.float16}[dtype]
        return self.mod.full(shape, value, dtype=tdt, device="cuda")

    def stream(self):
        return self.mod.cuda.Stream()

    def synchronize(self):
        if self.name == "cupy":
            self.mod.cuda.Device().synchronize()
        else:
            self.mod.cuda.synchronize()


@pytest.fixture(scope="module")
def lib():
    try:
        return _Lib()
    except ImportError:
        pytest.skip("neither CuPy nor PyTorch is installed")


_CLUSTER: dict[str, bool] = {}


def _cluster_capable(lib) -> bool:
    """Whether this GPU and build run the cluster kernel (sm_90+), by trying it."""
    if "ok" not in _CLUSTER:
        frames = lib.to_device(np.zeros((1, 32, 32), np.uint8))
        thyrofast.preprocess(frames, size=(16, 16))
        lib.synchronize()
        _CLUSTER["ok"] = thyrofast._core.cuda_last_kernel().startswith("cluster")
    return _CLUSTER["ok"]


@pytest.fixture(autouse=True, params=["cluster", "block"])
def kernel(request, lib, monkeypatch):
    """Run the test on one kernel of the CUDA path."""
    monkeypatch.setenv("THYROFAST_CUDA_KERNEL", request.param)
    if request.param == "cluster" and not _cluster_capable(lib):
        pytest.skip("the cluster kernel needs sm_90+ (and a build with sm_90 code)")
    return request.param


SIZES = [(1, 1, 1, 1), (7, 5, 3, 9), (31, 45, 64, 64), (100, 90, 224, 160), (333, 257, 97, 113),
         (768, 1024, 224, 224), (1024, 1280, 256, 256), (60, 80, 128, 128)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("denoise", ["none", "median3", "median5", "srad"])
def test_cuda_equals_cpu(lib, size, denoise):
    h, w, oh, ow = size
    rng = np.random.default_rng(oh * 7 + ow)
    for color, dt in ((False, np.uint8), (True, np.uint16)):
        frames = speckle_frames(rng, 3, h, w, color=color, dtype=dt)
        for normalize in ("percentile", "minmax", "zscore", "none"):
            for out_dtype in ("float32", "float16"):
                params = dict(size=(oh, ow), denoise=denoise, normalize=normalize, dtype=out_dtype, channels=3)
                cpu = thyrofast.preprocess(frames, **params)
                gpu = thyrofast.preprocess(lib.to_device(frames), **params)
                assert type(gpu).__module__.split(".")[0] == lib.name  # same library as the input
                err = np.abs(lib.to_host(gpu).astype(np.float64) - cpu.astype(np.float64)).max()
                assert err <= TOL[out_dtype], (params, err)


def test_roi_and_bgr(lib):
    frames = speckle_frames(np.random.default_rng(1), 2, 200, 300, color=True)
    for roi in ((0, 0, 300, 200), (10, 20, 100, 50), (299, 199, 1, 1)):
        params = dict(roi=roi, size=(64, 64), channel_order="bgr")
        cpu = thyrofast.preprocess(frames, **params)
        gpu = lib.to_host(thyrofast.preprocess(lib.to_device(frames), **params))
        assert np.abs(gpu - cpu).max() <= 1e-4


def test_poisoned_output_is_fully_overwritten(lib):
    frames = speckle_frames(np.random.default_rng(2), 4, 300, 400)
    out = lib.full((4, 3, 224, 224), np.nan, np.float32)
    res = thyrofast.preprocess(lib.to_device(frames), size=(224, 224), channels=3, out=out)
    assert res is out
    host = lib.to_host(out)
    assert np.isfinite(host).all()
    assert np.abs(host - thyrofast.preprocess(frames, size=(224, 224), channels=3)).max() <= 1e-4


def test_non_default_stream(lib):
    frames = speckle_frames(np.random.default_rng(3), 8, 240, 320)
    stream = lib.stream()
    gpu = thyrofast.preprocess(lib.to_device(frames), size=(128, 128), stream=stream)
    stream.synchronize()
    assert np.abs(lib.to_host(gpu) - thyrofast.preprocess(frames, size=(128, 128))).max() <= 1e-4


@pytest.mark.parametrize("n", [1, 2, 31, 64, 256])
def test_batch_sizes(lib, n):
    frames = speckle_frames(np.random.default_rng(n), n, 96, 128)
    gpu = lib.to_host(thyrofast.preprocess(lib.to_device(frames), size=(64, 64)))
    assert np.abs(gpu - thyrofast.preprocess(frames, size=(64, 64))).max() <= 1e-4


def test_many_sizes_in_one_process(lib):
    rng = np.random.default_rng(4)
    for _ in range(20):
        h, w = rng.integers(1, 600, size=2)
        oh, ow = rng.integers(1, 300, size=2)
        frames = speckle_frames(rng, 2, int(h), int(w))
        gpu = lib.to_host(thyrofast.preprocess(lib.to_device(frames), size=(int(oh), int(ow))))
        assert np.abs(gpu - thyrofast.preprocess(frames, size=(int(oh), int(ow)))).max() <= 1e-4


@pytest.mark.parametrize("shape,size", [((2, 4000, 300), (16, 20)), ((1, 90, 3000, 3), (30, 8)),
                                        ((2, 509, 450), (2, 17))], ids=["250x-rows", "375x-cols-rgb", "254x-x-26x"])
def test_area_windows_wider_than_the_weight_arrays(lib, shape, size):
    # Downscaling by more than 62x per axis takes the kernel's on-the-fly
    # weights (the H200 run of 2026-12-04 found these refused: 509 -> 2 rows).
    frames = np.random.default_rng(7).integers(0, 256, size=shape).astype(np.uint8)
    for denoise in ("none", "srad"):
        gpu = lib.to_host(thyrofast.preprocess(lib.to_device(frames), size=size, denoise=denoise))
        cpu = thyrofast.preprocess(frames, size=size, denoise=denoise)
        assert np.abs(gpu - cpu).max() <= 1e-4


def test_host_input_through_pinned_staging():
    frames = speckle_frames(np.random.default_rng(5), 3, 200, 200)[:, ::-1]  # strided host input
    gpu = thyrofast.preprocess(frames, size=(96, 96), device="cuda")
    assert isinstance(gpu, np.ndarray)
    assert np.abs(gpu - thyrofast.preprocess(frames, size=(96, 96))).max() <= 1e-4


def test_bad_inputs_raise_the_cpu_errors(lib):
    good = np.zeros((20, 30), np.uint8)
    d = lib.to_device(good)
    with pytest.raises(ValueError, match="does not lie inside"):
        thyrofast.preprocess(d, roi=(0, 0, 31, 20))
    with pytest.raises(ValueError, match="srad_lambda"):
        thyrofast.preprocess(d, srad_lambda=2.0)
    with pytest.raises(TypeError, match="uint8 or uint16"):
        thyrofast.preprocess(lib.to_device(good.astype(np.float32)))
    with pytest.raises(ValueError, match="empty"):
        thyrofast.preprocess(lib.to_device(np.zeros((0, 5, 5), np.uint8)))
    with pytest.raises(ValueError, match="shape"):
        thyrofast.preprocess(d, size=(8, 8), out=lib.full((1, 1, 8, 9), 0, np.float32))


@pytest.mark.parametrize("kernel", ["cluster"], indirect=True)  # a cluster-kernel matter: not run on "block"
@pytest.mark.parametrize("cluster", [1, 2, 4, 8, 16])
def test_each_cluster_size(lib, kernel, monkeypatch, cluster):
    # the strip split, the halo exchange and the cross-CTA order statistics
    # at every cluster size the host may choose (16 where the GPU allows it)
    monkeypatch.setenv("THYROFAST_CUDA_CLUSTER", str(cluster))
    rng = np.random.default_rng(cluster)
    frames = speckle_frames(rng, 2, 768, 1024)
    for size in ((224, 224), (37, 61)):
        for denoise in ("srad", "median5", "none"):
            for normalize in ("percentile", "zscore", "minmax"):
                params = dict(size=size, denoise=denoise, normalize=normalize)
                gpu = lib.to_host(thyrofast.preprocess(lib.to_device(frames), **params))
                ran = thyrofast._core.cuda_last_kernel()
                assert np.abs(gpu - thyrofast.preprocess(frames, **params)).max() <= 1e-4, (params, ran)
                # a forced size is taken where the strips fit (37 rows: every size; 224 rows: 4 and up;
                # 16 also needs non-portable cluster support, which sm_90 has)
                if size[0] == 37 or cluster >= 4:
                    assert ran == f"cluster:{cluster}", (params, ran)


def test_kernel_that_ran_is_the_one_asked_for(lib, kernel):
    frames = lib.to_device(speckle_frames(np.random.default_rng(6), 1, 768, 1024))
    thyrofast.preprocess(frames, size=(224, 224))
    lib.synchronize()
    ran = thyrofast._core.cuda_last_kernel()
    assert ran.split(":")[0] == kernel, ran


def test_host_input_planar_layout():
    # channels-first host frames: no contiguous rows, the staging's element loop
    frames = np.ascontiguousarray(speckle_frames(np.random.default_rng(8), 2, 120, 90, color=True)
                                  .transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    gpu = thyrofast.preprocess(frames, size=(64, 48), roi=(5, 7, 80, 100), device="cuda")
    assert np.abs(gpu - thyrofast.preprocess(frames, size=(64, 48), roi=(5, 7, 80, 100))).max() <= 1e-4
