"""Frame layouts, preprocessing parameters, manifests and weights refused with one clear error (issue 22).

Item 2: an RGBA ``(H, W, 4)`` array was taken as a batch of H frames (H
probabilities for one image, no error).  Now RGBA is read as one frame with
its alpha dropped (as ``thyrofast.read`` does for RGBA files) and the truly
ambiguous 3-D shapes, last axis 1 or 2, are refused naming the layouts.

Item 4: tracebacks instead of one-line errors (a manifest's ``frame_index=-1``
aborting the whole batch, ``size=224.0``, a huge ``roi`` / ``threads`` reaching
pybind11, a pickle as ``weights.safetensors``) and parameters with inf outputs.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from thyrofast.classifier import Classifier
from thyrofast.errors import InputError
from thyrofast.preprocessing import Preprocessor, PreprocessParams

import _bundle_fixture as fx


@pytest.fixture(scope="module")
def clf(bundle_dir):
    return Classifier.load(bundle_dir, backend="onnxruntime", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def frames():
    return fx.phantom(3, seed=21)[0]


def _rgba(gray: np.ndarray, alpha: int = 255) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return np.concatenate([rgb, np.full(gray.shape + (1,), alpha, np.uint8)], axis=2)


# -- item 2: frame layouts -------------------------------------------------------------


def test_rgba_frame_is_one_frame_with_alpha_dropped(clf, frames):
    rgb = np.repeat(frames[0][..., None], 3, axis=2)
    want = np.asarray(clf.predict(rgb))
    for alpha in (255, 0, 7):  # alpha never changes the answer
        got = clf.predict(_rgba(frames[0], alpha))
        assert got.shape == (1, 3)
        np.testing.assert_array_equal(np.asarray(got), want)
    batch = clf.predict(np.stack([_rgba(f) for f in frames]))
    np.testing.assert_array_equal(np.asarray(batch), np.asarray(clf.predict(np.stack(
        [np.repeat(f[..., None], 3, axis=2) for f in frames]))))
    assert clf.predict([_rgba(frames[1]), frames[2]]).shape == (2, 3)


def test_rgba_file_and_rgba_array_agree(tmp_path, clf, frames):
    """thyrofast.read drops a PNG's alpha; an array of the same pixels gets the same answer."""
    from thyrofast.predict import predict_files

    Image.fromarray(_rgba(frames[0]), "RGBA").save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", _rgba(frames[0]))
    predict_files(clf, [tmp_path / "a.png", tmp_path / "a.npy"], tmp_path / "out.jsonl", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    img = [r for r in recs if r["kind"] == "image"]
    assert [r["status"] for r in img] == ["ok", "ok"]  # one record each, not 128 for the .npy
    assert img[0]["pred"] == img[1]["pred"]


@pytest.mark.parametrize("shape", [(128, 160, 1), (128, 160, 2)])
def test_ambiguous_3d_shapes_are_refused_naming_the_layouts(clf, shape):
    with pytest.raises(ValueError, match=r"ambiguous.*\(H, W\) gray frame.*\(N, H, W, 1\)"):
        clf.predict(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (2, 10, 10, 2), (2, 10, 10, 5), (7,)])
def test_other_shapes_name_the_accepted_layouts(clf, shape):
    with pytest.raises(ValueError, match=r"\(H, W, 4\) RGBA frame"):
        clf.predict(np.zeros(shape, np.uint8))


def test_existing_layout_rules_are_kept(clf, frames):
    batch = np.asarray(clf.predict(frames))  # (N, H, W): a gray batch
    assert batch.shape == (3, 3)
    np.testing.assert_array_equal(np.asarray(clf.predict(frames[..., None])), batch)  # (N, H, W, 1)
    np.testing.assert_array_equal(np.asarray(clf.predict(frames[0])), batch[:1])  # (H, W)
    # a list element is one frame: (H, W, 1) is unambiguous there
    np.testing.assert_array_equal(np.asarray(clf.predict([frames[0][..., None], frames[1]])), batch[:2])
    assert clf.predict(np.zeros((0, 128, 160), np.uint8)).shape == (0, 3)
    with pytest.raises(ValueError, match="each frame in a list"):
        clf.predict([frames])


# -- item 4: one-line errors -------------------------------------------------------------


def test_manifest_row_with_negative_frame_index_is_that_rows_error(tmp_path, clf, frames):
    from thyrofast.predict import predict_files

    for i, f in enumerate(frames[:2]):
        Image.fromarray(f).save(tmp_path / f"f{i}.png")
    np.save(tmp_path / "stack.npy", frames)
    (tmp_path / "m.csv").write_text("path,patient_id,frame_index\nf0.png,p1,-1\nf1.png,p2,\n"
                                    "stack.npy,p3,-2\nstack.npy,p3,2\n")
    s = predict_files(clf, [tmp_path / "m.csv"], tmp_path / "out.jsonl", progress=False)
    assert (s.n_ok, s.n_error) == (2, 2)
    img = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    img = [r for r in img if r["kind"] == "image"]
    assert [r["status"] for r in img] == ["error", "ok", "error", "ok"]
    assert {r["error"]["code"] for r in img if r["status"] == "error"} == {"frame_out_of_range"}


@pytest.mark.parametrize("size, want", [(224.0, (224, 224)), (64, (64, 64)), (np.int64(32), (32, 32)),
                                        ([48, 40], (48, 40))])
