"""Build a bundle's ONNX artifacts from its weights: FP32, FP16 and gated INT8.

* ``model.onnx`` -- FP32, dynamic batch, opset 18, exported with PyTorch's
  dynamo exporter (``torch.onnx.export(..., dynamo=True)``): BatchNorm comes out
  folded into the convolutions and the graph is plain Conv/Relu/Add/MaxPool/
  ReduceMean/Gemm for ResNets.  Input ``input`` (N, C, H, W) float32, output
  ``logits`` (N, 3) float32 (before temperature and softmax).
* ``model.fp16.onnx`` -- *strongly typed* FP16 (TensorRT 10/11 take precision
  from the graph's types, not builder flags).  Converted by :func:`convert_fp16`,
  which keeps in FP32: the graph's input and output (float32 I/O, so every
  precision is fed the same way), the node that produces the logits (the
  classifier head: tiny, and it sets the logit precision), reductions (ReduceMean
  = global average pooling, ReduceSum, ...), normalizations (LayerNormalization,
  BatchNormalization, InstanceNormalization, GroupNormalization), Softmax/
  LogSoftmax and Exp/Log/Pow/Sqrt/Reciprocal.  Explicit Cast nodes sit at every
  FP32/FP16 boundary.
* ``model.int8.qdq-s8s8.onnx`` -- explicit quantization (QuantizeLinear/
  DequantizeLinear), symmetric signed INT8 activations and per-channel symmetric
  INT8 weights: the form TensorRT's explicit-quantization path wants.
* ``model.int8.qdq-u8s8.onnx`` -- the same with unsigned (asymmetric) UINT8
  activations: the form ONNX Runtime's and OpenVINO's CPU kernels run fast
  (measured here: U8S8 ~2x faster than FP32 on this CPU; S8S8 no faster than FP32).
* Both INT8 graphs are calibrated on preprocessed training frames and written
  only if they pass the gate on validation frames: macro-AUC drop <= 0.01 vs
  FP32 and top-1 agreement >= 98% (:func:`int8_gate`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "OPSET", "INPUT_NAME", "OUTPUT_NAME", "KEEP_FP32_OPS", "export_onnx", "convert_fp16",
    "quantize_int8", "int8_gate", "export_bundle", "export_from_data", "GATE_MAX_AUC_DROP", "GATE_MIN_AGREEMENT",
    "onnx_logits",
]

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
GATE_MAX_AUC_DROP = 0.01
GATE_MIN_AGREEMENT = 0.98

#: ONNX ops :func:`convert_fp16` leaves in FP32 (numerically sensitive in half precision).
KEEP_FP32_OPS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "GlobalAveragePool", "GlobalLpPool",
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "LpNormalization", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal",
})
# (op, input index) whose float input must stay float32 whatever the node's precision.
_FP32_INPUT_SLOTS = {("Resize", 1), ("Resize", 2)}


# ------------------------------------------------------------------------ FP32 export
def export_onnx(model, path: str | os.PathLike, input_shape: Sequence[int], *,
                opset: int = OPSET) -> None:
    """Export ``model`` (eval mode, CPU) to an FP32 ONNX file with a dynamic batch axis."""
    import onnx
    import torch

    c, h, w = (int(v) for v in input_shape)
    model = model.eval().to("cpu")
    example = torch.zeros(2, c, h, w)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        with _quiet_export():
            torch.onnx.export(
                model, (example,), raw, dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                external_data=False, verbose=False,
            )
        proto = onnx.load(raw)
    _strip_debug_metadata(proto)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(proto, full_check=True)
    _save_proto(proto, path)


@contextlib.contextmanager
def _quiet_export():
    # The dynamo exporter prints progress lines and emits deprecation warnings
    # from its own dependencies; neither concerns our users.
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _strip_debug_metadata(proto) -> None:
    """Drop per-node metadata (stack traces with local file paths, FX node dumps)."""
    for node in proto.graph.node:
        del node.metadata_props[:]
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        del vi.metadata_props[:]
    del proto.metadata_props[:]
    proto.producer_name = "thyrofast"
    from ._version import __version__

    proto.producer_version = __version__


def _save_proto(proto, path) -> None:
    from ._fs import atomic_write_bytes

    atomic_write_bytes(path, proto.SerializeToString())


# ------------------------------------------------------------------------ FP16
def convert_fp16(proto, *, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS):
    """Return a strongly typed FP16 copy of the FP32 ONNX model ``proto``.

    Float32 I/O stays float32; nodes in ``keep_fp32_ops`` and the nodes producing
    graph outputs compute in FP32; every other float tensor becomes float16,
    with explicit Cast nodes at each precision boundary.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    keep = frozenset(keep_fp32_ops)
    model = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    g = model.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotImplementedError(f"convert_fp16 does not handle subgraphs ({node.op_type})")

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    elem: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for name, t in inits.items():
        elem[name] = t.data_type
    graph_outputs = {o.name for o in g.output}

    # Which precision each node computes in.
    def node_fp32(node) -> bool:
        return node.op_type in keep or any(o in graph_outputs for o in node.output)

    consumers_fp16: dict[str, bool] = {}  # initializer -> needed as fp16 by someone
    consumers_fp32: dict[str, bool] = {}
    for node in g.node:
        fp32 = node_fp32(node)
        for i, name in enumerate(node.input):
            if name in inits and inits[name].data_type == FLOAT:
                if fp32 or (node.op_type, i) in _FP32_INPUT_SLOTS:
                    consumers_fp32[name] = True
                else:
                    consumers_fp16[name] = True

    new_inits = []
    half_name: dict[str, str] = {}
    for name, t in inits.items():
        if consumers_fp16.get(name):
            arr = numpy_helper.to_array(t).astype(np.float16)
            if np.isinf(arr).any():
                raise ValueError(f"weight {name!r} overflows float16")
            hname = name if not consumers_fp32.get(name) else f"{name}__fp16"
            new_inits.append(numpy_helper.from_array(arr, hname))
            half_name[name] = hname
            if consumers_fp32.get(name):
                new_inits.append(t)
        else:
            new_inits.append(t)

    cur: dict[str, int] = {i.name: i.type.tensor_type.elem_type for i in g.input}
    for name in inits:
        cur[name] = inits[name].data_type
    cast_cache: dict[tuple[str, int], str] = {}
    out_nodes = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            new = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            out_nodes.append(helper.make_node("Cast", [name], [new], to=to, name=f"Cast_{new}"))
            cast_cache[key] = new
            cur[new] = to
        return cast_cache[key]

    for node in g.node:
        fp32 = node_fp32(node)
        want_compute = FLOAT if fp32 else HALF
        for i, name in enumerate(node.input):
            if not name or elem.get(name) != FLOAT:
                continue  # optional input, or an integer/bool tensor (shapes, axes)
            want = FLOAT if (node.op_type, i) in _FP32_INPUT_SLOTS else want_compute
            if name in inits:
                if want == HALF:
                    node.input[i] = half_name[name]
                continue
            have = cur.get(name, FLOAT)
            if have != want:
                node.input[i] = cast(name, want)
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == FLOAT and not fp32:
                to.i = HALF
        if node.op_type in ("Constant", "ConstantOfShape") and not fp32:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(
                        numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for o in node.output:
            if elem.get(o) == FLOAT:
                cur[o] = want_compute
            elif o in elem:
                cur[o] = elem[o]
        out_nodes.append(node)

    for o in g.output:  # graph outputs stay float32
        if cur.get(o.name) == HALF:  # pragma: no cover - producers of outputs are fp32
            raise AssertionError(f"output {o.name} ended up fp16")

    new_graph = helper.make_graph(out_nodes, g.name, list(g.input), list(g.output),
                                  initializer=new_inits)
    result = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                               producer_name=model.producer_name,
                               producer_version=model.producer_version)
    result.ir_version = model.ir_version
    result = onnx.shape_inference.infer_shapes(result, strict_mode=True)
    onnx.checker.check_model(result, full_check=True)
    return result


