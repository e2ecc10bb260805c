"""The training loop: data -> CNN -> calibrated, exported model bundle.

Design notes (why, briefly):
* Frames are preprocessed once (thyrofast's core, the bundle's exact
  parameters) and augmented as tensors; the CPU time goes to the CNN.
* Class imbalance: the loss weights each class by N / (K * n_k) so the rare
  class (NMTN) is learnt; afterwards the classifier bias is shifted by
  -log(weight) so deployed probabilities reflect the training class
  frequencies again (the weighted optimum is p(k|x) * w_k; Menon et al. 2021,
  "logit adjustment").  Temperature scaling then calibrates on validation.
* Sample order comes from DistributedSampler in every mode (num_replicas=1 when
  alone), and augmentation draws are indexed by sample, so a global batch holds
  the same samples augmented the same way whatever the number of processes.
  The loss is sum(weight * CE) / batch size, so DDP's gradient averaging gives
  the single-process gradient.  BatchNorm: on CUDA, DDP uses SyncBatchNorm
  (exactly the single-process model); on CPU (gloo, no SyncBatchNorm) each
  process normalizes its own share of the batch, which single-process
  training reproduces with ``ghost_batches=world_size`` (tested).
* Deterministic on the CPU: seeded model init, sampler and augmentation, and
  ``torch.use_deterministic_algorithms`` while training.
* The epoch loop is :func:`thyrofast.train.engine.fit`, shared with pretraining;
  this module supplies the data, the step and the end-of-epoch hooks (validation,
  checkpoint, the early-stop decision).  Configuration: :mod:`thyrofast.train.config`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _metrics as M
from .augment import AugmentConfig, augment, epoch_table
from .aux import aux_loss, aux_targets_from_records
from .checkpoint import load_checkpoint, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from .config import DEFAULTS, TrainConfig, config_to_dict, default_width, merged_fields, resolve_device
from .data import data_fingerprint, load_frames, manifest_csv, read_manifest, split_records
from .engine import Epoch, Progress, fit
from .heads import class_heads, multi_task
from .optim import Schedule, param_groups
from .precise_bn import bn_layers, precise_bn

__all__ = ["TrainConfig", "train", "DEFAULTS", "config_to_dict", "default_width", "resolve_device"]

WORK_DIR = ".train"  # inside the bundle folder: checkpoints and the frame cache


# ---------------------------------------------------------------------------- helpers
def _dist_info():
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        return world, int(os.environ.get("RANK", "0")), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), False
    return 1, 0, False


def _predict_logits(model, frames, device, batch: int = 128, amp_dtype=None) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.asarray(frames[i:i + batch], dtype=np.float32)).to(device)
            if amp_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    y = model(x)
            else:
                y = model(x)
            out.append(y.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _patient_probs(logits: np.ndarray, labels: np.ndarray, patients: list[str], temperature: float = 1.0,
                   aggregation: Any = "mean_log_prob") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(image probs, patient labels, patient probs, patient ids), as deployed (temperature, aggregation)."""
    from ..aggregation import aggregate

    probs = np.exp(M.log_softmax(logits / temperature))
    agg = aggregate(probs, patients, aggregation) if len(patients) else {}
    ids = list(agg)
    pprobs = np.array([agg[p][0] for p in ids]) if ids else np.zeros((0, logits.shape[1]))
    plabels = np.array([labels[patients.index(p)] for p in ids])
    return probs, plabels, pprobs, ids


def _evaluate(logits: np.ndarray, labels: np.ndarray, patients: list[str],
              temperature: float = 1.0, aggregation: Any = "mean_log_prob") -> dict:
    probs, plabels, pprobs, ids = _patient_probs(logits, labels, patients, temperature, aggregation)
    return {
        "image_macro_auc": M.macro_auc(labels, probs),
        "patient_macro_auc": M.macro_auc(plabels, pprobs),
        "image_accuracy": float(np.mean(probs.argmax(1) == labels)) if len(labels) else float("nan"),
        "patient_accuracy": float(np.mean(pprobs.argmax(1) == plabels)) if len(ids) else float("nan"),
        "image_nll": M.nll(logits, labels, temperature) if len(labels) else float("nan"),
        "image_ece": M.ece(labels, probs),
        "patient_ece": M.ece(plabels, pprobs),
        "n_images": int(len(labels)),
        "n_patients": int(len(ids)),
    }