def test_size_as_one_number_means_square(size, want):
    assert PreprocessParams(size=size).size == want
    assert Preprocessor(size=size).params.size == want


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"size": 224.5}, TypeError, "size must be an integer"),
    ({"size": "224"}, TypeError, r"size must be \(out_h, out_w\)"),
    ({"size": None}, TypeError, "size"),
    ({"roi": 5}, TypeError, r"roi must be \(x, y, w, h\)"),
    ({"percentiles": 5.0}, TypeError, r"percentiles must be \(lo, hi\)"),
    ({"roi": (0, 0, 10 ** 20, 10)}, ValueError, r"roi .* at most 2147483647"),
    ({"roi": (2 ** 40, 0, 10, 10)}, ValueError, r"roi .* at most 2147483647"),
    ({"std": 1e-45}, ValueError, "inf"),
    ({"std": 1e-39}, ValueError, "inf"),
    ({"mean": -1e30, "dtype": "float16"}, ValueError, "float16"),
    ({"mean": 0.5, "std": 1e-5, "dtype": "float16"}, ValueError, "float16"),
    ({"normalize": "zscore", "std": 1e-3, "dtype": "float16"}, ValueError, "float16"),
    ({"normalize": "none", "max_value": 0.01, "std": 1e-2, "dtype": "float16",
      "denoise": "none"}, ValueError, "float16"),
    ({"mean": 1e39, "std": 1e10}, ValueError, "mean must be a finite float32"),
    ({"max_value": 1e-40}, ValueError, "max_value"),
    ({"srad_rho": 1e300}, ValueError, "srad_rho"),
])
def test_bad_parameters_are_named_before_the_core(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PreprocessParams(**kwargs)


def test_parameters_with_finite_outputs_stay_accepted():
    for kw in ({"mean": 0.5, "std": 0.25, "dtype": "float16"}, {"mean": -1e30},
               {"std": 1e-30}, {"std": 1.0 / 65504, "dtype": "float16"},
               {"normalize": "zscore", "size": (64, 64), "std": 0.01, "dtype": "float16"},
               {"normalize": "none", "max_value": 2.0, "denoise": "srad"}):
        PreprocessParams(**kw)


@pytest.mark.parametrize("threads", [10 ** 12, 2 ** 31, 0, -1])
def test_threads_out_of_range_is_a_value_error_naming_the_range(threads, frames, bundle_dir):
    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, 4096\]"):
        Preprocessor(threads=threads)
    import thyrofast

    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, 4096\]"):
        thyrofast.preprocess(frames[0], threads=threads)
    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, 4096\]"):
        Classifier.load(bundle_dir, backend="onnxruntime", threads=threads)


@pytest.mark.parametrize("max_batch", [0, 10 ** 12, True, 2.0])
def test_max_batch_out_of_range(bundle_dir, max_batch):
    with pytest.raises(ValueError, match=r"max_batch must be an integer in \[1, 4096\]"):
        Classifier.load(bundle_dir, backend="onnxruntime", max_batch=max_batch)


def test_preprocess_from_dict_names_a_non_mapping():
    with pytest.raises(TypeError, match="mapping"):
        PreprocessParams.from_dict("srad")
    with pytest.raises(TypeError, match="size"):
        PreprocessParams.from_dict({"size": 224.5})
    assert PreprocessParams.from_dict({"size": 224.0}).size == (224, 224)


def _with_weights(tmp_path, bundle_dir, data: bytes):
    """A copy of the bundle whose weights are ``data`` and whose card hashes them (an edited bundle)."""
    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    (b / "weights.safetensors").write_bytes(data)
    card = json.loads((b / "thyrofast.json").read_text())
    card["artifacts"]["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (b / "thyrofast.json").write_text(json.dumps(card))
    return b


@pytest.mark.parametrize("kind", ["pickle", "truncated", "empty", "wrong_model"])
def test_bad_weights_with_torch_backend_are_one_input_error(tmp_path, bundle_dir, kind):
    good = (bundle_dir / "weights.safetensors").read_bytes()
    if kind == "pickle":
        data = pickle.dumps({"conv1.weight": [1.0, 2.0]})
    elif kind == "truncated":
        data = good[: len(good) // 2]
    elif kind == "empty":
        data = b""
    else:  # valid safetensors, other tensors
        from safetensors.numpy import save

        data = save({"conv1.weight": np.zeros((2, 2), np.float32)})
    b = _with_weights(tmp_path, bundle_dir, data)
    with pytest.raises(InputError, match="weights") as info:
        Classifier.load(b, backend="torch", device="cpu", threads=1)
    assert info.value.code == "unreadable" and "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["pickle_weights", "nested_card", "temperature_inf"])
def test_cli_reports_a_bad_bundle_in_one_line(tmp_path, bundle_dir, frames, case):
    import os
    import subprocess
    import sys

    import thyrofast

    root = str(__import__("pathlib").Path(thyrofast.__file__).resolve().parents[1])  # the package under test
    if case == "pickle_weights":
        b = _with_weights(tmp_path, bundle_dir, pickle.dumps([1, 2, 3]))
    else:
        b = tmp_path / "bundle"
        shutil.copytree(bundle_dir, b)
        text = (b / "thyrofast.json").read_text()
        if case == "nested_card":
            text = text.rstrip()[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
        else:
            card = json.loads(text)
            card["temperature"] = float("inf")
            text = json.dumps(card)
        (b / "thyrofast.json").write_text(text)
    Image.fromarray(frames[0]).save(tmp_path / "a.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "thyrofast.cli", "predict", str(b), str(tmp_path / "a.png"),
                        "--out", str(tmp_path / "o.jsonl"), "--backend", "torch", "--device", "cpu",
                        "--threads", "1", "--no-progress"], capture_output=True, text=True, env=env, timeout=300,
                       cwd=tmp_path)  # not the repository: its thyrofast/ would shadow the one under test
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {"pickle_weights": "weights", "nested_card": "nested", "temperature_inf": "temperature"}[case] in r.stderr