# ------------------------------------------------------------------------ INT8
class _FramesReader:
    """onnxruntime CalibrationDataReader over an (N, C, H, W) float array."""

    def __init__(self, frames: np.ndarray, batch: int = 8):
        self._frames = np.ascontiguousarray(frames, dtype=np.float32)
        self._batch = batch
        self._i = 0

    def get_next(self):
        if self._i >= len(self._frames):
            return None
        x = self._frames[self._i:self._i + self._batch]
        self._i += self._batch
        return {INPUT_NAME: x}

    def rewind(self):
        self._i = 0


@contextlib.contextmanager
def _quiet_ort_quant():
    # onnxruntime.quantization logs advice through the root logger and prints
    # progress to stdout.
    import io

    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: np.ndarray,
                  *, mode: str, method: str = "minmax") -> None:
    """Quantize an FP32 ONNX model to explicit Q/DQ INT8 with per-channel weights.

    ``mode``: ``"s8s8"`` (symmetric INT8 activations and weights; TensorRT) or
    ``"u8s8"`` (UINT8 activations, INT8 weights; CPU runtimes).  ``calib``:
    preprocessed frames (N, C, H, W) the activation ranges are measured on.
    ``method``: ``"minmax"`` or ``"percentile"`` (99.999th, clips outliers).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if mode not in ("s8s8", "u8s8"):
        raise ValueError(f"mode must be 's8s8' or 'u8s8', got {mode!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    calib = np.asarray(calib)
    if calib.ndim != 4 or len(calib) == 0:
        raise ValueError(f"calibration frames must be a non-empty (N, C, H, W) array, got {calib.shape}")
    extra = {"CalibPercentile": 99.999} if method == "percentile" else {}
    if mode == "s8s8":
        act, extra = QuantType.QInt8, {**extra, "ActivationSymmetric": True, "WeightSymmetric": True}
    else:
        act, extra = QuantType.QUInt8, {**extra, "WeightSymmetric": True}
    # Equal-sized batches: the histogram collectors stack per-batch arrays.
    batch = min(8, len(calib))
    calib = calib[:len(calib) - len(calib) % batch]
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp, _quiet_ort_quant():
        tmp_out = os.path.join(tmp, "q.onnx")
        quantize_static(
            os.fspath(fp32_path), tmp_out, _FramesReader(calib, batch),
            quant_format=QuantFormat.QDQ, activation_type=act, weight_type=QuantType.QInt8,
            per_channel=True, calibrate_method=methods[method], extra_options=extra,
        )
        data = Path(tmp_out).read_bytes()
    from ._fs import atomic_write_bytes

    atomic_write_bytes(out_path, data)


def onnx_logits(model: str | os.PathLike | bytes, frames: np.ndarray, *, batch: int = 64,
                threads: int | None = None) -> np.ndarray:
    """Run an ONNX model on the CPU with ONNX Runtime; returns float32 logits (N, 3)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else os.fspath(model)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: frames[i:i + batch]})[0]
           for i in range(0, len(frames), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def int8_gate(fp32_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray, *,
              max_auc_drop: float = GATE_MAX_AUC_DROP, min_agreement: float = GATE_MIN_AGREEMENT) -> dict:
    """Compare INT8 with FP32 logits on validation frames.

    Passes when the image-level macro-AUC of INT8 is at most ``max_auc_drop``
    below FP32's and top-1 agreement is at least ``min_agreement``.
    """
    from .train._metrics import macro_auc, softmax

    labels = np.asarray(labels)
    p32, p8 = softmax(fp32_logits), softmax(int8_logits)
    auc32, auc8 = macro_auc(labels, p32), macro_auc(labels, p8)
    agreement = float(np.mean(p32.argmax(1) == p8.argmax(1)))
    reasons = []
    if not np.isfinite(auc8) or auc32 - auc8 > max_auc_drop:
        reasons.append(f"macro-AUC {auc8:.4f} vs FP32 {auc32:.4f} (allowed drop {max_auc_drop})")
    if agreement < min_agreement:
        reasons.append(f"top-1 agreement {agreement:.2%} < {min_agreement:.0%}")
    return {"passed": not reasons, "auc_fp32": float(auc32), "auc_int8": float(auc8),
            "agreement": agreement, "n_frames": int(len(labels)), "reason": "; ".join(reasons)}


# ------------------------------------------------------------------------ a whole bundle
def export_bundle(bundle, *, fp16: bool = True, int8: bool = False,
                  calib: np.ndarray | None = None, val_frames: np.ndarray | None = None,
                  val_labels: np.ndarray | None = None, n_calib: int = 128, seed: int = 0,
                  log=print) -> dict:
    """(Re)build a bundle's ONNX artifacts from its weights; returns a report dict.

    ``int8`` needs ``calib`` (preprocessed training frames) and ``val_frames`` /
    ``val_labels`` for the gate.  An INT8 graph that fails the gate is not
    written (and a stale one is removed); the report says why.
    """
    import onnx

    from .bundle import Bundle

    if not isinstance(bundle, Bundle):
        # Only the weights are read (and verified); ONNX artifacts are rebuilt,
        # so a missing or damaged one must not stop the export.
        bundle = Bundle.load(bundle, verify=False)
    report: dict = {}
    model = bundle.build_model()
    d = bundle.path

    tmp = d / ".model.onnx.tmp"
    export_onnx(model, tmp, bundle.input_shape)
    bundle.add_artifact("onnx_fp32", tmp, info={"precision": "fp32", "opset": OPSET,
                                               "exporter": "torch.onnx dynamo"})
    report["onnx_fp32"] = "written"
    fp32_path = bundle.artifact_path("onnx_fp32")

    if fp16:
        half = convert_fp16(onnx.load_from_string(bundle.read_artifact("onnx_fp32")))
        tmp = d / ".model.fp16.onnx.tmp"
        _save_proto(half, tmp)
        bundle.add_artifact("onnx_fp16", tmp, info={
            "precision": "fp16", "strongly_typed": True, "io_dtype": "float32",
            "kept_fp32": sorted(KEEP_FP32_OPS) + ["graph-output producer (classifier head)"]})
        report["onnx_fp16"] = "written"

    if not int8:
        # INT8 graphs are kept as they are (same weights), unless damaged.
        from .bundle import BundleIntegrityError

        for name in ("onnx_int8_trt", "onnx_int8_cpu"):
            if bundle.has(name):
                try:
                    bundle.artifact_path(name)
                except BundleIntegrityError as exc:
                    bundle.remove_artifact(name)
                    report[name] = f"removed: {exc}"
                    log(f"{name} removed ({exc}); rebuild it with --int8 --calib DATA")
    else:
        if calib is None or val_frames is None or val_labels is None:
            raise ValueError("int8 export needs calibration frames and validation frames + labels")
        rng = np.random.default_rng(seed)
        calib = np.asarray(calib)
        if len(calib) > n_calib:
            calib = calib[np.sort(rng.choice(len(calib), n_calib, replace=False))]
        ref = onnx_logits(fp32_path, val_frames)
        for name, mode in (("onnx_int8_trt", "s8s8"), ("onnx_int8_cpu", "u8s8")):
            gate = None
            for method in ("minmax", "percentile"):
                tmp = d / f".{name}.tmp"
                quantize_int8(fp32_path, tmp, calib, mode=mode, method=method)
                gate = int8_gate(ref, onnx_logits(tmp, val_frames), val_labels)
                gate["calibration"] = method
                if gate["passed"]:
                    bundle.add_artifact(name, tmp, info={
                        "precision": "int8", "quantization": f"qdq-{mode}", "per_channel": True,
                        "calibration": method, "n_calib_frames": int(len(calib)),
                        "gate": {k: gate[k] for k in ("auc_fp32", "auc_int8", "agreement", "n_frames")}})
                    break
                tmp.unlink(missing_ok=True)
            report[name] = gate
            if not gate["passed"]:
                bundle.remove_artifact(name)
                log(f"INT8 {mode} not written: {gate['reason']}; keeping FP32/FP16")
    return report


def export_from_data(bundle, data, *, fp16: bool = True, n_calib: int = 128, seed: int = 0,
                     progress: bool = True, log=print) -> dict:
    """Export ``bundle`` with INT8 calibrated on the training patients of cohort ``data`` and gated on
    its validation patients (the bundle's own preprocessing and read options).

    ``thyrofast export --int8 --calib DATA`` and the demo call this.
    """
    from .bundle import Bundle
    from .io.schema import file_read_options
    from .train.data import load_frames, read_manifest, split_records

    if isinstance(n_calib, bool) or not isinstance(n_calib, int) or n_calib < 1:
        raise ValueError(f"n_calib must be a positive integer, got {n_calib!r}")
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle, verify=False)  # export rebuilds the ONNX files
    # Same patient split as training (same fraction and seed) when the manifest has no val split.
    cfg = bundle.manifest.get("training", {}).get("config", {})
    val_fraction = cfg.get("val_fraction", 0.15)
    seed = cfg.get("seed", seed)
    # files read as in training and predict (the bundle's read options: tissue crop, annotation masking),
    # so INT8 is tuned and gated on what it will see; crop="panes" expands the records per pane as training did
    opts = file_read_options(bundle.read_options or {})
    records = read_manifest(data, classes=bundle.classes, crop=opts["crop"])
    split = split_records(records, val_fraction=val_fraction, seed=seed, classes=bundle.classes)
    rng = np.random.default_rng(seed)
    calib_idx = sorted(rng.permutation(split.train)[:n_calib].tolist())
    params = bundle.preprocess_params
    calib, _ = load_frames(records, calib_idx, params, progress=progress, read=opts)
    val, _ = load_frames(records, split.val, params, progress=progress, read=opts)
    labels = np.array([records[i].label for i in split.val])
    return export_bundle(bundle, fp16=fp16, int8=True, calib=calib, val_frames=val.astype(np.float32),
                         val_labels=labels, n_calib=n_calib, seed=seed, log=log)
