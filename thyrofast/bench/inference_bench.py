"""Inference and end-to-end benchmarks: every available backend side by side.

Targets (issue "Inference engines", CPU, batch 1, 1024x768 uint8 frame ->
probabilities, ResNet-18 1-channel at 224x224):
  * end to end >= 4x faster than OpenCV preprocessing + PyTorch eager FP32
  * end to end within 1.3x of OpenVINO INT8 inference time alone
GPU (torch FP16 + CUDA graphs, batch 1): end to end <= 1 ms (frame on the host
-> probabilities on the host).
Without ``bundle`` a timing bundle is built: ResNet-18 (width 1.0, 1 channel,
224x224) with untrained weights, FP32 ONNX and U8S8/S8S8 INT8 Q/DQ graphs
calibrated on preprocessed synthetic frames (no INT8 accuracy gate: these
graphs are for timing only).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import peers
from .preprocess_bench import synthetic_frame
from .timing import interleaved, summarize

#: GPU target (issue "GPU verification"): one host frame -> probabilities, batch 1, torch FP16 + CUDA graphs
E2E_CUDA_LIMIT_MS = 1.0

#: the end-to-end peer: OpenCV preprocessing, then the bundle's network in torch eager FP32
PEER = "OpenCV preprocessing + torch eager fp32"
PEER_KEY = "peer: OpenCV + torch eager fp32"


def timing_bundle(root: Path, arch: str = "resnet18", size: int = 224, width: float = 1.0) -> Path:
    import torch

    from .. import Preprocessor, PreprocessParams
    from ..bundle import Bundle
    from ..export import export_onnx, quantize_int8
    from ..models import arch_config, build_model

    path = root / "timing-bundle"
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, width=width).eval()
    params = PreprocessParams(size=(size, size))
    b = Bundle.create(path, state_dict=model.state_dict(), model_config=arch_config(arch, 1, width),
                      preprocess=params, input_shape=(1, size, size),
                      training={"note": "untrained weights: timing only"})
    tmp = path / "model.onnx.tmp"
    export_onnx(model, tmp, (1, size, size))
    b.add_artifact("onnx_fp32", tmp)
    calib = Preprocessor(params)(np.stack([synthetic_frame(seed=i) for i in range(16)]))
    for name, mode in (("onnx_int8_cpu", "u8s8"), ("onnx_int8_trt", "s8s8")):
        out = path / f"{name}.tmp"
        quantize_int8(b.artifact_path("onnx_fp32"), out, calib, mode=mode)
        b.add_artifact(name, out, info={"note": "timing only, not accuracy-gated"})
    return path


def _candidates(device: str) -> list[tuple[str, str]]:
    from ..engines.select import available_backends

    have = available_backends()
    if device == "cuda":
        out = [("torch", "fp16"), ("torch", "fp32")] if have.get("torch") else []
        if have.get("tensorrt"):
            out += [("tensorrt", "fp16"), ("tensorrt", "int8")]
        return out
    out = [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    if have.get("torch"):
        out.insert(0, ("torch", "fp32"))
    if have.get("openvino"):
        out += [("openvino", "fp32"), ("openvino", "int8")]
    return out


def run(what: str, device: str = "cpu", rounds: int = 40, bundle: str | None = None,
        threads: int = 2) -> list[tuple[str, dict[str, Any]]]:
    from .. import Classifier
    from .._extras import require
    from ..bundle import Bundle
    from ..engines import load_engine

    tmpdir = None
    if bundle is None:
        require("torch", "torchvision", needed_for="building the timing bundle (or pass --bundle BUNDLE)")
        tmpdir = tempfile.TemporaryDirectory(prefix="thyrofast-bench-")
        bundle = timing_bundle(Path(tmpdir.name))
    b = Bundle.load(bundle)
    frame = synthetic_frame()
    results = []
    try:
        cands = [c for c in _candidates(device)
                 if c[0] == "torch" or _artifact_ok(b, c)]
        if what in ("infer", "all"):
            x = np.zeros((1, *b.input_shape), np.float32)
            engines = {f"{be} {pr}": load_engine(b, backend=be, device=device, precision=pr, threads=threads,
                                                 max_batch=1)
                       for be, pr in cands}
            s = interleaved({k: (lambda e=e: e.run(x)) for k, e in engines.items()}, rounds=rounds)
            base = float(np.median(s["torch fp32"])) if "torch fp32" in s else None
            if base is None:
                peers.unavailable("torch fp32 eager", "torch", "torchvision")
            rows = []
            for k, v in s.items():
                rows.append({"case": f"infer batch 1: {k}", "ours": summarize(v),
                             "peer": "torch fp32 eager" + ("" if base else ": skipped (not installed)"),
                             "ratio": (base / float(np.median(v))) if base else float("nan"), "target": None,
                             "kind": "info", "pass": None})
            for e in engines.values():
                e.close()
            results.append(("infer", {"device": device, "rows": rows, "bundle": str(bundle)}))
        if what in ("e2e", "all"):
            clfs = {f"{be} {pr}": Classifier.load(b, backend=be, device=device, precision=pr, threads=threads,
                                                  max_batch=1)
                    for be, pr in cands if be != "torch" or device == "cuda"}
            contenders = {f"e2e {k}": (lambda c=c: c.predict(frame)) for k, c in clfs.items()}
            skipped = peers.unavailable(PEER, "cv2", "torch", "torchvision")
            if not skipped:  # without it thyrofast is still measured, with no ratio
                contenders[PEER_KEY] = _opencv_torch_peer(b, threads)
            ov = None
            if device == "cpu" and ("openvino int8" in clfs):
                eng = clfs["openvino int8"].engine
                xin = np.zeros((1, *b.input_shape), np.float32)
                ov = lambda: eng.run(xin)  # noqa: E731
                contenders["openvino int8 inference alone"] = ov
            s = interleaved(contenders, rounds=rounds)
            peer_med = float(np.median(s[PEER_KEY])) if PEER_KEY in s else None
            rows = []
            for k, v in s.items():
                if not k.startswith("e2e"):
                    continue
                if peer_med is None:
                    row = {"case": k, "ours": summarize(v), "peer": f"{PEER}: skipped (not installed)",
                           "target": 4.0, "kind": "speedup", "pass": None}
                else:
                    r = peer_med / float(np.median(v))
                    row = {"case": k, "ours": summarize(v), "peer": PEER, "peer_timing": summarize(s[PEER_KEY]),
                           "ratio": r, "target": 4.0, "kind": "speedup", "pass": r >= 4.0}
                if device == "cuda" and k == "e2e torch fp16":
                    # frame on the host -> probabilities on the host, CUDA graph replay
                    row["limit_ms"] = E2E_CUDA_LIMIT_MS
                    row["limit_pass"] = bool(row["ours"]["median_ms"] <= E2E_CUDA_LIMIT_MS)
                rows.append(row)
            if ov is not None and "e2e openvino int8" in s:
                r = float(np.median(s["e2e openvino int8"]) / np.median(s["openvino int8 inference alone"]))
                rows.append({"case": "e2e openvino int8 / its inference alone", "ours": summarize(s["e2e openvino int8"]),
                             "peer": "OpenVINO INT8 inference alone",
                             "peer_timing": summarize(s["openvino int8 inference alone"]), "ratio": r,
                             "target": 1.3, "kind": "x_floor", "pass": r <= 1.3})
            for c in clfs.values():
                c.close()
            if device == "cpu" and _artifact_ok(b, ("openvino", "fp32")):
                rows.extend(_runtime_rows(b, frame, rounds))
            results.append(("e2e", {"device": device, "rows": rows, "bundle": str(bundle),
                                    "skipped_peers": [skipped] if skipped else []}))
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return results


def _artifact_ok(b, cand: tuple[str, str]) -> bool:
    from ..engines.base import artifact_name

    try:
        return b.has(artifact_name(*cand))
    except ValueError:
        return False


def _opencv_torch_peer(b, threads: int):
    """The peer pipeline: cv2 INTER_AREA + medianBlur + NumPy percentile, torch eager FP32."""
    import cv2
    import torch

    model = b.build_model()
    torch.set_num_threads(threads)
    _, h, w = b.input_shape
    frame = synthetic_frame()

    def run():
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        small = cv2.medianBlur(small, 5).astype(np.float32) / 255.0
        lo, hi = np.percentile(small, (1, 99))
        x = np.clip((small - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)[None, None])
        return torch.softmax(logits, 1).numpy()

    return run


#: issue 26: the C++ runtime end to end within this factor of OpenVINO inference alone (same graph, threads)
RUNTIME_OVER_INFERENCE = 1.1


def _runtime_rows(b, frame: np.ndarray, rounds: int) -> list[dict[str, Any]]:
    """The C++ runtime beside the Python path (OpenVINO FP32, batch 1, 1 and 2 threads), and beside
    OpenVINO inference alone on the same graph with the same threads.  Rows only where the build has
    the runtime (``thyrofast.build_info()["runtime"]``)."""
    from .. import Classifier
    from .. import runtime as rt

    if not rt.available():  # build_info()["runtime_reason"] says why
        return []
    rows = []
    x = np.zeros((1, *b.input_shape), np.float32)
    for threads in (1, 2):
        cpp = Classifier.load(b, backend="openvino", precision="fp32", threads=threads, max_batch=1, runtime=True)
        py = Classifier.load(b, backend="openvino", precision="fp32", threads=threads, max_batch=1, runtime=False)
        try:
            eng = py.engine
            s = interleaved({"cpp": lambda c=cpp: c.predict(frame), "py": lambda c=py: c.predict(frame),
                             "infer": lambda e=eng: e.run(x)}, rounds=rounds)
        finally:
            cpp.close()
            py.close()
        med = {k: float(np.median(v)) for k, v in s.items()}
        tag = f"batch 1, {threads} thread{'s' if threads > 1 else ''}"
        rows.append({"case": f"e2e openvino fp32 C++ runtime, {tag}", "ours": summarize(s["cpp"]),
                     "peer": "the Python path (Python preprocessing call + Python OpenVINO engine)",
                     "peer_timing": summarize(s["py"]), "ratio": med["cpp"] / med["py"], "target": 1.0,
                     "kind": "x_floor", "pass": med["cpp"] <= med["py"]})
        rows.append({"case": f"e2e openvino fp32 C++ runtime / inference alone, {tag}", "ours": summarize(s["cpp"]),
                     "peer": "OpenVINO FP32 inference alone (same graph and threads)",
                     "peer_timing": summarize(s["infer"]), "ratio": med["cpp"] / med["infer"],
                     "target": RUNTIME_OVER_INFERENCE, "kind": "x_floor",
                     "pass": med["cpp"] / med["infer"] <= RUNTIME_OVER_INFERENCE})
    return rows
