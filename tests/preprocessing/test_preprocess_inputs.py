"""Input handling: layouts that must work, inputs that must be refused clearly."""
from __future__ import annotations

import numpy as np
import pytest

import thyrofast
from thyrofast import Preprocessor, PreprocessParams

from _reference import speckle_frames


@pytest.fixture(scope="module")
def frames():
    return speckle_frames(np.random.default_rng(0), 3, 70, 90, color=True)


def _pp(x, **kw):
    return thyrofast.preprocess(x, size=(32, 48), **kw)


def test_layouts_equal_contiguous(frames):
    ref = _pp(np.ascontiguousarray(frames))
    # Fortran order
    np.testing.assert_array_equal(_pp(np.asfortranarray(frames)), ref)
    # read-only
    ro = frames.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(_pp(ro), ref)
    # negative strides (vertical flip) vs flipped copy
    np.testing.assert_array_equal(_pp(frames[:, ::-1]), _pp(np.ascontiguousarray(frames[:, ::-1])))
    # step slices
    np.testing.assert_array_equal(_pp(frames[:, ::2, ::3]), _pp(np.ascontiguousarray(frames[:, ::2, ::3])))
    # a planar (C, H, W) buffer viewed as (H, W, C)
    planar = np.ascontiguousarray(frames[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(_pp(planar.transpose(1, 2, 0)), _pp(frames[0]))


def test_big_endian_uint16_is_read_by_value():
    f = speckle_frames(np.random.default_rng(1), 2, 40, 50, dtype=np.uint16)
    be = f.astype(">u2")
    assert be.dtype.byteorder == ">"
    np.testing.assert_array_equal(_pp(be), _pp(f))


def test_gray_batch_and_width_one():
    f = speckle_frames(np.random.default_rng(2), 4, 30, 1)
    out = _pp(f[..., 0]) if f.ndim == 4 else _pp(f)
    assert out.shape == (4, 1, 32, 48)
    one_by_n = np.arange(17, dtype=np.uint8)[None, :]
    assert _pp(one_by_n).shape == (1, 1, 32, 48)


def test_torch_cpu_tensor_in_torch_out():
    torch = pytest.importorskip("torch")
    f = speckle_frames(np.random.default_rng(3), 2, 40, 40)
    out = thyrofast.preprocess(torch.from_numpy(f), size=(16, 16))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), thyrofast.preprocess(f, size=(16, 16)))


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.float32), np.zeros((10, 10), np.float64), np.zeros((10, 10), np.int32),
    np.zeros((10, 10), np.int16), np.zeros((10, 10), bool), np.zeros((10, 10), np.uint32),
    np.zeros((10, 10), np.int8),
])
def test_wrong_dtype_is_a_type_error(bad):
    with pytest.raises(TypeError, match="uint8 or uint16"):
        _pp(bad)


def test_lists_are_not_silently_cast():
    with pytest.raises(TypeError):
        _pp([[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        _pp("not an image")


@pytest.mark.parametrize("shape,match", [
    ((5,), "got 1-D"), ((2, 3, 4, 5, 6), "got 5-D"), ((2, 10, 10, 2), "N, H, W, 1"), ((2, 10, 10, 5), "N, H, W, 4"),
    ((0, 10, 10), "empty"), ((10, 0), "empty"), ((0, 5, 5, 3), "empty"),
])
def test_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        _pp(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"roi": (0, 0, 91, 10)}, ValueError, "does not lie inside"),
    ({"roi": (-1, 0, 10, 10)}, ValueError, "does not lie inside"),
    ({"roi": (85, 65, 10, 10)}, ValueError, "does not lie inside"),
    ({"roi": (0, 0, 0, 10)}, ValueError, "roi width"),
    ({"roi": (1, 2, 3)}, ValueError, "roi must be"),
    ({"size": (0, 10)}, ValueError, "size must be"),
    ({"size": (4097, 10)}, ValueError, "size must be"),
    ({"size": (10.5, 10)}, TypeError, "integer"),
    ({"srad_lambda": 0.0}, ValueError, "srad_lambda"),
    ({"srad_lambda": 1.01}, ValueError, "srad_lambda"),
    ({"srad_iterations": -1}, ValueError, "srad_iterations"),
    ({"percentiles": (50, 50)}, ValueError, "percentiles"),
    ({"percentiles": (-1, 50)}, ValueError, "percentiles"),
    ({"percentiles": (10, 101)}, ValueError, "percentiles"),
    ({"std": 0.0}, ValueError, "std"),
    ({"std": -1.0}, ValueError, "std"),
    ({"mean": float("nan")}, ValueError, "mean"),
    ({"max_value": 0}, ValueError, "max_value"),
    ({"channels": 2}, ValueError, "channels"),
    ({"dtype": "float64"}, ValueError, "dtype"),
    ({"denoise": "gaussian"}, ValueError, "denoise"),
    ({"normalize": "l2"}, ValueError, "normalize"),
    ({"channel_order": "rgba"}, ValueError, "channel_order"),
    ({"threads": 0}, ValueError, "threads"),
    ({"device": "tpu"}, ValueError, "device"),
    ({"srad_lambda": "0.5"}, TypeError, "number"),
])
def test_bad_parameters(kwargs, exc, match):
    f = np.zeros((70, 90), np.uint8)
    with pytest.raises(exc, match=match):
        thyrofast.preprocess(f, **kwargs)