def _finite(d: dict) -> dict:
    """JSON-safe copy (NaN -> None)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# ---------------------------------------------------------------------------- train
#: train()'s keywords that are not TrainConfig fields: how a run goes, not what it trains
RUN_DEFAULTS: dict[str, Any] = dict(
    device="cpu", resume=False, progress=True, export=True, int8=True, threads=None, positive=None,
    target_sensitivity=None, check=True, allow_duplicates=False, init=None, init_member=None, endpoints=None,
    conformal_alpha=0.1, log=None)
_ALIASES = {"augment_config": "augment"}


def _augment_config(value) -> AugmentConfig:
    if isinstance(value, AugmentConfig):
        return value
    return AugmentConfig(**dict(value)) if value is not None else DEFAULTS.augment


_COERCE = {"width": float, "image_size": int, "epochs": int, "batch_size": int, "lr": float, "patience": int,
           "val_fraction": float, "seed": int, "ghost_batches": int, "preprocess": lambda v: dict(v or {}),
           "pretrained": lambda v: os.fspath(v) if v else None, "aux_weight": float,
           "backbone_lr_scale": float, "augment": _augment_config}


def train(data: str | os.PathLike, out: str | os.PathLike, config: TrainConfig | None = None, **overrides):
    """Train a CNN on the cohort ``data`` and write a model bundle to ``out``.

    ``data``: a manifest CSV (docs/contracts.md) or a folder holding
    ``manifest.csv``.  Training uses the ``train`` patients; validation (early
    stopping, temperature, INT8 gate) the ``val`` patients, or a seeded 15% of
    the training patients when the manifest has none; ``test`` patients are
    never read.  ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``.  Run under
    ``torchrun`` for DistributedDataParallel (one process per GPU, or gloo on
    CPUs).  ``resume`` continues from the last checkpoint in ``out/.train``.
    ``export``: also write FP32/FP16 ONNX, and with ``int8`` the gated INT8
    Q/DQ graphs.  ``threads``: torch and preprocessing threads (default: torch's
    own choice, all cores).  ``aux_weight``: weight of the auxiliary heads that
    learn the findings the manifest annotates per image (view, TI-RADS lexicon,
    lymph-node features; see :mod:`thyrofast.train.aux`), training only; 0 turns
    them off.  ``crop``: how :func:`thyrofast.read` crops each file ("detect":
    the DICOM tissue region, else the detected ultrasound field; stored in the
    bundle so ``predict``/``evaluate`` read files the same way).
    ``mask_annotations``: read every file with ``thyrofast.read(...,
    mask_annotations=True)`` (burned-in calipers and text inside the field filled
    from the tissue around); stored in the bundle's ``read`` options like ``crop``.
    ``aggregation``: the image -> patient rule stored in the bundle,
    "pooled_logistic" (fitted on the training patients) or "mean_log_prob".
    ``augment_config``: an :class:`AugmentConfig` (or its fields as a dict)
    for the training-time augmentation.  ``backbone_lr_scale``: the backbone's
    learning rate relative to the heads' (below 1 keeps the features of a
    ``pretrained`` backbone while the new class head learns).  ``epochs=0``
    trains nothing: the ``pretrained`` network, class head included (as
    ``thyrofast pretrain`` writes it), is kept as it is, and the cohort only
    fits the prior correction, the temperature and the image -> patient rule.
    An ensemble file (``thyrofast pretrain --members N``) is only used that
    way: its members' logits are averaged in the bundle's one model.
    ``positive``: the class whose probability gets a decision threshold (the
    operating point, stored in the bundle card and used by ``predict``'s
    ``decision``; :mod:`thyrofast.operating_point`); default for 2 classes the
    second in order (``malignant`` of benign/malignant), for more classes none
    (the argmax).  The threshold is chosen on the validation patients: Youden's
    J, or with ``target_sensitivity`` S the highest threshold with sensitivity
    >= S.  ``check``: first run :func:`thyrofast.check.check_before_training`
    (``thyrofast check``): exact duplicates across patients refuse training
    (``InputError``) unless ``allow_duplicates``; near duplicates are warned about.
    ``init``: fine-tune from a pretrained file (:mod:`thyrofast.train.init`):
    a bundle folder, or a ``.safetensors`` network or ensemble (member
    ``init_member``, default 0), e.g. torchvision weights converted to
    safetensors; it is checked against the architecture first and used as
    ``pretrained``.
    ``endpoints``: named binary endpoints declared in the bundle
    (``["malignant=NMTN+MMTN"]``; :mod:`thyrofast.evaluate.endpoints`), which
    ``evaluate`` with the bundle reports by default.
    ``config``: a whole :class:`TrainConfig` (default :data:`DEFAULTS`); the keywords
    override its fields: any field by its name (``augment_config``: ``augment``, an
    :class:`AugmentConfig` or its fields as a dict; ``width`` None: the config's, or without a
    config the architecture's default), plus the run options of :data:`RUN_DEFAULTS`
    (``device`` .. ``log``, described above).  Unknown keywords raise TypeError.
    Returns the :class:`thyrofast.bundle.Bundle` (on rank 0; the other DDP
    ranks return None).
    """
    import torch
    import torch.distributed as dist
    from tqdm.auto import tqdm

    from ..models import arch_config, pretrained_has_head, pretrained_members

    run = {k: overrides.pop(k) if k in overrides else v for k, v in RUN_DEFAULTS.items()}
    if overrides.get("width", 0) is None:
        del overrides["width"]
    fields = merged_fields(config if config is not None else DEFAULTS, overrides, what="train",
                           aliases=_ALIASES, coerce=_COERCE)
    if config is None and "width" not in overrides:
        fields["width"] = float(default_width(fields["arch"]))
    fields["preprocess"] = dict(fields["preprocess"] or {})
    device, resume, progress, export, int8, threads = (run[k] for k in ("device", "resume", "progress", "export",
                                                                        "int8", "threads"))
    positive, target_sensitivity, conformal_alpha = run["positive"], run["target_sensitivity"], run["conformal_alpha"]
    init, log = run["init"], run["log"]
    declared = None
    if run["endpoints"]:  # checked against the data's classes before any work
        from ..evaluate.endpoints import parse_endpoints
        from ..io.manifest import read_dataset

        recs = read_dataset(data, classes=None)
        declared = {k: list(v) for k, v in parse_endpoints(run["endpoints"],
                                                           recs[0].classes if recs else ()).items()}
    init_note = None
    if init is not None:
        if fields["pretrained"]:
            raise ValueError("give init (--init) or pretrained (--pretrained), not both")
        from .init import prepare_init

        fields["pretrained"], init_note = prepare_init(
            init, Path(out) / WORK_DIR / "init", arch=fields["arch"], in_channels=fields["in_channels"],
            width=float(fields["width"]), member=run["init_member"])
    cfg = TrainConfig(**fields)
    arch_config(cfg.arch, cfg.in_channels, cfg.width)  # validates arch / width early
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"the bundle folder {out} is an existing file")
    if cfg.pretrained and not Path(cfg.pretrained).is_file():
        raise ValueError(f"pretrained checkpoint not found: {cfg.pretrained}")
    members = pretrained_members(cfg.pretrained) if cfg.pretrained else 1  # > 1 only with epochs=0
    if members > 1 and cfg.epochs > 0:
        raise ValueError(f"{cfg.pretrained} is an ensemble: it is used as it is (epochs=0); "
                         "train a single network for epochs > 0")
    if cfg.epochs == 0:
        if not pretrained_has_head(cfg.pretrained, cfg.arch, cfg.in_channels, cfg.width, num_classes=None):
            raise ValueError(f"epochs=0 keeps the pretrained class head, but {cfg.pretrained} has none for "
                             f"{cfg.arch} (a backbone pretrained with diagnosis_weight=0?): train for some epochs")

    if run["check"]:  # every rank checks (same data, same answer): a refusal stops them all before any group forms
        from ..check import check_before_training

        quiet = int(os.environ.get("RANK", "0")) != 0
        check_before_training(data, allow_duplicates=run["allow_duplicates"], progress=False,
                              say=(lambda msg: None) if quiet else (log or (lambda msg: tqdm.write(msg))))
    world, rank, own_group = _dist_info()
    device = resolve_device(device)
    if own_group:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    if world > 1 and cfg.ghost_batches != 1:
        raise ValueError("ghost_batches is for single-process runs (it emulates DDP's BatchNorm)")
    main = rank == 0
    say = (log or (lambda msg: tqdm.write(msg))) if main else (lambda msg: None)
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads:
        # Small CNNs on a busy CPU: one thread can be several times faster than
        # two (OpenMP barriers stall when cores are shared); let the user choose.
        torch.set_num_threads(int(threads))
    if target_sensitivity is not None and not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity!r}")
    if conformal_alpha is not None and not 0.0 < float(conformal_alpha) < 1.0:
        raise ValueError(f"conformal_alpha must be in (0, 1), got {conformal_alpha!r}")
    op_request = {"positive": positive, "target_sensitivity": target_sensitivity,
                  "conformal_alpha": conformal_alpha}
    try:
        if init_note:
            say(f"init: {init_note}")
        result = _run(cfg, members, data, Path(out), dev, world, rank, main, resume, progress, export,
                      int8, threads, say, t_start, op_request,
                      head_classes=_head_classes(cfg.pretrained, init) if cfg.epochs == 0 else None)
        if result is not None and declared:
            result.update(endpoints=declared)
        if result is not None and init_note:
            result.update(training={**result.manifest["training"],
                                    "init": {"source": str(Path(init).resolve()), "loaded": init_note}})
    finally:
        torch.set_num_threads(old_threads)
        if own_group and dist.is_initialized():
            dist.destroy_process_group()
    return result


def _run(cfg: TrainConfig, members: int, data, out: Path, dev, world: int, rank: int, main: bool, resume: bool,
         progress: bool, export: bool, int8: bool, threads, say, t_start: float, op_request=None,
         head_classes: tuple[str, ...] | None = None):
    op_request = dict(op_request or {})
    d = _load_data(cfg, data, out, world, main, threads, progress, say, op_request, head_classes)
    model, multi, best, history, epoch_seconds = _fit(cfg, d, members, out, dev, world, rank, main, resume,
                                                      progress, say)
    if not main:
        return None
    return _finalize(cfg, d, model, multi, best, history, epoch_seconds, members=members, data=data, out=out,
                     dev=dev, world=world, export=export, int8=int8, say=say, t_start=t_start,
                     op_request=op_request)


@dataclasses.dataclass
class _Data:
    """The cohort as training sees it: the split, the preprocessed frames, the labels, the class weights."""

    records: list
    classes: tuple
    split: Any
    params: Any
    positive: str | None
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: np.ndarray
    p_val: list
    fingerprint: str
    aux: Any
    counts: np.ndarray
    class_w: np.ndarray
    log_w: np.ndarray


def _load_data(cfg: TrainConfig, data, out: Path, world: int, main: bool, threads, progress: bool, say,
               op_request: dict, head_classes) -> _Data:
    """Read and split the cohort, check the request against its classes, and preprocess its frames."""
    import torch
    import torch.distributed as dist

    from .. import PreprocessParams

    records = read_manifest(data, crop=cfg.crop)  # classes from the data: the manifest's labels or the class folders
    CLASSES = records[0].classes if records else ()
    split = split_records(records, val_fraction=cfg.val_fraction, seed=cfg.seed, classes=CLASSES)
    say(f"classes: {', '.join(CLASSES)}")
    op_request = dict(op_request or {})
    positive = op_request.get("positive")
    if positive is not None:
        names = [c.casefold() for c in CLASSES]
        if str(positive).casefold() not in names:
            raise ValueError(f"positive class {positive!r} is not one of the data's classes ({', '.join(CLASSES)})")
        positive = CLASSES[names.index(str(positive).casefold())]
    elif len(CLASSES) == 2:
        positive = CLASSES[1]
    elif op_request.get("target_sensitivity") is not None:
        raise ValueError(f"a target sensitivity needs a positive class (--positive) with {len(CLASSES)} classes")
    if cfg.epochs == 0:
        from ..models import pretrained_has_head

        if head_classes is not None and [c.casefold() for c in head_classes] != [c.casefold() for c in CLASSES]:
            raise ValueError(f"epochs=0 keeps the class head of {cfg.pretrained} as it is, but that head was trained "
                             f"for the classes {', '.join(head_classes)} and the data's classes are "
                             f"{', '.join(CLASSES)}: train for some epochs (--epochs N) to fit a head to the "
                             "data's classes")
        if not pretrained_has_head(cfg.pretrained, cfg.arch, cfg.in_channels, cfg.width, len(CLASSES)):
            raise ValueError(f"epochs=0 keeps the pretrained class head, but {cfg.pretrained} has no "
                             f"{len(CLASSES)}-class head for the data's classes ({', '.join(CLASSES)}): "
                             "train for some epochs")
    pre_kwargs = {"size": (cfg.image_size, cfg.image_size), "channels": cfg.in_channels}
    pre_kwargs.update(cfg.preprocess)
    params = PreprocessParams(**pre_kwargs)
    work = out / WORK_DIR
    indices = split.train + split.val
    if main:
        frames, frames_key = load_frames(records, indices, params, cache_dir=work / "cache",
                                         threads=threads, progress=progress, read=cfg.read_options)
    if world > 1:
        dist.barrier()  # rank 0 has written the cache; the others read it
    if not main:
        frames, frames_key = load_frames(records, indices, params, cache_dir=work / "cache",
                                         threads=threads, progress=False, read=cfg.read_options)
    n_train = len(split.train)
    x_all = torch.from_numpy(np.ascontiguousarray(frames))
    x_train, x_val = x_all[:n_train], x_all[n_train:]
    y_train = torch.tensor([records[i].label for i in split.train], dtype=torch.long)
    y_val = np.array([records[i].label for i in split.val])
    p_val = [records[i].patient_id for i in split.val]
    fingerprint = hashlib.sha256(f"{data_fingerprint(records, split)}:{frames_key}".encode()).hexdigest()
    # epochs=0 trains nothing, so it needs no auxiliary heads
    csv_path = manifest_csv(data)  # None: class folders, which annotate nothing
    aux = (aux_targets_from_records(records) if csv_path and cfg.aux_weight > 0 and cfg.epochs > 0
           else None)
    if aux is not None:
        aux = aux.take(split.train)
        if not aux.mask.any():
            aux = None
    if aux is not None:
        say("auxiliary finding heads (training only): "
            + ", ".join(f"{k} ({n})" for k, n in aux.summary().items() if n))

    counts = np.bincount(y_train.numpy(), minlength=len(CLASSES)).astype(np.float64)
    if cfg.class_weighting == "balanced":
        class_w = counts.sum() / (len(CLASSES) * counts)
    else:
        class_w = np.ones(len(CLASSES))
    log_w = np.log(class_w)
    return _Data(records=records, classes=CLASSES, split=split, params=params, positive=positive, x_train=x_train,
                 y_train=y_train, x_val=x_val, y_val=y_val, p_val=p_val, fingerprint=fingerprint, aux=aux,
                 counts=counts, class_w=class_w, log_w=log_w)



def _fit(cfg: TrainConfig, d: _Data, members: int, out: Path, dev, world: int, rank: int, main: bool,
         resume: bool, progress: bool, say):
    """Build the model and train it (the epoch loop: :func:`thyrofast.train.engine.fit`); on rank 0
    returns (model, multi-task wrapper or None, best, history, epoch seconds)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.utils.data import DistributedSampler

    from ..models import build_model

    CLASSES, aux, log_w, fingerprint = d.classes, d.aux, d.log_w, d.fingerprint
    x_train, y_train, x_val, y_val, p_val = d.x_train, d.y_train, d.x_val, d.y_val, d.p_val
    n_train = len(d.split.train)
    work = out / WORK_DIR
    if aux is not None:
        aux_values = torch.from_numpy(aux.values)
        aux_mask = torch.from_numpy(aux.mask)
    w_t = torch.tensor(d.class_w, dtype=torch.float32, device=dev)

    # ---------------- model / optimizer
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, in_channels=cfg.in_channels, width=cfg.width,
                        pretrained=cfg.pretrained, members=members, num_classes=len(CLASSES)).to(dev)
    # NHWC: faster convolutions on the GPU's tensor cores and in oneDNN on the CPU (1.3-2x measured)
    model = model.to(memory_format=torch.channels_last)
    multi = multi_task(model, aux.width).to(dev) if aux is not None else None
    trainable = multi if multi is not None else model
    heads = class_heads(model) + ([multi.aux] if multi is not None else [])
    groups = param_groups(trainable, cfg.weight_decay, heads, cfg.backbone_lr_scale)
    for g in groups:
        if g["lr_scale"] == 0.0:
            # a frozen backbone needs no gradients: backward stops at the heads (~3x faster steps)
            for p in g["params"]:
                p.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    amp_dtype = None
    scaler = None
    if dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")

    local_bs = cfg.batch_size // world
    sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / local_bs)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    # ---------------- resume
    start_epoch, step = 0, 0
    best = {"metric": -math.inf, "epoch": -1, "state": None}
    history: list[dict] = []
    stale = 0
    ckpt_dir = work / "checkpoint"
    cfg_json = json.loads(json.dumps(cfg.to_dict()))
    if resume:
        loaded = load_checkpoint(ckpt_dir)
        if loaded is not None:
            tensors, meta = loaded
            if meta.get("config") != cfg_json or meta.get("fingerprint") != fingerprint \
                    or meta.get("world_size") != world:
                raise ValueError("cannot resume: the checkpoint in "
                                 f"{ckpt_dir} was made with other settings, data or process "
                                 "count; start without --resume (or use another --out)")
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            if multi is not None:
                multi.aux.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aux.")})
            optimizer_from_flat(opt, tensors, meta["optimizer"])
            best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            best = {"metric": meta["best"]["metric"], "epoch": meta["best"]["epoch"],
                    "state": best_state or None}
            if best["metric"] is None:
                best["metric"] = -math.inf
            start_epoch, step = int(meta["epoch"]), int(meta["step"])
            history = list(meta["history"])
            stale = int(meta["stale"])
            if scaler is not None and meta.get("grad_scale"):
                scaler.update(float(meta["grad_scale"]))
            say(f"resuming after epoch {start_epoch} (best patient macro-AUC "
                f"{best['metric']:.4f} at epoch {best['epoch'] + 1})")
    elif main and (ckpt_dir / "checkpoint.json").exists():
        for f in ckpt_dir.iterdir():
            f.unlink()

    net = trainable
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if dev.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainable)
            trainable = net
            if multi is not None:
                model = multi.model
            else:
                model = net
        net = DDP(trainable, device_ids=[dev.index] if dev.type == "cuda" else None)

    bns = bn_layers(model)
    bn_momentum = [m.momentum for m in bns]
    chunks = cfg.ghost_batches

    def train_step(idx: torch.Tensor, table: torch.Tensor) -> float:
        x = x_train[idx].to(dev, dtype=torch.float32, non_blocking=True)
        x = augment(x, table[idx], cfg.augment)
        y = y_train[idx].to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        parts = [torch.arange(k, len(idx), chunks) for k in range(chunks)] if chunks > 1 else [None]
        for k, part in enumerate(parts):
            xs, ys = (x, y) if part is None else (x[part], y[part])
            if part is not None:  # ghost batch k: only the first updates BN running stats (as DDP rank 0)
                for m, mom in zip(bns, bn_momentum):
                    m.momentum = mom if k == 0 else 0.0
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(xs)
            if multi is not None:
                logits, aux_pred = logits
            ce = F.cross_entropy(logits.float(), ys, reduction="none",
                                 label_smoothing=cfg.label_smoothing)
            loss = (ce * w_t[ys]).sum() / len(idx)
            if multi is not None:
                rows = idx if part is None else idx[part]
                loss = loss + cfg.aux_weight * (len(rows) / len(idx)) * aux_loss(
                    aux_pred.float(), aux_values[rows].to(dev), aux_mask[rows].to(dev), aux.tasks)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach())
        if chunks > 1:
            for m, mom in zip(bns, bn_momentum):
                m.momentum = mom
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return total

    # ---------------- epochs
    def epoch_batches(epoch: int) -> list:
        nonlocal table
        model.train()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        table = epoch_table(n_train, cfg.seed, epoch)
        return [order[b:b + local_bs] for b in range(0, len(order), local_bs)]

    table = None
    epoch_seconds = []

    def validate(ep: Epoch) -> None:
        nonlocal best, stale
        # every rank (SyncBatchNorm on CUDA needs them all; same data -> same stats)
        precise_bn(model, x_train, dev, cfg.seed)
        if not main:
            return
        logits = _predict_logits(model, x_val, dev) - log_w
        ev = _evaluate(logits, y_val, p_val)
        metric = ev["patient_macro_auc"]
        if not math.isfinite(metric):
            metric = ev["image_macro_auc"]
        if metric > best["metric"] + 1e-6:
            best = {"metric": metric, "epoch": ep.index,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            stale = 0
        else:
            stale += 1
        row = {"epoch": ep.index + 1, "loss": float(np.mean(ep.losses)),
               "lr": opt.param_groups[0]["lr"], "val_patient_macro_auc": ev["patient_macro_auc"],
               "val_image_macro_auc": ev["image_macro_auc"], "val_image_nll": ev["image_nll"],
               "seconds": time.perf_counter() - ep.started, "train_seconds": ep.train_seconds}
        history.append(_finite(row))
        epoch_seconds.append(ep.train_seconds)
        ep.bar.set_postfix(loss=f"{row['loss']:.3f}", auc=f"{ev['patient_macro_auc']:.3f}",
                           best=f"{best['metric']:.3f}")
        ep.stop = stale >= cfg.patience and ep.index + 1 < cfg.epochs

    def checkpoint(ep: Epoch) -> None:
        if not main:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if multi is not None:
            tensors.update({f"aux.{k}": v for k, v in multi.aux.state_dict().items()})
        tensors.update({f"best.{k}": v for k, v in (best["state"] or {}).items()})
        opt_t, opt_meta = optimizer_to_flat(opt)
        tensors.update(opt_t)
        save_checkpoint(ckpt_dir, tensors, {
            "epoch": ep.index + 1, "step": ep.step, "config": cfg_json, "fingerprint": fingerprint,
            "world_size": world, "optimizer": opt_meta, "history": history, "stale": stale,
            "best": {"metric": best["metric"] if math.isfinite(best["metric"]) else None,
                     "epoch": best["epoch"]},
            "grad_scale": float(scaler.get_scale()) if scaler is not None else None,
        })

    def agree_to_stop(ep: Epoch) -> None:
        if world > 1:  # rank 0 decides
            decision = torch.tensor([1.0 if (main and ep.stop) else 0.0])
            dist.broadcast(decision, src=0)
            ep.stop = bool(decision[0])
        if ep.stop:
            say(f"early stop after epoch {ep.index + 1}: no better validation macro-AUC for "
                f"{cfg.patience} epochs (best {best['metric']:.4f} at epoch {best['epoch'] + 1})")

    fit(opt, Schedule(cfg.lr, total_steps, warmup), epochs=cfg.epochs, start_epoch=start_epoch, step=step,
        epoch_batches=epoch_batches, train_step=lambda idx: train_step(idx, table),
        end_of_epoch=[validate, checkpoint, agree_to_stop], deterministic=dev.type == "cpu",
        progress=Progress(enabled=progress and main, desc="train"))
    if world > 1:
        dist.barrier()
    return model, multi, best, history, epoch_seconds


def _finalize(cfg: TrainConfig, d: _Data, model, multi, best: dict, history: list, epoch_seconds: list, *,
              members: int, data, out: Path, dev, world: int, export: bool, int8: bool, say, t_start: float,
              op_request: dict):
    """Rank 0 after training: best weights, prior correction, temperature, image -> patient rule,
    operating point, clinical outputs; writes (and exports) the bundle."""
    import torch

    from ..bundle import Bundle
    from ..models import arch_config

    CLASSES, records, split, params, positive = d.classes, d.records, d.split, d.params, d.positive
    x_train, y_train, x_val, y_val, p_val = d.x_train, d.y_train, d.x_val, d.y_val, d.p_val
    fingerprint, aux, counts, class_w, log_w = d.fingerprint, d.aux, d.counts, d.class_w, d.log_w
    n_train = len(split.train)
    cfg_json = json.loads(json.dumps(cfg.to_dict()))
    if multi is not None:
        multi.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model = model.to("cpu").float().eval()
    if any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()):
        model = _revert_sync_bn(model)
    with torch.no_grad():
        for head in class_heads(model):  # every member's: the mean of their logits shifts by -log w
            head.bias -= torch.tensor(log_w, dtype=head.bias.dtype)
    cpu = torch.device("cpu")
    logits = _predict_logits(model, x_val, cpu)
    before = _evaluate(logits, y_val, p_val)
    temperature = M.fit_temperature(logits, y_val)
    after = _evaluate(logits, y_val, p_val, temperature)
    say(f"temperature {temperature:.3f}: image ECE {before['image_ece']:.4f} -> {after['image_ece']:.4f}, "
        f"patient ECE {before['patient_ece']:.4f} -> {after['patient_ece']:.4f}")
    aggregation: Any = "mean_log_prob"
    final = after
    if cfg.aggregation == "pooled_logistic":
        from ..aggregation import fit_pooled_logistic

        # fitted on the training patients' images (the validation patients stay held out to judge it)
        lp_train = M.log_softmax(_predict_logits(model, x_train, cpu) / temperature)
        try:
            aggregation = fit_pooled_logistic(lp_train, [records[i].patient_id for i in split.train],
                                              y_train.numpy(), classes=CLASSES, seed=cfg.seed)
        except ValueError as exc:
            say(f"aggregation: kept mean_log_prob ({exc})")
        else:
            final = _evaluate(logits, y_val, p_val, temperature, aggregation)
            say(f"aggregation pooled_logistic (l2 {aggregation['l2']:g}; mean_log_prob for patients with fewer "
                f"than {aggregation['fallback']['below_images']} images): validation patient macro-AUC "
                f"{after['patient_macro_auc']:.4f} -> {final['patient_macro_auc']:.4f}, accuracy "
                f"{after['patient_accuracy']:.4f} -> {final['patient_accuracy']:.4f} (vs mean_log_prob)")

    operating_point = None
    if positive is not None:
        from ..operating_point import choose_threshold

        _, pl, pp, _ = _patient_probs(logits, y_val, p_val, temperature, aggregation)  # as deployed
        k = CLASSES.index(positive)
        try:
            operating_point = {"positive": positive, **choose_threshold(
                pl == k, pp[:, k], target_sensitivity=op_request.get("target_sensitivity"))}
        except ValueError as exc:
            say(f"operating point: none ({exc})")
        else:
            say(f"operating point ({operating_point['rule']}, {len(pl)} validation patients): {positive} when "
                f"P({positive}) >= {operating_point['threshold']:.3f}; validation sensitivity "
                f"{operating_point['val_sensitivity']:.3f}, specificity {operating_point['val_specificity']:.3f}")

    clinical = _clinical_outputs(model, x_train, y_train.numpy(), x_val, logits, y_val, p_val, temperature, aggregation,
                                 CLASSES, op_request.get("conformal_alpha"), cfg.seed, say)

    training = {
        "config": cfg_json,
        "data": {"manifest": str(Path(data).resolve()), "fingerprint": fingerprint,
                 "split_source": split.val_source,
                 "n_images": {"train": n_train, "val": len(split.val)},
                 "n_patients": {"train": len({records[i].patient_id for i in split.train}),
                                "val": len(set(p_val))},
                 "class_counts_train": {c: int(n) for c, n in zip(CLASSES, counts)}},
        "class_weights": {c: float(w) for c, w in zip(CLASSES, class_w)},
        "prior_correction": "classifier bias shifted by -log(class weight)",
        "aux_tasks": aux.summary() if aux is not None else None,
        "pretraining": _pretraining_provenance(cfg.pretrained),
        "best_epoch": best["epoch"] + 1,
        "epochs_run": len(history),
        "history": history,
        "validation": {"before_temperature": _finite(before), "after_temperature": _finite(after),
                       "final": _finite(final)},
        "world_size": world,
        "device": str(dev.type),
        "torch": torch.__version__,
        "seconds_per_epoch": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "seconds": None,
    }
    bundle = Bundle.create(out, state_dict=model.state_dict(),
                           model_config=arch_config(cfg.arch, cfg.in_channels, cfg.width, members, len(CLASSES)),
                           classes=CLASSES,
                           preprocess=params, input_shape=[cfg.in_channels, *params.size],
                           temperature=temperature, training=training, aggregation=aggregation,
                           read=cfg.card_read)
    if export:
        from ..export import export_bundle

        calib = x_train.numpy() if int8 else None
        report = export_bundle(bundle, int8=int8, calib=calib, val_frames=np.asarray(x_val, np.float32),
                               val_labels=y_val, seed=cfg.seed, log=say)
        training["export"] = json.loads(json.dumps(report, default=str))
    training["seconds"] = time.perf_counter() - t_start
    bundle.update(training=training, **({"operating_point": operating_point} if operating_point else {}),
                  **clinical)
    return bundle




