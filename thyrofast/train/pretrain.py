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
``.safetensors`` file for ``train(pretrained=...)``.  What it changed, measured: docs/demo.md;
``thyrofast demo`` keeps the pretrained class head (``train(epochs=0)``).  A lexicon image of a
reactive lymph node or a benign-looking nodule often belongs to a cancer
patient, so the patient's class is a noisy target for it;
``diagnosis_target="lesion"`` trains the class head on the generator's
posterior of the class given the lesion shown, the expectation of that noisy
target (the same loss in expectation, less variance: bench/RESULTS.md has what
it changed for the demo).  The report
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

from ..io.schema import RENDER_CROPS, crop_mode
from .augment import AugmentConfig, augment, epoch_table
from .aux import aux_loss, aux_targets_from_rows
from .checkpoint import load_checkpoint, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from .config import DEFAULTS, config_to_dict, default_width, merged_fields, resolve_device
from .engine import Epoch, Progress, fit
from .heads import multi_task
from .optim import Schedule, param_groups
from .precise_bn import precise_bn

__all__ = ["pretrain", "pretrain_metadata", "pretrained_classes", "class_groups", "PretrainConfig", "BACKBONE_FILE",
           "REPORT_FILE", "METADATA_KEY"]

BACKBONE_FILE = "backbone.safetensors"
REPORT_FILE = "pretrain.json"
METADATA_KEY = "thyrofast_pretrain"  # safetensors metadata entry holding the report (JSON)
WORK_DIR = ".pretrain"
#: What the class loss is measured against: "patient" (the patient's class, as a study labels its images) or
#: "lesion" (:func:`thyrofast.synth.lexicon.lesion_posterior`: the class's expectation given the shown lesion).
DIAGNOSIS_TARGETS = ("patient", "lesion")


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
    diagnosis_target: str = "patient"  # class loss against the patient's class, or "lesion": its expectation
    seed: int = 0
    lexicon_seed: int | None = None   # seed of the lesions (None: seed); ensemble members may share one set
    crop: str = "detect"              # lexicon crop: "detect" (as PNG files are read), "regions", "none"
    augment: AugmentConfig = AugmentConfig()
    preprocess: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: the class head's classes as groups of the phantom's (:func:`class_groups`); None: BTN, NMTN, MMTN
    classes: Any = None

    def __post_init__(self):
        if self.classes is not None:
            object.__setattr__(self, "classes", class_groups(self.classes))
        if self.lexicon_seed == self.seed:  # one spelling per set of settings, so one key
            object.__setattr__(self, "lexicon_seed", None)
        if self.images < 20:
            raise ValueError(f"images must be >= 20, got {self.images}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.diagnosis_target not in DIAGNOSIS_TARGETS:
            raise ValueError(f"diagnosis_target must be one of {DIAGNOSIS_TARGETS}, got {self.diagnosis_target!r}")
        if self.diagnosis_target != "patient" and self.diagnosis_weight == 0:
            raise ValueError("diagnosis_target applies to the class loss: diagnosis_weight 0 has none")
        object.__setattr__(self, "crop", crop_mode(self.crop, RENDER_CROPS))  # "region": the older spelling
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
        d = config_to_dict(self)
        # defaults of fields added later are left out: the keys of earlier runs stay what they were
        if d["lexicon_seed"] is None:
            del d["lexicon_seed"]
        if d["diagnosis_target"] == "patient":
            del d["diagnosis_target"]
        if self.classes is None:
            del d["classes"]
        else:
            d["classes"] = {name: list(group) for name, group in self.classes}
        return d

    def class_names(self) -> tuple[str, ...]:
        """The class head's classes, in order."""
        from .. import CLASSES

        return CLASSES if self.classes is None else tuple(name for name, _ in self.classes)

    def group_matrix(self) -> np.ndarray | None:
        """(phantom classes x head classes) 0/1 matrix: row k marks the group of phantom class k; None
        without ``classes``."""
        from .. import CLASSES

        if self.classes is None:
            return None
        m = np.zeros((len(CLASSES), len(self.classes)))
        for j, (_, group) in enumerate(self.classes):
            for c in group:
                m[CLASSES.index(c), j] = 1.0
        return m

    def classes_text(self) -> str:
        """``benign=BTN malignant=NMTN+MMTN`` (as the CLI takes it)."""
        return " ".join(f"{name}={'+'.join(group)}" for name, group in (self.classes or ()))

    @property
    def data_seed(self) -> int:
        return self.seed if self.lexicon_seed is None else self.lexicon_seed

    def key(self) -> str:
        """Identifies the backbone these settings produce (a finished folder with it is kept)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def preprocess_params(self):
        from .. import PreprocessParams

        return PreprocessParams(**{"size": (self.image_size, self.image_size), "channels": self.in_channels,
                                   **self.preprocess})

    def lexicon_cache(self) -> str:
        """File name of the rendered set (in the work folder): it survives a change of training settings."""
        data_key = hashlib.sha256(json.dumps([self.images, self.data_seed, self.crop,
                                              self.preprocess_params().to_dict()], sort_keys=True).encode())
        return f"lexicon-{data_key.hexdigest()[:24]}.npz"


def class_groups(classes) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A user's class set as groups of the phantom's classes (BTN, NMTN, MMTN), checked.

    ``classes``: a mapping ``{name: phantom classes}`` (a list, or one string ``"A+B"``),
    or ``"name=A+B"`` strings (the CLI's ``--classes``), or pairs.  Every phantom class
    belongs to exactly one group, and there are at least 2.  Returns ``((name, (phantom,
    ...)), ...)`` with the names in the order a data set with those labels gets
    (:func:`thyrofast.io.schema.classes_from_names`: sorted, or the preset's order) and
    each group in the phantom's order; ValueError, naming the problem, otherwise.
    """
    from .. import CLASSES
    from ..io.schema import classes_from_names

    if isinstance(classes, Mapping):
        pairs = list(classes.items())
    elif isinstance(classes, str):
        raise ValueError(f"classes: give name=A+B pairs (a list) or a mapping, got the string {classes!r}")
    else:
        pairs = []
        for item in classes:
            if isinstance(item, str):
                name, eq, group = item.partition("=")
                if not eq or not name.strip() or not group.strip():
                    raise ValueError(f"classes: {item!r} is not NAME=A+B (e.g. malignant=NMTN+MMTN)")
                pairs.append((name, group))
            else:
                name, group = item
                pairs.append((name, group))
    preset = {c.casefold(): c for c in CLASSES}
    seen_names: dict[str, str] = {}
    owner: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, group in pairs:
        name = str(name).strip()
        if not name:
            raise ValueError("classes: a class name is empty")
        if name.casefold() in seen_names:
            raise ValueError(f"classes: the class {name!r} is given twice")
        seen_names[name.casefold()] = name
        members = group.split("+") if isinstance(group, str) else list(group)
        members = [str(m).strip() for m in members]
        if not members or not all(members):
            raise ValueError(f"classes: {name}= needs phantom classes joined by '+' (e.g. {name}=NMTN+MMTN)")
        for m in members:
            if m.casefold() not in preset:
                raise ValueError(f"classes: {m!r} (in {name}) is not a phantom class; they are {', '.join(CLASSES)}")
            c = preset[m.casefold()]
            if c in owner:
                raise ValueError(f"classes: the phantom class {c} is in two classes ({owner[c]} and {name}); "
                                 "each belongs to exactly one")
            owner[c] = name
        groups[name] = [c for c in CLASSES if owner.get(c) == name]
    missing = [c for c in CLASSES if c not in owner]
    if missing:
        raise ValueError(f"classes: the phantom class{'es' if len(missing) > 1 else ''} {', '.join(missing)} "
                         f"{'are' if len(missing) > 1 else 'is'} in no class; every one of {', '.join(CLASSES)} "
                         "belongs to exactly one")
    if len(groups) < 2:
        raise ValueError(f"classes: a class head needs 2 or more classes, got {len(groups)} ({', '.join(groups)})")
    order = classes_from_names(list(groups))
    return tuple((name, tuple(groups[name])) for name in order)


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


#: pretrain()'s keywords that are not PretrainConfig fields: how a run goes, not what it trains
RUN_DEFAULTS: dict[str, Any] = dict(workers=1, threads=None, device="cpu", progress=True, log=None, members=1,
                                    shared_lexicon=False, position=None, bar_label=None)
_COERCE = {"images": int, "epochs": int, "seed": int, "width": float, "in_channels": int, "image_size": int,
           "batch_size": int, "lr": float, "diagnosis_weight": float, "preprocess": lambda v: dict(v or {}),
           "lexicon_seed": lambda v: None if v is None else int(v)}


def pretrain(out: str | os.PathLike, config: PretrainConfig | None = None, **overrides) -> dict:
    """Pretrain a backbone on a phantom lexicon set; writes ``out/backbone.safetensors``.

    ``config``: a whole :class:`PretrainConfig` (default: its defaults, with the
    architecture's default ``width``); the keywords override its fields by name
    (``width`` None: the config's / the default), plus the run options of
    :data:`RUN_DEFAULTS` (``workers`` .. ``bar_label``, below).  Unknown keywords
    raise TypeError.

    ``images`` distinct lesions (:func:`thyrofast.synth.lexicon.lexicon_images`,
    rendered by ``workers`` processes) train the model for ``epochs`` with the
    finding heads plus ``diagnosis_weight`` times the class-balanced class loss
    (0: findings only, and the untrained class head is left out of the file)
    against ``diagnosis_target``: "patient" (the patient's class) or "lesion"
    (the generator's posterior of the class given the shown lesion's findings:
    the same loss in expectation, without the noise of the lesions that do not
    show their patient's class);
    ``held_out`` of them report per-finding metrics and the image macro-AUC.
    ``classes``: the class head's classes as groups of the phantom's
    (``{"benign": ["BTN"], "malignant": ["NMTN", "MMTN"]}``, :func:`class_groups`;
    default the phantom's own BTN/NMTN/MMTN), so a bundle with those classes can
    be fine-tuned from (or, ``train(epochs=0)``, use) the head; the report records them.
    Model and preprocessing settings must match the later ``train`` call
    (``arch``, ``width``, ``in_channels``, ``image_size``, ``preprocess``).
    ``device``: "cpu", "cuda" or "auto".  ``members`` > 1 pretrains that many
    networks, member ``i`` with seed ``seed + i`` (its own ``images`` lesions) in
    ``out/member<i>``, and writes them as one ensemble file
    (:func:`thyrofast.models.build_model` ``members=``), which ``train`` uses
    with ``epochs=0``; ``shared_lexicon`` gives every member the lesions of
    ``seed`` instead (rendered once: half the rendering for two members;
    ignored for one network).  On the CPU the members train side by side in
    spawned processes, one per core of ``threads`` (default torch's), the
    cores shared out among them (two members on two cores: one thread each): a
    small CNN uses one core better than two (measured in bench/RESULTS.md).  A
    script that calls this needs the ``if __name__ == "__main__":`` guard, as
    for any spawned process; their messages reach ``log``.  ``lexicon_seed``: the
    seed of the lesions when it is not ``seed`` (a member of a shared set).
    ``position``, ``bar_label``: the line and the label of this run's progress
    bar (set for such a member).
    Returns the report (also ``out/pretrain.json``).
    """
    from ..models import arch_config, check_members

    run = {k: overrides.pop(k) if k in overrides else v for k, v in RUN_DEFAULTS.items()}
    if overrides.get("width", 0) is None:
        del overrides["width"]
    fields = merged_fields(config if config is not None else PretrainConfig(), overrides, what="pretrain",
                           coerce=_COERCE)
    if config is None and "width" not in overrides:
        fields["width"] = float(default_width(fields["arch"]))
    cfg = PretrainConfig(**fields)
    arch_config(cfg.arch, cfg.in_channels, cfg.width)  # validates early, in this process for every member
    members = run.pop("members")
    if check_members(members) > 1:
        if overrides.get("lexicon_seed") is not None or cfg.lexicon_seed is not None:
            raise ValueError("lexicon_seed is set per member; an ensemble takes shared_lexicon=True")
        for k in ("position", "bar_label"):
            run.pop(k)
        return _pretrain_ensemble(out, members, cfg, **run)
    run.pop("shared_lexicon")
    return _pretrain_one(Path(out), cfg, **run)


def _pretrain_one(out: Path, cfg: PretrainConfig, *, workers: int, threads: int | None, device: str,
                  progress: bool, log, position: int | None, bar_label: str | None) -> dict:
    """One network (see :func:`pretrain`)."""
    import torch
    import torch.nn.functional as F

    from .._fs import atomic_write_bytes, atomic_write_json
    from ..models import HEAD_PREFIXES, build_model
    from ..synth.lexicon import ANNOTATION_COLUMNS

    dev = torch.device(resolve_device(device))
    say = _say(log)
    cfg_json = json.loads(json.dumps(cfg.to_dict()))
    key = cfg.key()
    done = _finished(out, key)
    if done is not None:
        say(f"pretrain: {out / BACKBONE_FILE} is up to date, kept")
        return done
    t_start = time.perf_counter()
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)

    # ---------------- data: rendered once, cached
    frames, rows, labels = _lexicon_set(cfg, work / cfg.lexicon_cache(), workers, progress, say,
                                        position=position, desc=f"{bar_label}: lexicon images" if bar_label else None)
    targets = aux_targets_from_rows(rows, ANNOTATION_COLUMNS, nodule_findings="shown")
    if targets is None:  # pragma: no cover - the lexicon always annotates the view
        raise AssertionError("the lexicon set carries no annotations")
    group = cfg.group_matrix()  # phantom class -> the head's class (None: the phantom's own)
    if group is not None:
        labels = group.argmax(1)[labels]
    n_classes = len(cfg.class_names())
    n_val = max(1, int(round(cfg.held_out * cfg.images)))
    n_train = cfg.images - n_val
    x_all = torch.from_numpy(frames)
    x_train, x_val = x_all[:n_train], x_all[n_train:]
    v_train, m_train = torch.from_numpy(targets.values[:n_train]), torch.from_numpy(targets.mask[:n_train])
    val_targets = targets.take(range(n_train, cfg.images))
    y_train, y_val = torch.from_numpy(labels[:n_train]), labels[n_train:]
    if cfg.diagnosis_target == "lesion":
        from ..synth.lexicon import lesion_posterior

        post = lesion_posterior(rows[:n_train])
        if group is not None:  # the posterior of a group: the sum over its phantom classes
            post = post @ group
        y_soft = torch.from_numpy(post.astype(np.float32))
    counts = np.bincount(labels[:n_train], minlength=n_classes).astype(np.float64)
    class_w = torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)

    # ---------------- model
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(cfg.seed)
        # NHWC: oneDNN's CPU convolutions and the GPU's tensor cores are faster on it (1.3-2x measured)
        model = build_model(cfg.arch, in_channels=cfg.in_channels, width=cfg.width, num_classes=n_classes).to(
            memory_format=torch.channels_last)
        multi = multi_task(model, targets.width).to(dev)
        class_w = class_w.to(dev)
        opt = torch.optim.AdamW(param_groups(multi, cfg.weight_decay), lr=cfg.lr)
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

        table = None

        def epoch_batches(epoch: int) -> list:
            nonlocal table
            multi.train()
            g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            order = torch.randperm(n_train, generator=g)
            table = epoch_table(n_train, cfg.seed, epoch)
            return [order[b:b + cfg.batch_size] for b in range(0, n_train, cfg.batch_size)]

        def train_step(idx) -> float:
            x = augment(x_train[idx].to(dev, dtype=torch.float32), table[idx], cfg.augment)
            x = x.contiguous(memory_format=torch.channels_last)
            logits, pred = multi(x)
            loss = aux_loss(pred, v_train[idx].to(dev), m_train[idx].to(dev), targets.tasks)
            if cfg.diagnosis_weight > 0:
                if cfg.diagnosis_target == "lesion":  # E over the class of w[class] * -log p[class]
                    t = y_soft[idx].to(dev) * class_w
                    ce = -(t * F.log_softmax(logits, 1)).sum(1)
                else:
                    yb = y_train[idx].to(dev)
                    ce = F.cross_entropy(logits, yb, reduction="none") * class_w[yb]
                loss = loss + cfg.diagnosis_weight * ce.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        def validate(ep: Epoch) -> None:
            precise_bn(model, x_train, dev, cfg.seed)
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
            losses = ep.losses
            history.append({"epoch": ep.index + 1, "loss": float(np.mean(losses)) if losses else None,
                            "seconds": round(time.perf_counter() - ep.started, 2), "held_out": metrics})
            ep.bar.set_postfix(epoch=ep.index + 1, loss=f"{np.mean(losses):.3f}")

        def checkpoint(ep: Epoch) -> None:
            opt_t, opt_meta = optimizer_to_flat(opt)
            save_checkpoint(work / "checkpoint",
                            {**{f"multi.{k}": v for k, v in multi.state_dict().items()}, **opt_t},
                            {"epoch": ep.index + 1, "step": ep.step, "key": key, "optimizer": opt_meta,
                             "history": history})

        fit(opt, Schedule(cfg.lr, total, warmup), epochs=cfg.epochs, start_epoch=start_epoch, step=step,
            epoch_batches=epoch_batches, train_step=train_step, end_of_epoch=[validate, checkpoint],
            min_batch=2,  # BatchNorm needs two samples
            deterministic=dev.type == "cpu",
            progress=Progress(enabled=progress, desc=bar_label or "pretrain", position=position))
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
              "classes": list(cfg.class_names()),
              "tasks": targets.summary(), "history": history, "held_out": last,
              "data": "thyrofast.synth.lexicon phantom images, one per patient, disjoint from study cohorts: "
                      + ("findings only, no diagnoses" if cfg.diagnosis_weight <= 0
                         else "findings and patient diagnoses" if cfg.diagnosis_target == "patient"
                         else "findings and diagnoses as the generator's posterior given the shown lesion")
                      + (f"; classes {cfg.classes_text()}" if cfg.classes is not None else ""),
              "torch": torch.__version__, "seconds": round(time.perf_counter() - t_start, 2)}
    from safetensors.torch import save

    # findings only: the untrained class head is left out of the file
    backbone = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                if cfg.diagnosis_weight > 0 or not k.startswith(HEAD_PREFIXES)}
    summary = {k: v for k, v in report.items() if k != "history"}
    data = save(backbone, metadata={METADATA_KEY: json.dumps(summary, sort_keys=True)})
    atomic_write_bytes(out / BACKBONE_FILE, data)
    atomic_write_json(out / REPORT_FILE, report)
    shutil.rmtree(work, ignore_errors=True)  # the cache and checkpoints only served resuming
    return report


