"""Training: learns held-out patients, deterministic, resumable, clear errors, DDP equivalence."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import thyrofast  # noqa: E402
from thyrofast import InputError  # noqa: E402
from thyrofast.aggregation import aggregate  # noqa: E402
from thyrofast.bundle import Bundle  # noqa: E402
from thyrofast.train import _metrics as M  # noqa: E402
from thyrofast.train import train  # noqa: E402
from thyrofast.train.data import load_frames, read_manifest, split_records  # noqa: E402

# A smaller, faster configuration for the runs that only compare two trainings.
SMALL = dict(arch="resnet18", width=0.25, image_size=32, batch_size=16, lr=3e-3, patience=10,
             seed=0, progress=False, threads=1, export=False, log=lambda m: None,
             preprocess={"denoise": "none", "normalize": "minmax"})


def _fixture():
    import _train_fixture  # tests/ is on pythonpath: one module, one cohort per session

    return _train_fixture


def _weights(path) -> dict:
    return Bundle.load(path).state_dict()


def _patient_probs(bundle: Bundle, manifest, split_name: str):
    records = read_manifest(manifest)
    idx = [i for i, r in enumerate(records) if r.split == split_name]
    frames, _ = load_frames(records, idx, bundle.preprocess_params, progress=False,
                            read=bundle.read_options)
    with torch.no_grad():
        logits = bundle.build_model()(torch.from_numpy(frames.astype(np.float32))).numpy()
    lp = M.log_softmax(logits / bundle.temperature)
    agg = aggregate(np.exp(lp), [records[i].patient_id for i in idx], bundle.aggregation)  # as deployed
    ids = list(agg)
    probs = np.array([agg[p][0] for p in ids])
    labels = {records[i].patient_id: records[i].label for i in idx}
    return np.array([labels[p] for p in ids]), probs


def test_trains_and_beats_chance_on_held_out_patients(tmp_path_factory):
    path, manifest = _fixture().trained_bundle(tmp_path_factory)
    b = Bundle.load(path)
    y, p = _patient_probs(b, manifest, "test")  # patients never seen in training or validation
    assert len(y) >= 6 and set(y) == {0, 1, 2}
    auc = M.macro_auc(y, p)
    acc = float(np.mean(p.argmax(1) == y))
    assert auc > 0.75, auc  # chance is 0.5
    assert acc > 0.5, acc   # chance is 1/3


def test_bundle_card_records_training(tmp_path_factory):
    path, manifest = _fixture().trained_bundle(tmp_path_factory)
    b = Bundle.load(path)
    card = b.manifest
    fx = _fixture()
    assert card["arch"] == "resnet18" and card["width"] == fx.WIDTH
    assert card["input_shape"] == [1, fx.IMAGE_SIZE, fx.IMAGE_SIZE]
    pp = b.preprocess_params
    assert pp.size == (fx.IMAGE_SIZE, fx.IMAGE_SIZE) and pp.denoise == "median3"
    t = card["training"]
    assert len(t["data"]["fingerprint"]) == 64
    assert t["data"]["split_source"] == "manifest"
    assert t["epochs_run"] == len(t["history"]) == fx.TRAIN_KW["epochs"]
    for key in ("before_temperature", "after_temperature"):
        v = t["validation"][key]
        assert {"image_ece", "patient_ece", "patient_macro_auc", "image_nll"} <= set(v)
    # temperature scaling never makes the validation NLL worse
    assert t["validation"]["after_temperature"]["image_nll"] <= t["validation"]["before_temperature"]["image_nll"] + 1e-9
    assert b.temperature > 0
    assert t["history"][0]["loss"] > 0 and "val_patient_macro_auc" in t["history"][0]
    # the bundle's preprocessing reproduces the training inputs exactly
    records = read_manifest(manifest)
    frames, _ = load_frames(records, [0], pp, progress=False)
    direct = thyrofast.preprocess(thyrofast.read(records[0].path)[0].pixels, **{
        k: v for k, v in pp.to_dict().items() if k != "spec"} | {"size": pp.size,
                                                                  "percentiles": pp.percentiles})
    np.testing.assert_allclose(frames[0].astype(np.float32), direct[0], atol=1e-3)


def test_deterministic_and_resumable(tmp_path_factory, tmp_path, monkeypatch):
    import thyrofast.train.loop as loop

    manifest = _fixture().cohort(tmp_path_factory)
    train(manifest, tmp_path / "a", epochs=2, **SMALL)

    real_save = loop.save_checkpoint
    calls = []

    def crash_after_first(folder, tensors, meta):
        real_save(folder, tensors, meta)
        calls.append(meta["epoch"])
        raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(manifest, tmp_path / "b", epochs=2, **SMALL)
    assert calls == [1] and not (tmp_path / "b" / "thyrofast.json").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train(manifest, tmp_path / "b", epochs=2, resume=True, **SMALL)

    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert set(a) == set(b)
    for k in a:  # bit-identical: seeded, deterministic CPU kernels, resumed mid-run
        assert torch.equal(a[k], b[k]), k
    ta = Bundle.load(tmp_path / "a").manifest["training"]
    tb = Bundle.load(tmp_path / "b").manifest["training"]
    assert [h["loss"] for h in ta["history"]] == [h["loss"] for h in tb["history"]]
    # checkpoints are safetensors + JSON, never pickle
    ck = sorted(p.name for p in (tmp_path / "b" / ".train" / "checkpoint").iterdir())
    assert ck == ["checkpoint.json", "ckpt-0002.safetensors"]

    with pytest.raises(ValueError, match="cannot resume"):
        train(manifest, tmp_path / "b", epochs=2, resume=True, **{**SMALL, "lr": 1e-3})


def _rewrite(manifest: Path, dst: Path, edit) -> Path:
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = edit(rows)
    dst.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["path"] = str((manifest.parent / r["path"]).resolve())
    with open(dst / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst / "manifest.csv"


def test_clear_errors(tmp_path_factory, tmp_path):
    manifest = _fixture().cohort(tmp_path_factory)

    # the classes come from the data (a cohort without NMTN is a BTN/MMTN one), but every class of the
    # data needs training and validation patients
    no_nmtn = _rewrite(manifest, tmp_path / "e1",
                       lambda rows: [r for r in rows if not (r["label"] == "NMTN" and r["split"] == "val")])
    with pytest.raises(InputError, match="val split has no NMTN") as exc:
        train(no_nmtn, tmp_path / "o1", epochs=1, **SMALL)
    assert exc.value.code == "empty"

    def leak(rows):
        victim = next(r for r in rows if r["split"] == "train")["patient_id"]
        first = True
        for r in rows:
            if r["patient_id"] == victim:
                r["split"] = "train" if first else "test"
                first = False
        return rows

    leaky = _rewrite(manifest, tmp_path / "e2", leak)
    with pytest.raises(InputError) as exc:
        train(leaky, tmp_path / "o2", epochs=1, **SMALL)
    assert exc.value.code == "bad_split"

    with pytest.raises(ValueError, match="unknown arch"):
        train(manifest, tmp_path / "o3", arch="vgg11", epochs=1, **{k: v for k, v in SMALL.items() if k != "arch"})
    with pytest.raises(InputError):
        train(tmp_path / "nothing-here", tmp_path / "o4", epochs=1, **SMALL)


def test_argument_errors_name_the_problem(tmp_path_factory, tmp_path):
    manifest = _fixture().cohort(tmp_path_factory)
    (tmp_path / "afile").write_text("x")
    for kw, msg in (({"threads": -1}, "threads must be a positive integer"),
                    ({"patience": 0}, "patience must be >= 1"),
                    ({"epochs": 0}, "--pretrained FILE"),
                    ({"pretrained": tmp_path / "nope.safetensors"}, "pretrained checkpoint not found")):
        with pytest.raises(ValueError, match=msg):
            train(manifest, tmp_path / "o", **{"epochs": 1, **SMALL, **kw})
    with pytest.raises(ValueError, match="is an existing file"):
        train(manifest, tmp_path / "afile", epochs=1, **SMALL)
    # a patient with two labels: the message names the hashed id (ids are never printed raw)
    two = _rewrite(manifest, tmp_path / "two", lambda rows: [
        {**r, "label": "MMTN"} if i == 0 else r for i, r in enumerate(rows)])
    with open(manifest, newline="") as f:
        first = next(csv.DictReader(f))["patient_id"]
    with pytest.raises(InputError, match="labelled both") as exc:
        train(two, tmp_path / "o5", epochs=1, **SMALL)
    msg = str(exc.value)  # (the fixture's file names carry the id; the message's patient field must not)
    assert f"patient {thyrofast.io.hash_patient_id(first)} has" in msg and f"'{first}'" not in msg


def test_trains_from_class_folders(tmp_path):
    """README: images in BTN/ NMTN/ MMTN/ folders, one sub-folder per patient, need no manifest."""
    from PIL import Image

    fx = _fixture()
    rng = np.random.default_rng(5)
    for label, cls in enumerate(fx.CLASSES):
        for j in range(4):
            d = tmp_path / "data" / cls / f"{cls}-{j}"  # one folder per patient
            d.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(fx.lesion_frame(rng, label, 30, 40, 10)).save(d / f"{k}.png")
    records = read_manifest(tmp_path / "data")
    assert len(records) == 24 and len({r.patient_id for r in records}) == 12
    assert sorted({r.label for r in records}) == [0, 1, 2]
    bundle = train(tmp_path / "data", tmp_path / "bundle", epochs=1, **SMALL)
    assert isinstance(bundle, Bundle) and Bundle.load(tmp_path / "bundle").classes == ("BTN", "NMTN", "MMTN")
    assert bundle.manifest["training"]["aux_tasks"] is None  # class folders annotate no findings


def test_val_split_carved_by_patient(tmp_path_factory, tmp_path):
    manifest = _fixture().cohort(tmp_path_factory)
    plain = _rewrite(manifest, tmp_path / "nosplit",
                     lambda rows: [{k: v for k, v in r.items() if k != "split"} for r in rows])
    records = read_manifest(plain)
    s1 = split_records(records, val_fraction=0.25, seed=3)
    s2 = split_records(records, val_fraction=0.25, seed=3)
    assert s1.train == s2.train and s1.val == s2.val and not s1.test
    ptrain = {records[i].patient_id for i in s1.train}
    pval = {records[i].patient_id for i in s1.val}
    assert ptrain and pval and not (ptrain & pval)
    assert {records[i].label for i in s1.val} == {0, 1, 2}  # stratified
    n_val_patients = len(pval)
    assert n_val_patients == 3 * round(12 * 0.25)
    assert split_records(records, val_fraction=0.25, seed=4).val != s1.val


def test_augment_is_keyed_by_sample():
    from thyrofast.train.augment import AugmentConfig, augment, epoch_table

    x = torch.rand(6, 1, 24, 24)
    t = epoch_table(10, seed=1, epoch=2)
    assert torch.equal(t, epoch_table(10, seed=1, epoch=2))
    assert not torch.equal(t, epoch_table(10, seed=1, epoch=3))
    idx = torch.tensor([7, 2, 5, 0, 9, 3])
    full = augment(x, t[idx], AugmentConfig())
    half = torch.cat([augment(x[:3], t[idx[:3]], AugmentConfig()), augment(x[3:], t[idx[3:]], AugmentConfig())])
    assert torch.allclose(full, half, atol=1e-6)  # batch composition does not matter
    none = AugmentConfig(rotate_deg=0, scale=0, translate=0, hflip=0, gain=0, contrast=0)
    assert torch.allclose(augment(x, t[idx], none), x, atol=1e-5)
    flip = AugmentConfig(rotate_deg=0, scale=0, translate=0, hflip=1.0, gain=0, contrast=0)
    assert torch.allclose(augment(x, t[idx], flip), x.flip(-1), atol=1e-5)


def test_metric_helpers_match_references():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    true_logits = np.eye(3)[y] * 2.0 + rng.normal(0, 1, (200, 3))
    assert M.macro_auc(y, M.softmax(true_logits)) == pytest.approx(
        sk.roc_auc_score(y, M.softmax(true_logits), multi_class="ovr", average="macro"))
    # temperature: labels drawn from softmax(z); logits given as 3*z -> T ~ 3
    z = rng.normal(0, 1.5, (4000, 3))
    p = M.softmax(z)
    yy = np.array([rng.choice(3, p=row) for row in p])
    assert M.fit_temperature(3.0 * z, yy) == pytest.approx(3.0, rel=0.1)


def test_ddp_two_cpu_processes_equal_single_process(tmp_path_factory, tmp_path):
    """torchrun, 2 processes, gloo == one process with ghost_batches=2 (BatchNorm per half-batch).

    On CPUs there is no SyncBatchNorm, so each DDP process normalizes its own
    half of the global batch; the single-process run reproduces exactly that
    split (thyrofast.train.loop docstring), so both give the same model up to
    floating-point summation order.
    """
    manifest = _fixture().cohort(tmp_path_factory)
    kw = dict(SMALL)
    train(manifest, tmp_path / "single", epochs=2, ghost_batches=2, **kw)
    env = {**os.environ, "PYTHONPATH": str(Path(thyrofast.__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "thyrofast.cli", "train", str(manifest), "--out", str(tmp_path / "ddp"),
           "--arch", "resnet18", "--width", "0.25", "--image-size", "32", "--batch-size", "16",
           "--lr", "0.003", "--patience", "10", "--seed", "0", "--epochs", "2", "--threads", "1",
           "--denoise", "none", "--normalize", "minmax", "--no-export", "--quiet"]
    # cwd outside the repository: `-m` puts the cwd first on sys.path, and the
    # source tree (no compiled _core in a clean checkout) must not shadow the
    # package under test
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    assert set(single) == set(ddp)
    for k in single:
        if single[k].is_floating_point():
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-3, atol=1e-4, msg=k)
        else:
            assert torch.equal(ddp[k], single[k]), k
    card = Bundle.load(tmp_path / "ddp").manifest["training"]
    assert card["world_size"] == 2


# -- issue 24: train(mask_annotations=True) is recorded, and every later step reads files with it -----------

def _with_marks(img: np.ndarray) -> np.ndarray:
    """``img`` with white calipers, a dotted measuring line and text burned in (a device screenshot)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    h, w = img.shape
    for cx, cy in ((w // 4, h // 2), (3 * w // 4, h // 2)):
        d.line([cx - 4, cy, cx + 4, cy], fill=255)
        d.line([cx, cy - 4, cx, cy + 4], fill=255)
    for x in range(w // 4 + 6, 3 * w // 4 - 5, 4):
        d.point((x, h // 2), fill=255)
    d.text((3, 3), "L 1.2cm", fill=255)
    return np.asarray(im)


def test_mask_annotations_is_recorded_and_predict_reads_files_with_it(tmp_path, monkeypatch):
    """train(mask_annotations=True) reads every training/validation file with
    thyrofast.read(mask_annotations=True) and records it in the card's read options; predict reads
    files the same way; a card without the key (as before the option) reads unmasked."""
    import json

    from PIL import Image

    from thyrofast import Classifier, read
    from thyrofast.classifier import bundle_read_options
    from thyrofast.predict import predict_files
    from thyrofast.train import data as tdata

    fx = _fixture()
    rng = np.random.default_rng(11)
    for label, cls in enumerate(fx.CLASSES):
        for j in range(4):
            d = tmp_path / "data" / cls / f"{cls}-{j}"
            d.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(_with_marks(fx.lesion_frame(rng, label, 30, 40, 10))).save(d / f"{k}.png")
    seen_reads = []
    real_decode = tdata.decode_image

    def spy(record, read=None):
        seen_reads.append(read)
        return real_decode(record, read)

    monkeypatch.setattr(tdata, "decode_image", spy)
    train(tmp_path / "data", tmp_path / "bundle", epochs=1, mask_annotations=True, **SMALL)
    monkeypatch.undo()
    masked_read = {"crop": "detect", "mask_annotations": True}
    assert len(seen_reads) == 24 and all(r == masked_read for r in seen_reads)  # every train + val file
    card = json.loads((tmp_path / "bundle" / "thyrofast.json").read_text())
    assert card["read"] == masked_read and card["training"]["config"]["mask_annotations"] is True
    b = Bundle.load(tmp_path / "bundle")
    assert b.read_options == masked_read

    png = str(tmp_path / "data" / "NMTN" / "NMTN-0" / "0.png")
    f_masked = read(png, crop="detect", mask_annotations=True)[0].pixels
    f_plain = read(png, crop="detect")[0].pixels
    assert not np.array_equal(f_masked, f_plain)  # the marks are there, and masking changes them

    def frames_predict_sees(bundle_path, name):
        clf = Classifier.load(bundle_path, backend="torch", device="cpu", threads=1)
        got, real_predict = [], clf.predict
        monkeypatch.setattr(clf, "predict", lambda frames: (got.extend(list(frames)), real_predict(frames))[1])
        predict_files(clf, [png], tmp_path / f"{name}.jsonl", progress=False)
        rec = json.loads((tmp_path / f"{name}.jsonl").read_text().splitlines()[0])
        assert rec["status"] == "ok", rec
        return clf, got

    clf, got = frames_predict_sees(tmp_path / "bundle", "masked")
    assert bundle_read_options(clf) == masked_read
    assert len(got) == 1 and np.array_equal(np.asarray(got[0]), f_masked)

    # a card without the key (written before the option) still loads and reads unmasked
    Bundle.load(tmp_path / "bundle").update(read={"crop": "detect"})
    old = Bundle.load(tmp_path / "bundle")
    assert "mask_annotations" not in json.loads((tmp_path / "bundle" / "thyrofast.json").read_text())["read"]
    assert old.read_options == {"crop": "detect"}
    clf, got = frames_predict_sees(tmp_path / "bundle", "plain")
    assert bundle_read_options(clf) == {"crop": "detect", "mask_annotations": False}
    assert len(got) == 1 and np.array_equal(np.asarray(got[0]), f_plain)


def test_mask_annotations_is_validated():
    from thyrofast.train import TrainConfig

    with pytest.raises(ValueError, match="mask_annotations"):
        TrainConfig(mask_annotations="yes")
    assert TrainConfig().read_options == {"crop": "detect", "mask_annotations": False}
    assert TrainConfig().card_read == {"crop": "detect"}  # unmasked cards as before
    assert TrainConfig(mask_annotations=True).card_read == {"crop": "detect",
                                                                           "mask_annotations": True}