def _clinical_outputs(model, x_train, y_train, x_val, logits_val, y_val, p_val, temperature, aggregation, classes,
                      alpha, seed, say) -> dict:
    """The card's ``conformal`` (validation patients, :mod:`thyrofast.conformal`) and ``ood``
    (training frames, :mod:`thyrofast.ood`) entries; each left out, with a log line, when it cannot be fitted."""
    from ..conformal import calibrate, prediction_sets, set_coverage
    from ..ood import early_stages, feature_stats, fit_gate, gate_scores

    out: dict = {}
    if alpha is not None:
        probs, pl, pp, _ = _patient_probs(logits_val, y_val, p_val, temperature, aggregation)  # as deployed
        conf = calibrate(probs, y_val, pp, pl, classes, alpha)
        out["conformal"] = conf
        small = [c for c, q in conf["patient"]["thresholds"].items() if q is None]
        sets = prediction_sets(pp, conf["patient"], classes)
        cov = set_coverage(sets, [classes[int(k)] for k in pl], classes)
        say(f"conformal sets (alpha {alpha:g}, {len(pl)} validation patients): in-sample patient coverage "
            f"{cov['coverage']:.3f}, mean set size {cov['mean_set_size']:.2f}"
            + (f"; too few validation patients of {', '.join(small)} to ever rule them out "
               f"(needs n >= {math.floor(1 / alpha)} per class)" if small else ""))
    try:
        layer = early_stages(model)[1]
        feats = feature_stats(model, np.asarray(x_train, np.float32), layer=layer)
        gate = fit_gate(feats, y_train, classes, seed=seed, layer=layer)
    except ValueError as exc:
        say(f"OOD gate: none ({exc})")
        return out
    if len(x_val):  # the in-distribution false-refer rate, on frames the gate was not fitted on
        val_feats = feature_stats(model, np.asarray(x_val, np.float32), layer=layer)
        gate["val_refer_rate"] = float(np.mean(gate_scores(val_feats, gate) > gate["threshold"]))
    out["ood"] = gate
    say(f"OOD gate: threshold {gate['threshold']:.3f} (training {gate['quantile']:g} quantile, cross-fitted)"
        + (f"; refers {100 * gate['val_refer_rate']:.1f}% of validation frames" if "val_refer_rate" in gate else ""))
    return out


def _head_classes(pretrained: str | None, init=None) -> tuple[str, ...] | None:
    """The classes, in order, the class head of the starting weights was trained for, when recorded:
    a bundle's (``init`` folder) or a ``thyrofast pretrain`` file's; None when unknown."""
    if init is not None and Path(init).is_dir():
        from ..bundle import BUNDLE_FILE

        try:
            classes = json.loads((Path(init) / BUNDLE_FILE).read_text()).get("classes")
        except (OSError, ValueError):
            return None
        return tuple(classes) if classes else None
    if not pretrained:
        return None
    from .pretrain import pretrained_classes

    return pretrained_classes(pretrained)


def _pretraining_provenance(path: str | None) -> dict | None:
    """Where the starting weights came from: the report a ``thyrofast pretrain`` backbone carries."""
    if not path:
        return None
    from .pretrain import pretrain_metadata

    meta = pretrain_metadata(path)
    return {"file": str(Path(path).resolve()), "report": meta}


def _revert_sync_bn(module):
    """SyncBatchNorm -> BatchNorm2d (for export and CPU inference)."""
    import torch

    out = module
    if isinstance(module, torch.nn.SyncBatchNorm):
        out = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, _revert_sync_bn(child))
    return out
