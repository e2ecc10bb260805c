"""``thyrofast check``: duplicates across patients, manifest problems, class balance."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from thyrofast import cli
from thyrofast.check import NEAR_DUPLICATE_DISTANCE, check_dataset, dhash, pane_hashes

synth = pytest.importorskip("thyrofast.synth", reason="thyrofast.synth (the cohort generator) is not available")


@pytest.fixture(scope="module")
def base_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("check") / "c"
    synth.generate_cohort(root, preset="paper", seed=5, patients=8, progress=False)
    return root


@pytest.fixture
def cohort(base_cohort, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(base_cohort, root)
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return root, rows


def _write(root, rows):
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _kinds(rep):
    return {(p.kind, p.severity) for p in rep.problems}


def _other_patient(rows, r):
    return next(o for o in rows if o["patient_id"] != r["patient_id"] and o["split"] == r["split"])


def test_a_clean_cohort_passes(cohort, capsys):
    root, rows = cohort
    rep = check_dataset(root)
    assert rep.ok and rep.n_images == len(rows) == rep.n_frames_hashed
    assert {p.kind for p in rep.problems} <= {"empty_class"}  # a small cohort: a split may lack a class
    assert all(p.severity == "warning" for p in rep.problems)
    assert sum(c["images"] for per in rep.balance.values() for c in per.values()) == len(rows)
    assert set(rep.balance) == {r["split"] for r in rows}
    assert cli.main(["check", str(root), "--no-progress"]) == 0
    assert "error(s)" not in capsys.readouterr().out or rep.problems


def test_exact_copy_under_another_patient_is_an_error(cohort, tmp_path, capsys):
    """A pixel-identical copy, re-encoded as BMP, filed under another patient: found by the
    decoded pixels' SHA-256 (the file bytes differ)."""
    root, rows = cohort
    src = rows[0]
    other = _other_patient(rows, src)
    Image.open(root / src["path"]).save(root / "copy.bmp")
    rows.append({**other, "path": "copy.bmp"})
    # a copy within the same patient is fine
    shutil.copy(root / rows[1]["path"], root / "same_patient.png")
    rows.append({**rows[1], "path": "same_patient.png"})
    _write(root, rows)
    rep = check_dataset(root)
    assert _kinds(rep) - {("empty_class", "warning")} == {("exact_duplicate", "error")}, rep.text()
    (dup,) = next(p for p in rep.problems if p.kind == "exact_duplicate").items
    assert sorted(dup) == sorted([src["path"], "copy.bmp"])
    out = tmp_path / "r.json"
    assert cli.main(["check", str(root), "--no-progress", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "ERROR exact_duplicate" in text and "copy.bmp" in text
    d = json.loads(out.read_text())
    assert d["ok"] is False and "exact_duplicate" in [p["kind"] for p in d["problems"]]


def test_a_copy_across_splits_is_a_leak(cohort):
    root, rows = cohort
    src = next(r for r in rows if r["split"] == "train")
    dst = next(r for r in rows if r["split"] == "test")
    shutil.copy(root / src["path"], root / "leak.png")
    rows.append({**dst, "path": "leak.png"})
    _write(root, rows)
    rep = check_dataset(root)
    dup = next(p for p in rep.problems if p.kind == "exact_duplicate")
    assert not rep.ok and "more than one split" in dup.message


def _jpeg(a, q):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf))


