"""Hardening of the preprocessing core: threads, leaks, property tests."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thyrofast

from _proc import rss_kib
from _reference import preprocess_ref

MODES = [(d, n) for d in ("none", "median3", "median5", "srad") for n in ("percentile", "minmax", "zscore", "none")]


def test_threads_are_bit_identical_to_serial():
    """8 Python threads x 500 calls (the GIL is released inside the core)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, size=(int(rng.integers(20, 120)), int(rng.integers(20, 120))), dtype=np.uint8)
              for _ in range(16)]
    modes = [MODES[i % len(MODES)] for i in range(16)]
    calls = [(i % 16) for i in range(500)]

    def run(i):
        d, n = modes[i]
        return thyrofast.preprocess(frames[i], size=(40, 48), denoise=d, normalize=n, threads=1).tobytes()

    serial = {i: run(i) for i in range(16)}
    mismatches = []
    errors = []

    def worker(offset):
        try:
            for k in calls:
                i = (k + offset) % 16
                if run(i) != serial[i]:
                    mismatches.append(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not mismatches, f"{len(mismatches)} results differ from the serial run"




@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs /proc")
def test_no_leak_over_10000_calls():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(96, 128), dtype=np.uint8)
    out = np.empty((1, 1, 32, 32), np.float32)
    pre = thyrofast.Preprocessor(size=(32, 32), denoise="srad", srad_iterations=2, threads=1)
    for _ in range(500):  # warm up allocators and the per-thread workspace
        pre(frame, out=out)
        thyrofast.preprocess(frame, size=(32, 32), denoise="median3")
    before = rss_kib()
    for i in range(10_000):
        if i % 2:
            pre(frame, out=out)
        else:
            thyrofast.preprocess(frame, size=(32, 32), denoise="median3")
    grown = rss_kib() - before
    assert grown < 5 * 1024, f"RSS grew by {grown} KiB over 10,000 calls"


_LAYOUTS = ["c", "fortran", "negative", "step", "big_endian", "readonly"]


def _layout(a: np.ndarray, how: str) -> np.ndarray:
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":
        return np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    if how == "step":
        big = np.zeros((a.shape[0] * 2, a.shape[1] * 3) + a.shape[2:], a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    if how == "big_endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    return np.ascontiguousarray(a)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 64), w=st.integers(1, 64), oh=st.integers(1, 64), ow=st.integers(1, 64),
    dtype=st.sampled_from([np.uint8, np.uint16]), color=st.booleans(), layout=st.sampled_from(_LAYOUTS),
    mode=st.sampled_from(MODES), seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference_for_any_layout(h, w, oh, ow, dtype, color, layout, mode, seed):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (h, w, 3) if color else (h, w)
    a = rng.integers(0, top + 1, size=shape, dtype=dtype)
    d, n = mode
    got = thyrofast.preprocess(_layout(a, layout), size=(oh, ow), denoise=d, normalize=n)
    want = preprocess_ref(a, size=(oh, ow), denoise=d, normalize_mode=n)
    assert np.abs(got - want).max() <= 1e-4


@settings(max_examples=40, deadline=None, derandomize=True)
@given(dtype=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.float16,
                              np.float32, np.float64, np.bool_, np.complex64]),
       shape=st.sampled_from([(5, 5), (2, 5, 5), (5, 5, 3)]))
def test_property_other_dtypes_refused(dtype, shape):
    with pytest.raises(TypeError):
        thyrofast.preprocess(np.zeros(shape, dtype), size=(4, 4))


# -- layout independence (issue 22, item 13) -----------------------------------------
def _same_pixels(a: np.ndarray) -> dict[str, np.ndarray]:
    """Views and copies of `a` (N, H, W[, 3]) in other memory layouts, equal to it pixel for pixel."""
    views = {
        # strides -1 on H and W: the flipped copy read backwards
        "reversed": np.ascontiguousarray(a[:, ::-1, ::-1])[:, ::-1, ::-1],
        "fortran": np.asfortranarray(a),
        # H and W swapped in memory: stride_w = H (column-major frames)
        "transposed": np.ascontiguousarray(np.swapaxes(a, 1, 2)).swapaxes(1, 2),
        "step": np.repeat(np.repeat(a, 2, axis=1), 3, axis=2)[:, ::2, ::3],
    }
    if a.dtype == np.uint16:
        views["big_endian"] = a.astype(">u2")
    for name, v in views.items():
        assert np.array_equal(v, a), name
    return views


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("denoise", ["none", "median3", "median5", "srad"])
def test_layout_does_not_change_a_bit(dtype, color, denoise):
    """The spec's result depends on the pixels only: any layout gives the same bits.

    The gray area shrink once summed unit-stride rows as integers but other
    layouts in float, so a reversed / Fortran / transposed / step-sliced view
    came out up to 2.3e-6 away from the contiguous frame.  Sizes cover area
    shrink (factors < 2 and > 8, several 64-column blocks, a partial one),
    linear growth and identity on each axis.
    """
    rng = np.random.default_rng(hash((np.dtype(dtype).name, color, denoise)) % 2**32)
    top = np.iinfo(dtype).max
    a = rng.integers(0, top + 1, size=(2, 97, 611) + ((3,) if color else ()), dtype=np.uint64).astype(dtype)
    views = _same_pixels(a)
    for size in [(40, 70), (60, 330), (160, 611), (97, 900)]:
        pre = thyrofast.Preprocessor(size=size, denoise=denoise, srad_iterations=3, threads=1)
        want = pre(np.ascontiguousarray(a))
        for name, v in views.items():
            got = pre(v)
            assert np.array_equal(got, want), (
                f"{name} {size}: differs by up to {np.abs(got - want).max():.3g} from the contiguous frame")