def test_bad_out_buffers(frames):
    good = np.empty((3, 1, 32, 48), np.float32)
    _pp(frames, out=good)
    with pytest.raises(ValueError, match="shape"):
        _pp(frames, out=np.empty((3, 1, 32, 47), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        _pp(frames, out=np.empty((3, 1, 32, 48), np.float64))
    with pytest.raises(TypeError, match="dtype"):
        _pp(frames, out=np.empty((3, 1, 32, 48), np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        _pp(frames, out=np.empty((3, 1, 48, 32), np.float32).transpose(0, 1, 3, 2))
    ro = np.empty((3, 1, 32, 48), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _pp(frames, out=ro)
    with pytest.raises(TypeError, match="NumPy"):
        _pp(frames, out=[0.0])


def test_cuda_request_without_cuda_is_clear():
    if thyrofast.build_info()["cuda_devices"] > 0:
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        thyrofast.preprocess(np.zeros((8, 8), np.uint8), device="cuda")


def test_params_round_trip_and_reuse():
    p = PreprocessParams(roi=(1, 2, 30, 40), size=(64, 32), denoise="median5", normalize="zscore",
                         percentiles=(2, 98), mean=0.1, std=0.2, channels=3, dtype="float16")
    assert PreprocessParams.from_json(p.to_json()) == p
    assert PreprocessParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="unknown"):
        PreprocessParams.from_dict({**p.to_dict(), "sharpen": True})
    with pytest.raises(ValueError, match="spec version"):
        PreprocessParams.from_dict({**p.to_dict(), "spec": 2})
    pre = Preprocessor(p)
    f = np.zeros((50, 60, 3), np.uint8)
    assert pre(f).shape == (1, 3, 64, 32)
    assert pre(f).dtype == np.float16
    with pytest.raises(TypeError, match="either"):
        Preprocessor(p, size=(3, 3))


def test_build_info_reports_the_build():
    info = thyrofast.build_info()
    for key in ("version", "compiler", "openmp", "cuda", "cuda_architectures", "cuda_devices", "cuda_last_kernel",
                "cpu_variant", "cpu_variants_built", "cpu_variants_runnable"):
        assert key in info
    assert info["version"] == thyrofast.__version__
    if info["cuda"]:
        assert "90" in info["cuda_architectures"]


def test_numpy_input_goes_straight_to_the_core(monkeypatch, frames):
    """NumPy frames reach the core with no Python-side view or checks (they cost
    more than the call when caches are cold); only what the core cannot read
    (big-endian uint16) or refuses takes the general path."""
    import thyrofast.preprocessing.preprocessor as pp

    class Wrapped:  # not an ndarray: takes the general path
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    pre = Preprocessor(size=(32, 48))
    pre16 = Preprocessor(size=(32, 48), dtype="float16", channels=3)
    cases = [frames, frames[0], frames[:, ::-1], frames[..., 0], frames[0, :, :, 0], frames[:, :, :, :1]]
    want = [pre(Wrapped(c)) for c in cases]
    want16 = pre16(Wrapped(frames[0]))
    be = speckle_frames(np.random.default_rng(4), 1, 20, 20, dtype=np.uint16).astype(">u2")
    want_be = pre(be)

    def general_path(*_a, **_k):
        raise AssertionError("took the general path")

    monkeypatch.setattr(pp, "host_frames", general_path)
    for c, w in zip(cases, want):
        np.testing.assert_array_equal(pre(c), w)
        out = np.empty_like(w)
        assert pre(c, out=out) is out
        np.testing.assert_array_equal(out, w)
    got16 = pre16(frames[0])
    assert got16.dtype == np.float16 and got16.shape == (1, 3, 32, 48)
    np.testing.assert_array_equal(got16, want16)
    with pytest.raises(AssertionError, match="general path"):
        pre(be)  # byte order: converted by the general path
    monkeypatch.undo()
    np.testing.assert_array_equal(pre(be), want_be)


@pytest.mark.parametrize("shape,shape4", [
    ((7, 9), (1, 7, 9, 1)), ((7, 9, 3), (1, 7, 9, 3)), ((2, 7, 9), (2, 7, 9, 1)),
    ((2, 7, 9, 1), (2, 7, 9, 1)), ((2, 7, 9, 3), (2, 7, 9, 3)), ((2, 7, 3, 1), (2, 7, 3, 1)),
    ((7, 9, 4), (1, 7, 9, 3)), ((2, 7, 9, 4), (2, 7, 9, 3)), ((2, 7, 4, 1), (2, 7, 4, 1)),
])
def test_layout_rule(shape, shape4):
    from thyrofast.preprocessing.layout import frames_4d

    strides = tuple(range(10, 10 + len(shape)))
    got_shape, got_strides = frames_4d(shape, strides)
    assert got_shape == shape4
    # added axes have stride 0, the others keep theirs, in order
    kept = [s for s, n in zip(got_strides, got_shape) if s != 0]
    assert tuple(kept) == strides


@pytest.mark.parametrize("shape,message", [
    ((5,), "got 1-D shape (5,)"), ((), "got 0-D shape ()"), ((1, 2, 3, 4, 5), "got 5-D shape (1, 2, 3, 4, 5)"),
    ((2, 4, 4, 2), "(N, H, W, 1), (N, H, W, 3) or (N, H, W, 4) (RGBA, alpha dropped), got shape (2, 4, 4, 2)"),
    ((3, 0), "frames are empty (shape (1, 3, 0, 1) as N, H, W, C)"),
])
def test_layout_rule_refusals_name_the_shape(shape, message):
    from thyrofast.preprocessing.layout import frames_4d

    with pytest.raises(ValueError) as e:
        frames_4d(shape, (1,) * len(shape))
    assert message in str(e.value)


def test_core_refuses_an_out_of_the_wrong_shape(frames):
    """The core checks the output shape itself, not only its size (a
    (3, 1, 48, 32) buffer holds as many floats as (3, 1, 32, 48))."""
    from thyrofast import _core

    pre = Preprocessor(size=(32, 48))
    with pytest.raises(ValueError, match=r"out must have shape \(3, 1, 32, 48\)"):
        _core.preprocess_cpu(frames, pre._core_params, np.empty((3, 1, 48, 32), np.float32), 1)
    out = _core.preprocess_cpu(frames, pre._core_params, None, 1)
    assert out.shape == (3, 1, 32, 48) and out.dtype == np.float32
    np.testing.assert_array_equal(out, pre(frames))


@pytest.mark.parametrize("dtype,out_dtype", [("float32", ">f4"), ("float16", ">f2")])
def test_big_endian_out_is_refused(frames, dtype, out_dtype):
    out = np.zeros((3, 1, 32, 48), out_dtype)
    with pytest.raises(TypeError, match="dtype"):
        _pp(frames, out=out, dtype=dtype)
    assert not out.any()  # nothing written


def test_core_writes_only_into_a_real_array(frames):
    from thyrofast import _core

    pre = Preprocessor(size=(32, 48))
    nested = np.zeros((3, 1, 32, 48), np.float32).tolist()  # would cast to a fresh array nobody sees
    with pytest.raises(TypeError, match="NumPy array"):
        _core.preprocess_cpu(frames, pre._core_params, nested, 1)


def test_rgba_is_one_colour_frame_with_alpha_dropped(frames):
    """(H, W, 4) is one RGBA frame, as Classifier.predict and thyrofast.read take it, not a batch of
    H frames 4 pixels wide; (N, H, W, 4) is an RGBA batch.  Alpha is never read (no copy either)."""
    rng = np.random.default_rng(5)
    rgb = np.ascontiguousarray(frames)  # (3, 70, 90, 3)
    rgba = np.concatenate([rgb, rng.integers(0, 256, rgb.shape[:3] + (1,), dtype=np.uint8)], axis=-1)
    want = _pp(rgb)
    np.testing.assert_array_equal(_pp(rgba), want)
    np.testing.assert_array_equal(_pp(rgba[0]), want[:1])
    np.testing.assert_array_equal(_pp(rgba[0], channel_order="bgr"), _pp(rgb[0], channel_order="bgr"))
    np.testing.assert_array_equal(_pp(rgba.astype(np.uint16) * 257), _pp(rgb.astype(np.uint16) * 257))
    np.testing.assert_array_equal(_pp((rgba.astype(np.uint16) * 257).astype(">u2")[1]),
                                  _pp(rgb.astype(np.uint16)[1] * 257))
    pre = Preprocessor(size=(32, 48))
    np.testing.assert_array_equal(pre(rgba[0]), want[:1])  # the core's own path too
    from thyrofast import _core

    np.testing.assert_array_equal(_core.preprocess_cpu(rgba[0], pre._core_params, None, 1), want[:1])
    # a gray batch of 4-pixel-wide frames says so with a channel axis
    gray = rng.integers(0, 256, (5, 30, 4), dtype=np.uint8)
    assert _pp(gray[..., None]).shape == (5, 1, 32, 48)
    assert _pp(gray).shape == (1, 1, 32, 48)
