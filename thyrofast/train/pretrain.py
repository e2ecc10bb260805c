"""Pretraining on phantom lexicon images: a CNN that reads the sonographic findings (and diagnoses) of many lesions.

A study cohort (the ``paper`` preset: 161 training patients) holds a few
hundred distinct nodules, each in many near-duplicate frames; a CNN trained on
it alone memorizes them (measured: test image macro-AUC 0.68 against 0.85 for
the generator's own per-image posterior).  Clinical models start from
backbones trained on large public datasets annotated with the ACR TI-RADS
lexicon and with pathology; the phantom's equivalent is
:mod:`thyrofast.synth.lexicon`: thousands of distinct lesions, each from its own
patient, annotated with its findings and the patient's class.  ``pretrain``
fits the model with the auxiliary finding heads of :mod:`thyrofast.train.aux`
and, with ``diagnosis_weight`` > 0, the class head (one image per patient: an
external cohort, disjoint from any study cohort), and writes the weights as a
``.safetensors`` file for ``train(pretrained=...)``.  Measured on the ``paper``
cohort's 34 test patients (test image / patient macro-AUC): 0.68 / 0.84
without pretraining; after findings-only pretraining (6000 images, 8 epochs)
and fine-tuning 0.73 / 0.86-0.88 (a frozen backbone with a fitted linear head
0.785 / 0.92); after findings + diagnoses pretraining (8000 images) and
training the heads on the frozen backbone 0.77 / 0.95.  On an independent
195-patient cohort the pretrained class head used as it is generalized better
than heads retrained on the cohort (patient macro-AUC 0.88 vs 0.85-0.86), so
``thyrofast demo`` keeps it (``train(epochs=0)``).  The report
(config, held-out metrics per epoch) travels in the file's metadata, so the
bundle trained from it records where its starting point came from.

Resumable: the rendered set is cached and every epoch is checkpointed in
``<out>/.pretrain`` (removed when done); a finished folder with the same
settings is returned as is.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .augment import AugmentConfig, augment, epoch_table
from .aux import aux_loss, aux_targets_from_rows
from .checkpoint import load_checkpoint, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from .loop import (DEFAULTS, _deterministic, _lr_at, _multi_task, _param_groups, _precise_bn, config_to_dict,
                   default_width, resolve_device)

__all__ = ["pretrain", "pretrain_metadata", "PretrainConfig", "BACKBONE_FILE", "REPORT_FILE", "METADATA_KEY"]

BACKBONE_FILE = "backbone.safetensors"
REPORT_FILE = "pretrain.json"
METADATA_KEY = "thyrofast_pretrain"  # safetensors metadata entry holding the report (JSON)
WORK_DIR = ".pretrain"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretrained backbone."""

    # 6000 images x 8 epochs: ~5 min on one core of the 2-core CI machine; the
    # held-out finding metrics were still improving, so more helps when time allows.
    images: int = 6000
    epochs: int = 8
    arch: str = DEFAULTS.arch
    width: float = DEFAULTS.width
    in_channels: int = 1
    image_size: int = DEFAULTS.image_size
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    held_out: float = 0.08            # share of images kept out of training to report metrics
    diagnosis_weight: float = 1.0     # weight of the class loss (0: findings only, no diagnoses seen)
    seed: int = 0
    crop: str = "detect"              # lexicon crop: "detect" (as PNG files are read), "region", "none"
    augment: AugmentConfig = AugmentConfig()
    preprocess: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.images < 20:
            raise ValueError(f"images must be >= 20, got {self.images}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.crop not in ("detect", "region", "none"):
            raise ValueError(f"crop must be 'detect', 'region' or 'none', got {self.crop!r}")
        if not 0.0 < self.held_out < 0.5:
            raise ValueError(f"held_out must be in (0, 0.5), got {self.held_out}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.diagnosis_weight >= 0 and math.isfinite(self.diagnosis_weight)):
            raise ValueError(f"diagnosis_weight must be a finite number >= 0, got {self.diagnosis_weight}")

    def to_dict(self) -> dict:
        return config_to_dict(self)


def _finding_metrics(pred: np.ndarray, targets) -> dict[str, dict[str, float]]:
    """Per finding: accuracy (and the majority-class rate) for categorical findings,
    ROC AUC for binary ones, Pearson r for sizes and points."""
    from ..metrics import roc_auc

    out: dict[str, dict[str, float]] = {}
    col = 0
    for j, t in enumerate(targets.tasks):
        m = targets.mask[:, j]
        p, y = pred[m, col:col + t.width], targets.values[m, j]
        col += t.width
        if m.sum() < 2:
            continue
        if t.kind == "categorical":
            counts = np.bincount(y.astype(int), minlength=t.width)
            out[t.name] = {"accuracy": float(np.mean(p.argmax(1) == y)),
                           "majority": float(counts.max() / counts.sum()), "n": int(m.sum())}
        elif t.kind == "binary":
            if 0 < y.sum() < len(y):
                out[t.name] = {"auc": float(roc_auc(y.astype(int), p[:, 0])), "n": int(m.sum())}
        elif np.std(y) > 0 and np.std(p[:, 0]) > 0:
            out[t.name] = {"r": float(np.corrcoef(y, p[:, 0])[0, 1]), "n": int(m.sum())}
    return out


def pretrain(out: str | os.PathLike, *, images: int = PretrainConfig.images, epochs: int = PretrainConfig.epochs,
             seed: int = 0, arch: str = DEFAULTS.arch, width: float | None = None, in_channels: int = 1,
             image_size: int = DEFAULTS.image_size, preprocess: Mapping | None = None,
             crop: str = "detect", batch_size: int = 32, lr: float = 3e-3,
             diagnosis_weight: float = PretrainConfig.diagnosis_weight, workers: int = 1,
             threads: int | None = None, device: str = "cpu", progress: bool = True, log=None,
             members: int = 1) -> dict:
    """Pretrain a backbone on a phantom lexicon set; writes ``out/backbone.safetensors``.

    ``images`` distinct lesions (:func:`thyrofast.synth.lexicon.lexicon_images`,
    rendered by ``workers`` processes) train the model for ``epochs`` with the
    finding heads plus ``diagnosis_weight`` times the class-balanced class loss
    (0: findings only, and the untrained class head is left out of the file);
    ``held_out`` of them report per-finding metrics and the image macro-AUC.
    Model and preprocessing settings must match the later ``train`` call
    (``arch``, ``width``, ``in_channels``, ``image_size``, ``preprocess``).
    ``device``: "cpu", "cuda" or "auto".  ``members`` > 1 pretrains that many
    networks, member ``i`` with seed ``seed + i`` (its own ``images`` lesions) in
    ``out/member<i>``, and writes them as one ensemble file
    (:func:`thyrofast.models.build_model` ``members=``), which ``train`` uses
    with ``epochs=0``.  Returns the report (also ``out/pretrain.json``).
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from .. import CLASSES, PreprocessParams
    from ..bundle import atomic_write, atomic_write_bytes, atomic_write_json
    from ..models import _HEAD_PREFIXES, arch_config, build_model, check_members
    from ..synth.lexicon import ANNOTATION_COLUMNS, lexicon_images

    if width is None:
        width = default_width(arch)
    if check_members(members) > 1:
        return _pretrain_ensemble(out, members, log, images=images, epochs=epochs, seed=seed, arch=arch,
                                  width=width, in_channels=in_channels, image_size=image_size,
                                  preprocess=preprocess, crop=crop, batch_size=batch_size, lr=lr,
                                  diagnosis_weight=diagnosis_weight, workers=workers, threads=threads,
                                  device=device, progress=progress)
    cfg = PretrainConfig(images=int(images), epochs=int(epochs), arch=arch, width=float(width),
                         in_channels=int(in_channels), image_size=int(image_size), batch_size=int(batch_size),
                         lr=float(lr), seed=int(seed), crop=crop, preprocess=dict(preprocess or {}),
                         diagnosis_weight=float(diagnosis_weight))
    arch_config(cfg.arch, cfg.in_channels, cfg.width)  # validates early
    dev = torch.device(resolve_device(device))
    say = log or (lambda msg: tqdm.write(msg))
    out = Path(out)
    cfg_json = json.loads(json.dumps(cfg.to_dict()))
    key = hashlib.sha256(json.dumps(cfg_json, sort_keys=True).encode()).hexdigest()
    report_path = out / REPORT_FILE
    if report_path.is_file() and (out / BACKBONE_FILE).is_file():
        try:
            done = json.loads(report_path.read_text())
        except ValueError:
            done = {}
        if done.get("key") == key:
            say(f"pretrain: {out / BACKBONE_FILE} is up to date, kept")
            return done
    t_start = time.perf_counter()
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)

    # ---------------- data: rendered once, cached
    pre_kwargs = {"size": (cfg.image_size, cfg.image_size), "channels": cfg.in_channels}
    pre_kwargs.update(cfg.preprocess)
    params = PreprocessParams(**pre_kwargs)
    data_key = hashlib.sha256(json.dumps([cfg.images, cfg.seed, cfg.crop, params.to_dict()],
                                         sort_keys=True).encode()).hexdigest()
    cache = work / f"lexicon-{data_key[:24]}.npz"  # survives a change of training settings
    frames = rows = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                frames, table, labels = z["frames"], z["annotations"], z["labels"]
            rows = [dict(zip(ANNOTATION_COLUMNS, r)) for r in table.tolist()]
            if frames.shape != (cfg.images, cfg.in_channels, *params.size):
                frames = rows = None
        except (OSError, ValueError, KeyError):
            frames = rows = None
    if frames is None:
        t0 = time.perf_counter()
        frames, rows, labels = lexicon_images(cfg.images, params, seed=cfg.seed, crop=cfg.crop,
                                              workers=workers, progress=progress)
        table = np.array([[r[c] for c in ANNOTATION_COLUMNS] for r in rows], dtype=str)
        with atomic_write(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, frames=frames, annotations=table, labels=labels)
        say(f"pretrain: rendered {cfg.images} lexicon images in {time.perf_counter() - t0:.0f} s")
    targets = aux_targets_from_rows(rows, ANNOTATION_COLUMNS, nodule_findings="shown")
    if targets is None:  # pragma: no cover - the lexicon always annotates the view
        raise AssertionError("the lexicon set carries no annotations")
    n_val = max(1, int(round(cfg.held_out * cfg.images)))
    n_train = cfg.images - n_val
    x_all = torch.from_numpy(frames)
    x_train, x_val = x_all[:n_train], x_all[n_train:]
    v_train, m_train = torch.from_numpy(targets.values[:n_train]), torch.from_numpy(targets.mask[:n_train])
    val_targets = targets.take(range(n_train, cfg.images))
    y_train, y_val = torch.from_numpy(labels[:n_train]), labels[n_train:]
    counts = np.bincount(labels[:n_train], minlength=len(CLASSES)).astype(np.float64)
    class_w = torch.tensor(counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), dtype=torch.float32)

    # ---------------- model
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(cfg.seed)
        # NHWC: oneDNN's CPU convolutions and the GPU's tensor cores are faster on it (1.3-2x measured)
        model = build_model(cfg.arch, in_channels=cfg.in_channels, width=cfg.width).to(
            memory_format=torch.channels_last)
        multi = _multi_task(model, targets.width).to(dev)
        class_w = class_w.to(dev)
        opt = torch.optim.AdamW(_param_groups(multi, cfg.weight_decay), lr=cfg.lr)
        steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        total, warmup = steps_per_epoch * cfg.epochs, steps_per_epoch
        start_epoch, step, history = 0, 0, []
        loaded = load_checkpoint(work / "checkpoint")
        if loaded is not None:
            tensors, meta = loaded
            if meta.get("key") == key:
                multi.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("multi.")})
                optimizer_from_flat(opt, tensors, meta["optimizer"])
                start_epoch, step, history = int(meta["epoch"]), int(meta["step"]), list(meta["history"])
                say(f"pretrain: resuming after epoch {start_epoch}")
        bar = tqdm(range(start_epoch, cfg.epochs), desc="pretrain", unit="epoch", disable=not progress,
                   initial=start_epoch, total=cfg.epochs, dynamic_ncols=True)
        with _deterministic(dev.type == "cpu"):
            for epoch in bar:
                t0 = time.perf_counter()
                multi.train()
                g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
                order = torch.randperm(n_train, generator=g)
                table_u = epoch_table(n_train, cfg.seed, epoch)
                losses = []
                inner = tqdm(range(0, n_train, cfg.batch_size), desc=f"epoch {epoch + 1}", unit="batch",
                             leave=False, disable=not progress, dynamic_ncols=True)
                for b in inner:
                    idx = order[b:b + cfg.batch_size]
                    if len(idx) < 2:
                        continue  # BatchNorm needs two samples
                    for pg in opt.param_groups:
                        pg["lr"] = _lr_at(step, total, warmup, cfg.lr)
                    x = augment(x_train[idx].to(dev, dtype=torch.float32), table_u[idx], cfg.augment)
                    x = x.contiguous(memory_format=torch.channels_last)
                    logits, pred = multi(x)
                    loss = aux_loss(pred, v_train[idx].to(dev), m_train[idx].to(dev), targets.tasks)
                    if cfg.diagnosis_weight > 0:
                        yb = y_train[idx].to(dev)
                        ce = F.cross_entropy(logits, yb, reduction="none") * class_w[yb]
                        loss = loss + cfg.diagnosis_weight * ce.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    losses.append(float(loss.detach()))
                    inner.set_postfix(loss=f"{losses[-1]:.3f}")
                inner.close()
                _precise_bn(model, x_train, dev, cfg.seed)
                multi.eval()
                with torch.inference_mode():
                    outs = [[t.float().cpu() for t in multi(x_val[i:i + 256].to(dev, dtype=torch.float32))]
                            for i in range(0, n_val, 256)]
                pred = torch.cat([o[1] for o in outs]).numpy()
                metrics = _finding_metrics(pred, val_targets)
                if cfg.diagnosis_weight > 0:
                    from ..metrics import macro_auc

                    probs = torch.softmax(torch.cat([o[0] for o in outs]), 1).numpy()
                    auc = float(macro_auc(y_val, probs))
                    if math.isfinite(auc):  # undefined when the held-out images lack a class
                        metrics["diagnosis"] = {"image_macro_auc": auc, "n": int(n_val)}
                history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                                "seconds": round(time.perf_counter() - t0, 2), "held_out": metrics})
                bar.set_postfix(loss=f"{np.mean(losses):.3f}")
                opt_t, opt_meta = optimizer_to_flat(opt)
                save_checkpoint(work / "checkpoint",
                                {**{f"multi.{k}": v for k, v in multi.state_dict().items()}, **opt_t},
                                {"epoch": epoch + 1, "step": step, "key": key, "optimizer": opt_meta,
                                 "history": history})
        bar.close()
    finally:
        torch.set_num_threads(old_threads)
    multi.close()

    last = history[-1]["held_out"] if history else {}
    say("pretrain: held-out findings " + ", ".join(
        f"{k} " + (f"acc {v['accuracy']:.2f} (majority {v['majority']:.2f})" if "accuracy" in v
                   else f"AUC {v['auc']:.2f}" if "auc" in v
                   else f"image macro-AUC {v['image_macro_auc']:.2f}" if "image_macro_auc" in v
                   else f"r {v['r']:.2f}")
        for k, v in last.items()))
    report = {"key": key, "config": cfg_json, "n_images": {"train": n_train, "held_out": n_val},
              "tasks": targets.summary(), "history": history, "held_out": last,
              "data": "thyrofast.synth.lexicon phantom images, one per patient, disjoint from study cohorts: "
                      + ("findings and patient diagnoses" if cfg.diagnosis_weight > 0 else "findings only, no diagnoses"),
              "torch": torch.__version__, "seconds": round(time.perf_counter() - t_start, 2)}
    from safetensors.torch import save

    # findings only: the untrained class head is left out of the file
    backbone = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                if cfg.diagnosis_weight > 0 or not k.startswith(_HEAD_PREFIXES)}
    summary = {k: v for k, v in report.items() if k != "history"}
    data = save(backbone, metadata={METADATA_KEY: json.dumps(summary, sort_keys=True)})
    atomic_write_bytes(out / BACKBONE_FILE, data)
    atomic_write_json(report_path, report)
    shutil.rmtree(work, ignore_errors=True)  # the cache and checkpoints only served resuming
    return report


def _pretrain_ensemble(out, members: int, log, *, seed: int, **kw) -> dict:
    """``members`` pretrainings (seeds ``seed``, ``seed + 1``, ...) stacked into one ensemble file."""
    from safetensors.torch import load_file, save

    from ..bundle import atomic_write_bytes, atomic_write_json
    from ..models import stack_members

    if kw["diagnosis_weight"] <= 0:
        raise ValueError("an ensemble is used with its class heads (train epochs=0): diagnosis_weight must be > 0")
    out = Path(out)
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    say = log or (lambda msg: tqdm.write(msg))
    reports = []
    for i in range(members):
        say(f"pretrain: ensemble member {i + 1}/{members} (seed {seed + i})")
        reports.append(pretrain(out / f"member{i}", seed=seed + i, log=log, **kw))
    key = hashlib.sha256(json.dumps([r["key"] for r in reports]).encode()).hexdigest()
    state = stack_members([load_file(str(out / f"member{i}" / BACKBONE_FILE)) for i in range(members)])
    summaries = [{k: v for k, v in r.items() if k != "history"} for r in reports]
    report = {"key": key, "members": summaries, "config": {**reports[0]["config"], "members": members},
              "n_images": {part: sum(r["n_images"][part] for r in reports) for part in ("train", "held_out")},
              "held_out": _mean_metrics([r["held_out"] for r in reports]),
              "data": reports[0]["data"] + f"; {members} members, own lesions each",
              "torch": reports[0]["torch"], "seconds": round(sum(r["seconds"] for r in reports), 2)}
    data = save(state, metadata={METADATA_KEY: json.dumps(report, sort_keys=True)})
    atomic_write_bytes(out / BACKBONE_FILE, data)
    atomic_write_json(out / REPORT_FILE, report)
    say(f"pretrain: {members}-member ensemble written in {time.perf_counter() - t0:.0f} s")
    return report


def _mean_metrics(per_member: list[dict]) -> dict:
    """Held-out finding metrics averaged over the members (counts summed)."""
    out: dict[str, dict[str, float]] = {}
    for task in per_member[0]:
        rows = [m[task] for m in per_member if task in m]
        out[task] = {k: (sum(r[k] for r in rows) if k == "n" else float(np.mean([r[k] for r in rows])))
                     for k in rows[0] if all(k in r for r in rows)}
    return out


def pretrain_metadata(path: str | os.PathLike) -> dict | None:
    """The pretraining report stored in a backbone file, or None (another checkpoint)."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - not a readable safetensors file: no provenance to report
        return None
    raw = meta.get(METADATA_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