def _finished(out: Path, key: str) -> dict | None:
    """The report of a finished pretraining in ``out`` with this key, else None."""
    report_path = Path(out) / REPORT_FILE
    if not (report_path.is_file() and (Path(out) / BACKBONE_FILE).is_file()):
        return None
    try:
        done = json.loads(report_path.read_text())
    except ValueError:
        return None
    return done if isinstance(done, dict) and done.get("key") == key else None


def _say(log):
    from tqdm.auto import tqdm

    return log or (lambda msg: tqdm.write(msg))


def _lexicon_set(cfg: PretrainConfig, cache: Path, workers: int, progress: bool, say, *,
                 position: int | None = None, desc: str | None = None):
    """The rendered lexicon set of ``cfg``: read from ``cache`` when it holds it, else rendered and cached."""
    from .._fs import atomic_write
    from ..synth.lexicon import ANNOTATION_COLUMNS, lexicon_images

    params = cfg.preprocess_params()
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                frames, table, labels = z["frames"], z["annotations"], z["labels"]
            if frames.shape == (cfg.images, cfg.in_channels, *params.size):
                return frames, [dict(zip(ANNOTATION_COLUMNS, r)) for r in table.tolist()], labels
        except (OSError, ValueError, KeyError):
            pass
    t0 = time.perf_counter()
    frames, rows, labels = lexicon_images(cfg.images, params, seed=cfg.data_seed, crop=cfg.crop,
                                          workers=workers, progress=progress, position=position, desc=desc)
    table = np.array([[r[c] for c in ANNOTATION_COLUMNS] for r in rows], dtype=str)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, frames=frames, annotations=table, labels=labels)
    say(f"pretrain: rendered {cfg.images} lexicon images in {time.perf_counter() - t0:.0f} s")
    return frames, rows, labels


