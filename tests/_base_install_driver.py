"""Exercise thyrofast as installed without some optional packages; print JSON.

Run by tests/test_optional_deps.py in a subprocess whose PYTHONPATH starts
with tests/_hide_optional (THYROFAST_HIDE: the modules made to look
uninstalled).  usage: python _base_install_driver.py MODE BUNDLE WORKDIR

MODE ``base``: the base install (every optional package hidden): the API
(import, preprocess, read of PNG and DICOM, Classifier with ONNX Runtime) and
every CLI command, those that need an extra included.  Other modes check the
commands that need one particular extra with the others installed.
Each CLI command runs through ``thyrofast.cli.main`` with its stdout/stderr
captured; an exception escaping it is recorded with its traceback.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback
from pathlib import Path

OPTIONAL = ("torch", "torchvision", "cv2", "openvino", "cupy", "tensorrt", "gdcm", "pylibjpeg", "onnxscript")


def run_cli(argv: list[str]) -> dict:
    from thyrofast import cli

    out, err = io.StringIO(), io.StringIO()
    rc, tb = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
        except BaseException:  # noqa: BLE001 - recorded: the test fails on it
            tb = traceback.format_exc()
    return {"argv": argv, "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": tb}


def frames(n: int = 2, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 120, 160), dtype=np.uint8)


def api(work: Path, bundle: Path) -> dict:
    import numpy as np
    from PIL import Image

    import thyrofast
    from thyrofast.synth.dicom import write_us_dicom

    res: dict = {"version": thyrofast.__version__}
    x = thyrofast.preprocess(frames(), size=(32, 32))
    res["preprocess_shape"] = list(x.shape)
    img = frames(1, seed=1)[0]
    png = work / "frame.png"
    Image.fromarray(img).save(png)
    f = thyrofast.read(png)
    res["read_png"] = [list(f[0].pixels.shape), bool(np.array_equal(f[0].pixels, img))]
    dcm = write_us_dicom(work / "frame.dcm", img, patient_id="p1", region=(10, 20, 150, 110), spacing_cm=0.01)
    f = thyrofast.read(dcm)
    res["read_dicom"] = [list(f[0].pixels.shape), bool(np.array_equal(f[0].pixels, img[20:110, 10:150]))]
    res["read_compressed_dicom"] = compressed_dicom()
    clf = thyrofast.Classifier.load(bundle, precision="fp32")
    p = clf.predict(frames())
    res["classifier"] = {"backend": clf.provenance["backend"], "probs": np.asarray(p).tolist()}
    clf.close()
    return res


def compressed_dicom() -> dict | None:
    """A JPEG lossless DICOM (python-gdcm or pylibjpeg-libjpeg decode it): the error names the extra."""
    from pydicom.data import get_testdata_file

    from thyrofast import InputError, read

    path = get_testdata_file("JPEG-LL.dcm", download=False)
    if path is None:  # pydicom-data is not installed
        return None
    try:
        read(path)
    except InputError as exc:
        return {"code": exc.code, "message": str(exc)}
    return {"code": "decoded", "message": ""}


def commands(mode: str, work: Path, bundle: Path) -> list[dict]:
    png = str(work / "frame.png")
    b = str(bundle)
    if mode == "base":
        argvs = [
            ["info"],
            ["preprocess", png, "--out", str(work / "pre")],
            ["predict", b, png, "--out", str(work / "r1.jsonl"), "--no-progress"],
            ["bench", "e2e", "--bundle", b, "--rounds", "5"],
            ["bench", "infer", "--bundle", b, "--rounds", "5"],
            # these need an extra
            ["demo", str(work / "demo"), "--quick"],
            ["pretrain", str(work / "pretrain")],
            ["train", str(work), "--out", str(work / "bundle")],
            ["export", b],
            ["predict", b, png, "--out", str(work / "r2.jsonl"), "--saliency", str(work / "sal")],
            ["predict", b, png, "--out", str(work / "r3.jsonl"), "--backend", "torch"],
            ["predict", b, png, "--out", str(work / "r4.jsonl"), "--backend", "openvino"],
            ["bench", "infer"],
            ["bench", "all"],
            ["bench", "--device", "cuda"],
        ]
    elif mode == "no-bench":  # everything but OpenCV: the README's main command before the bench extra
        argvs = [["bench", "e2e", "--bundle", b, "--rounds", "5"]]
    elif mode == "no-openvino":
        argvs = [["predict", b, png, "--out", str(work / "r5.jsonl"), "--backend", "openvino"]]
    else:
        argvs = []
    return [run_cli(a) for a in argvs]


def main() -> None:
    mode, bundle, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    visible = []
    for m in OPTIONAL:
        try:
            importlib.import_module(m)
        except ImportError:
            continue
        visible.append(m)
    out = {"visible": visible}
    if mode == "base":
        out["api"] = api(work, bundle)
    else:
        from PIL import Image

        Image.fromarray(frames(1, seed=1)[0]).save(work / "frame.png")
    out["commands"] = commands(mode, work, bundle)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