@pytest.mark.parametrize("edit", ["jpeg", "resize", "brighter"])
def test_edited_copy_under_another_patient_is_a_near_duplicate(cohort, edit):
    root, rows = cohort
    src = rows[3]
    other = _other_patient(rows, src)
    a = np.asarray(Image.open(root / src["path"]))
    if edit == "jpeg":
        b = _jpeg(a, 60)
    elif edit == "resize":
        b = np.asarray(Image.fromarray(a).resize((a.shape[1] * 3 // 4, a.shape[0] * 3 // 4), Image.BILINEAR))
    else:
        b = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    Image.fromarray(b).save(root / "edited.png")
    rows.append({**other, "path": "edited.png"})
    _write(root, rows)
    rep = check_dataset(root)
    assert _kinds(rep) - {("empty_class", "warning")} == {("near_duplicate", "error")}, rep.text()
    (pair,) = next(p for p in rep.problems if p.kind == "near_duplicate").items
    assert sorted(pair[:2]) == sorted([src["path"], "edited.png"])


def test_the_threshold_separates_copies_from_distinct_images(base_cohort):
    """On this cohort: every distinct pair of images (any two files) is farther apart than the
    threshold, and >= 90% of JPEG q60 / x0.75 / +20 brightness copies are within it (on 726
    images, tools/near_duplicate_threshold.py: 100% / 99% / 99-100%)."""
    with open(base_cohort / "manifest.csv", newline="") as fh:
        paths = [base_cohort / r["path"] for r in csv.DictReader(fh)]
    imgs = [np.asarray(Image.open(p)) for p in paths]
    hs = np.array([pane_hashes(a)[0][0] for a in imgs], dtype=np.uint64)
    d = np.bitwise_count(hs[:, None] ^ hs[None, :])[np.triu_indices(len(hs), 1)]
    assert d.min() > NEAR_DUPLICATE_DISTANCE
    caught = []
    for a, h in list(zip(imgs, hs))[::4]:
        for b in (_jpeg(a, 60), np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8),
                  np.asarray(Image.fromarray(a).resize((a.shape[1] * 3 // 4, a.shape[0] * 3 // 4)))):
            caught.append((pane_hashes(b)[0][0] ^ int(h)).bit_count() <= NEAR_DUPLICATE_DISTANCE)
    assert np.mean(caught) >= 0.9, np.mean(caught)


def test_dhash_ignores_brightness_offsets():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (64, 80)).astype(np.uint8)
    assert dhash(a) == dhash(a + 30) == dhash(a.astype(np.uint16) * 257)


def test_manifest_problems(cohort):
    root, rows = cohort
    btn = [r for r in rows if r["label"] == "BTN"]
    assert btn
    rows = [r for r in rows if r["label"] != "NMTN"]  # NMTN becomes an empty class
    rows.append({**btn[0], "label": "MMTN", "path": "missing.png"})  # missing file, patient with two labels
    (root / "stray.png").write_bytes((root / rows[0]["path"]).read_bytes())  # unlisted (and a duplicate)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append({**btn[0], "path": "broken.png"})
    _write(root, rows)
    rep = check_dataset(root)
    kinds = _kinds(rep)
    assert {("several_labels", "error"), ("missing", "error"), ("unreadable", "error"),
            ("empty_class", "error"), ("unlisted", "warning")} <= kinds, rep.text()
    unlisted = next(p for p in rep.problems if p.kind == "unlisted")
    assert "stray.png" in unlisted.items
    assert not rep.ok


def test_patient_in_two_splits_is_reported(cohort, capsys):
    root, rows = cohort
    r = next(r for r in rows if r["split"] == "train")
    rows.append({**r, "split": "test", "path": rows[-1]["path"] if rows[-1]["patient_id"] == r["patient_id"]
                 else r["path"]})
    rows[-1]["frame_index"] = "0"
    _write(root, rows)
    rep = check_dataset(root)
    assert _kinds(rep) == {("bad_split", "error")}
    assert cli.main(["check", str(root), "--no-progress"]) == 1


def test_class_folders_and_split_screens(base_cohort, tmp_path):
    with open(base_cohort / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    root = tmp_path / "folders"
    for r in rows[:12]:
        d = root / r["label"] / r["patient_id"]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(base_cohort / r["path"], d / os.path.basename(r["path"]))
    # a split-screen screenshot: two fields of one patient side by side
    a, b = (np.asarray(Image.open(base_cohort / r["path"])) for r in rows[:2])
    dual = np.zeros((600, 1200), np.uint8)
    dual[:, :560] = a[:, 120:680]
    dual[:, 600:1160] = b[:, 120:680]
    first = rows[0]
    Image.fromarray(dual).save(root / first["label"] / first["patient_id"] / "dual.png")
    rep = check_dataset(root)
    assert rep.layout == "class folders" and rep.n_images == 13
    assert any("dual.png" in s for s in rep.split_screens), rep.text()
    assert not any(p.kind in ("exact_duplicate", "near_duplicate") for p in rep.problems), rep.text()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "nope.csv"), "--no-progress"]) == 2
    (tmp_path / "m.csv").write_text("file,label\nx.png,BTN\n")
    assert cli.main(["check", str(tmp_path / "m.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("thyrofast check: ") for e in err)