def _share_lexicon(out: Path, cfgs: dict[int, PretrainConfig], workers: int, progress: bool, say) -> None:
    """Render the common lesion set of members ``cfgs`` once, into each one's work folder."""
    caches = [out / f"member{i}" / WORK_DIR / c.lexicon_cache() for i, c in cfgs.items()]
    if not caches[0].is_file():  # a member validates its cache when it reads it (and re-renders a bad one)
        _lexicon_set(next(iter(cfgs.values())), caches[0], workers, progress, say)
    for cache in caches[1:]:
        if cache.is_file() and os.path.samefile(cache, caches[0]):
            continue
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(caches[0], tmp)  # the same bytes; a member deletes only its own name when done
        except OSError:
            shutil.copyfile(caches[0], tmp)
        os.replace(tmp, cache)


def _pretrain_ensemble(out, members: int, cfg: PretrainConfig, *, shared_lexicon: bool, log, **run) -> dict:
    """``members`` pretrainings (seeds ``cfg.seed``, ``cfg.seed + 1``, ...) stacked into one ensemble file;
    ``run``: the run options of :func:`pretrain` for each member."""
    from safetensors.torch import load_file, save

    from .._fs import atomic_write_bytes, atomic_write_json
    from ..models import stack_members

    if cfg.diagnosis_weight <= 0:
        raise ValueError("an ensemble is used with its class heads (train epochs=0): diagnosis_weight must be > 0")
    out = Path(out)
    t0 = time.perf_counter()
    say = _say(log)
    seed = cfg.seed
    cfgs = [dataclasses.replace(cfg, seed=seed + i, lexicon_seed=seed if shared_lexicon else None)
            for i in range(members)]
    key = hashlib.sha256(json.dumps([c.key() for c in cfgs]).encode()).hexdigest()
    done = _finished(out, key)
    if done is not None:
        say(f"pretrain: {out / BACKBONE_FILE} is up to date, kept")
        return done
    procs, threads = _member_processes(members, run["device"], run["threads"])  # before any work: checks the device
    reports = {i: _finished(out / f"member{i}", c.key()) for i, c in enumerate(cfgs)}
    todo = {i: c for i, c in enumerate(cfgs) if reports[i] is None}
    if shared_lexicon and todo:
        _share_lexicon(out, todo, run["workers"], run["progress"], say)
    if procs > 1 and len(todo) > 1:
        procs = min(procs, len(todo))
        say(f"pretrain: {members} ensemble members (seeds {seed}-{seed + members - 1}), {procs} at a time, "
            f"one process and {threads} torch thread{'s' if threads > 1 else ''} each")
        reports.update(_pretrain_side_by_side(out, {i: cfgs[i] for i in todo}, procs, say,
                                              **dict(run, threads=threads, workers=max(1, run["workers"] // procs))))
    else:
        procs = 1
        for i in todo:
            say(f"pretrain: ensemble member {i + 1}/{members} (seed {seed + i})")
            reports[i] = pretrain(out / f"member{i}", cfgs[i], log=log, **run)
    reports = [reports[i] for i in range(members)]
    state = stack_members([load_file(str(out / f"member{i}" / BACKBONE_FILE)) for i in range(members)])
    summaries = [{k: v for k, v in r.items() if k != "history"} for r in reports]
    report = {"key": key, "members": summaries,
              "config": {**reports[0]["config"], "members": members,
                         **({"shared_lexicon": True} if shared_lexicon else {})},
              "classes": list(cfg.class_names()),
              "n_images": {part: sum(r["n_images"][part] for r in reports) for part in ("train", "held_out")},
              "held_out": _mean_metrics([r["held_out"] for r in reports]),
              "data": reports[0]["data"] + f"; {members} members, "
                      + ("one shared set of lesions" if shared_lexicon else "own lesions each"),
              "torch": reports[0]["torch"], "seconds": round(time.perf_counter() - t0, 2),
              "side_by_side": procs}
    data = save(state, metadata={METADATA_KEY: json.dumps(report, sort_keys=True)})
    atomic_write_bytes(out / BACKBONE_FILE, data)
    atomic_write_json(out / REPORT_FILE, report)
    say(f"pretrain: {members}-member ensemble written in {time.perf_counter() - t0:.0f} s")
    return report


def _member_processes(members: int, device: str, threads: int | None) -> tuple[int, int]:
    """(members trained at once, torch threads each): side by side on the CPU, the cores
    (``threads``, default torch's) shared out among them; one after another on a GPU."""
    import torch

    if resolve_device(device) != "cpu":
        return 1, int(threads or 0)
    cores = int(threads) if threads else torch.get_num_threads()
    procs = max(1, min(members, cores))
    return procs, max(1, cores // procs)


class _MemberTraceback(Exception):
    """The traceback of an exception raised in a member's process (its ``__cause__``)."""


def _member_exception(name: str, message: str) -> BaseException:
    """A member's exception re-created in the parent: the same type when it is a builtin or
    a thyrofast error (a ValueError stays a ValueError for the CLI), else a RuntimeError."""
    import builtins

    from .. import errors

    cls = getattr(builtins, name, None) or getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a constructor that wants more than a message
            pass
    return RuntimeError(f"{name}: {message}")


def _member_main(i: int, out: Path, cfg: PretrainConfig, kw: dict, lock, results) -> None:
    """A spawned process: pretrain member ``i``.  Puts ``("log", i, message)`` for each
    message and ``("done", i, report)`` or ``("error", i, (type name, message, traceback))`` last."""
    import multiprocessing as mp
    import threading
    import traceback
    from multiprocessing.connection import wait

    import torch
    from tqdm import std

    parent = mp.parent_process()

    def orphaned():  # the parent was killed (no chance to stop us): stop too
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    std.tqdm.set_lock(lock)  # the members' bars share the terminal, one line each
    torch.set_num_threads(kw["threads"])
    try:
        report = pretrain(out, cfg, log=lambda msg: results.put(("log", i, msg)), **kw)
        results.put(("done", i, report))
    except BaseException as exc:  # noqa: BLE001 - re-raised in the parent
        # plain strings: no exception object (or anything else) needs unpickling in the parent
        results.put(("error", i, (type(exc).__name__, str(exc), traceback.format_exc())))


def _pretrain_side_by_side(out: Path, todo: dict[int, PretrainConfig], procs: int, say, **kw) -> dict[int, dict]:
    """Members ``todo`` (``{member: its config}``), ``procs`` processes at a time; ``{member: report}``.

    Their messages reach ``say``.  The first failure stops the others at once
    (each resumes from its last epoch checkpoint when pretraining runs again);
    a member whose parent dies stops itself.
    """
    import multiprocessing as mp
    import queue

    from tqdm import std

    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools mid-flight
    lock = ctx.RLock()
    old_lock = std.tqdm.get_lock()
    std.tqdm.set_lock(lock)
    results = ctx.Queue()
    pending, running, reports = list(todo), {}, {}
    free = list(range(procs))  # progress bar lines
    try:
        while pending or running:
            while pending and len(running) < procs:
                i = pending.pop(0)
                line = free.pop(0)
                bar = {"position": line, "bar_label": f"member {i + 1}"} if kw["progress"] else {}
                args = (i, out / f"member{i}", todo[i], dict(kw, **bar), lock, results)
                running[i] = (ctx.Process(target=_member_main, args=args, name=f"thyrofast-pretrain-member{i}"), line)
                running[i][0].start()
            try:
                kind, i, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [(i, p.exitcode) for i, (p, _) in running.items() if p.exitcode is not None]
                if dead and results.empty():
                    raise RuntimeError(f"pretraining member {dead[0][0]} died (exit code {dead[0][1]})") from None
                continue
            if kind == "log":
                say(f"member {i + 1}: {payload}")
                continue
            p, line = running.pop(i)
            p.join()
            free.append(line)
            if kind == "error":
                name, message, tb = payload
                raise _member_exception(name, message) from _MemberTraceback(f"in pretraining member {i}:\n{tb}")
            reports[i] = payload
    finally:
        for p, _ in running.values():
            p.terminate()
            p.join()
        std.tqdm.set_lock(old_lock)
    return reports


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


def pretrained_classes(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The classes, in order, of the class head in a ``thyrofast pretrain`` file (its report's
    ``classes``; the phantom's BTN/NMTN/MMTN for a file written before they were recorded);
    None for another checkpoint."""
    from .. import CLASSES

    meta = pretrain_metadata(path)
    if not isinstance(meta, dict):
        return None
    classes = meta.get("classes")
    if classes is None and meta.get("members"):
        classes = meta["members"][0].get("classes")
    return tuple(classes) if classes else tuple(CLASSES)