def test_layout_does_not_change_a_bit_with_roi_and_float16():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, size=(1, 300, 420), dtype=np.uint8)
    pre = thyrofast.Preprocessor(size=(64, 48), roi=(17, 9, 389, 270), denoise="median3", dtype="float16",
                                 threads=1)
    want = pre(a)
    for name, v in _same_pixels(a).items():
        assert np.array_equal(pre(v), want), name


# -- frame size limits (issue 22, item 11) -------------------------------------------
MAX_FRAME_PIXELS = 1 << 28  # csrc/include/thyrofast/preprocess.h, kMaxFramePixels
MAX_FRAME_SIDE = 1 << 20  # kMaxFrameSide


def _pixel_view(shape: tuple[int, ...], value: int = 5, dtype: str = "u1") -> np.ndarray:
    """A read-only (N, H, W) view of one pixel with stride 0 on every axis: no memory behind its size."""
    one = np.full(1, value, np.dtype(dtype))
    return np.lib.stride_tricks.as_strided(one, shape=shape, strides=(0,) * len(shape), writeable=False)


@pytest.mark.parametrize("shape", [
    (1, 2**32 + 100, 1),  # the tap count truncated to 100 (as int): 4.6e-10 instead of 5 / 255
    (1, 2**31 + 5, 1),  # a negative int tap count: "cannot create std::vector larger than max_size()"
    (1, 1, 2**32 + 100),  # a row buffer of 2^32 floats per thread (killed for memory)
    (1, 200_000, 200_000),  # 4e10 pixels: ran 14.6 s, deaf to Ctrl-C
    (3, MAX_FRAME_SIDE + 1, 1),  # one past the side limit
    (1, 1 << 14, (1 << 14) + 1),  # one row past the pixel limit
])
def test_frames_beyond_the_size_limits_are_refused_before_any_work(shape):
    import time

    frames = _pixel_view(shape)
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"at most 268435456 \(2\^28\) pixels per frame and 1048576 \(2\^20\) per side"):
        thyrofast.preprocess(frames, size=1, denoise="none", normalize="none", threads=1)
    assert time.perf_counter() - t < 1.0


def test_big_endian_frames_beyond_the_limits_are_refused_before_the_byte_swap_copy():
    frames = _pixel_view((1, 200_000, 200_000), dtype=">u2")  # astype would need 80 GB
    with pytest.raises(ValueError, match=r"2\^28"):
        thyrofast.preprocess(frames, size=(8, 8), threads=1)


def test_the_limits_apply_to_the_roi_crop():
    """The work is the crop's: a huge view with an roi inside the limits is fine, and exact."""
    frames = _pixel_view((1, 200_000, 200_000))
    out = thyrofast.preprocess(frames, roi=(123_456, 7, 64, 48), size=(4, 4), denoise="none", normalize="none")
    np.testing.assert_allclose(out, 5 / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="frame roi is 16385x16384"):
        thyrofast.preprocess(frames, roi=(0, 0, (1 << 14) + 1, 1 << 14), size=1)


@pytest.mark.parametrize("shape", [(1, MAX_FRAME_SIDE, 1), (1, 1, MAX_FRAME_SIDE), (2, 1 << 10, 1 << 10)])
def test_frames_at_the_size_limits_are_resized_exactly(shape):
    """At the limits every size still fits (64-bit taps): the mean of a constant frame is the constant,
    up to float32 rounding over windows of up to 2^20 samples (spec: float32 sums; an overflowed tap
    count gave 1e-10 here)."""
    frames = _pixel_view(shape, value=5)
    for size in [(1, 1), (3, 7)]:
        out = thyrofast.preprocess(frames, size=size, denoise="none", normalize="none", threads=1)
        np.testing.assert_allclose(out, 5 / 255, rtol=1e-2)
    frames16 = _pixel_view(shape, value=40_000, dtype="u2")
    out = thyrofast.preprocess(frames16, size=(2, 2), denoise="none", normalize="none", threads=1)
    np.testing.assert_allclose(out, 40_000 / 65535, rtol=1e-2)


def test_the_core_releases_the_gil_while_it_works():
    """Another Python thread runs while a frame is being processed (the call is pure C++)."""
    frames = _pixel_view((8, 4096, 4096))
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    t = threading.Thread(target=ticker)
    pre = thyrofast.Preprocessor(size=(224, 224), denoise="srad", threads=1)
    pre(frames[:1])  # warm
    t.start()
    try:
        before = len(ticks)
        pre(frames)
        during = len(ticks) - before
    finally:
        stop.set()
        t.join()
    assert during >= 5, f"the ticker thread ran {during} times during the call"
