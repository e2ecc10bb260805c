"""A user's own data, realistically messy: the synthetic cohort relabelled benign/malignant, with
pixel-identical copies filed under other patients and split-screen screenshots (panes with and
without a gap).  The check finds every planted copy, no pane is lost, and ``train`` refuses the
copies unless told to allow them (then it warns and trains)."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from thyrofast import InputError
from thyrofast.check import check_before_training, check_dataset
from thyrofast.io import read

synth = pytest.importorskip("thyrofast.synth", reason="thyrofast.synth (the cohort generator) is not available")

MAP = {"BTN": "benign", "NMTN": "malignant", "MMTN": "malignant"}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """(root, planted copy pairs (original, copy), split-screen files {name: pane boxes})."""
    root = tmp_path_factory.mktemp("own") / "data"
    synth.generate_cohort(root, preset="paper", seed=11, patients=12, progress=False)
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = [{"path": r["path"], "patient_id": r["patient_id"], "label": MAP[r["label"]], "split": r["split"],
             "_box": (int(r["region_x0"]), int(r["region_y0"]), int(r["region_x1"]), int(r["region_y1"]))}
            for r in rows]
    pids = sorted({r["patient_id"] for r in rows})
    first = {p: next(r for r in rows if r["patient_id"] == p) for p in pids}
    (root / "copies").mkdir()
    planted = []
    for i, (a, b) in enumerate([(pids[0], pids[1]), (pids[2], pids[5]), (pids[3], pids[6])]):
        src = first[a]
        ext = ".bmp" if i == 2 else ".png"  # a re-saved copy: other bytes, the same pixels
        dst = f"copies/copy{i}{ext}"
        Image.open(root / src["path"]).save(root / dst)
        tgt = first[b]
        rows.append({"path": dst, "patient_id": b, "label": tgt["label"], "split": tgt["split"]})
        planted.append((src["path"], dst))
    # split screens of one patient's two images: a gap between the panes, and touching panes
    p = pids[4]
    two = [r for r in rows if r["patient_id"] == p][:2]
    panes = []
    for r in two:
        x0, y0, x1, y1 = r["_box"]
        panes.append(np.asarray(Image.open(root / r["path"]).convert("L"))[y0:y1, x0:x1][:, :420])
    screens = {}
    for name, gap in (("split/dual_gap.png", 24), ("split/dual_touch.png", 0)):
        h = max(q.shape[0] for q in panes) + 120
        w = 80 + sum(q.shape[1] for q in panes) + gap
        img = np.zeros((h, w), np.uint8)
        x, boxes = 40, []
        for q in panes:
            img[60:60 + q.shape[0], x:x + q.shape[1]] = q
            boxes.append((x, 60, x + q.shape[1], 60 + q.shape[0]))
            x += q.shape[1] + gap
        (root / "split").mkdir(exist_ok=True)
        Image.fromarray(img).save(root / name)
        rows.append({"path": name, "patient_id": p, "label": two[0]["label"], "split": two[0]["split"]})
        screens[name] = boxes
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "patient_id", "label", "split"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return root, planted, screens


def test_check_finds_every_planted_copy(own):
    root, planted, screens = own
    rep = check_dataset(root)
    assert rep.classes == ["benign", "malignant"]
    groups = [set(g) for p in rep.problems if p.kind == "exact_duplicate" for g in p.items]
    for orig, copy in planted:
        assert any({orig, copy} <= g for g in groups), (orig, copy, groups)
    assert not rep.ok
    assert "split/dual_gap.png" in rep.split_screens  # flagged: several panes, each hashed


def test_no_pane_is_lost(own):
    root, _, screens = own
    for name, boxes in screens.items():
        f, = read(root / name, crop="detect")
        x0, y0, x1, y1 = f.region
        for b in boxes:  # every pane lies inside the crop
            assert x0 <= b[0] + 2 and y0 <= b[1] + 2 and x1 >= b[2] - 2 and y1 >= b[3] - 2, (name, f.region, b)
        if name == "split/dual_gap.png":
            assert any(n.startswith("split screen: 2 panes") for n in f.notes)


def test_train_refuses_the_copies_unless_allowed(own, tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    from thyrofast.train import train

    root, planted, _ = own
    kw = dict(arch="resnet18", width=0.25, image_size=48, epochs=1, batch_size=16, threads=1, progress=False,
              export=False, preprocess={"denoise": "median3"})
    with pytest.raises(InputError, match="pixel-identical") as e:
        train(root, tmp_path / "b", log=lambda m: None, **kw)
    assert all(copy in str(e.value) for _, copy in planted) and "--allow-duplicates" in str(e.value)
    assert not (tmp_path / "b").exists()  # refused before anything was written
    logs: list[str] = []
    b = train(root, tmp_path / "b", allow_duplicates=True, log=logs.append, **kw)
    assert b.classes == ("benign", "malignant") and b.operating_point["positive"] == "malignant"
    assert any(m.startswith("warning: exact duplicates") and planted[0][1] in m for m in logs)


def test_cli_refusal_is_one_line_exit_2(own, tmp_path, capsys):
    pytest.importorskip("torch")
    from thyrofast.cli import main

    root, _, _ = own
    assert main(["train", str(root), "--out", str(tmp_path / "b"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("thyrofast train: error:") and "pixel-identical" in err and "\n" not in err


def test_near_duplicates_only_warn(own, tmp_path):
    root, _, _ = own
    clean = tmp_path / "clean"
    shutil.copytree(root, clean)
    with open(clean / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if not r["path"].startswith("copies/")]
    src = next(r for r in rows if r["path"].endswith("000.png"))
    other = next(r for r in rows if r["patient_id"] != src["patient_id"])
    im = Image.open(clean / src["path"]).convert("L")
    im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(clean / "resized.png")  # a near copy
    rows.append({**other, "path": "resized.png"})
    with open(clean / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    said: list[str] = []
    rep = check_before_training(clean, say=said.append)
    assert {p.kind for p in rep.problems} & {"near_duplicate"}
    assert any(m.startswith("warning: near duplicates") and "resized.png" in m for m in said)


def test_own_finding_words_are_warned_with_the_vocabulary(tmp_path):
    """A user's finding words (``hypoechogenicity``, ``well-defined``) used to be dropped silently, and
    nodule findings without ``view`` / ``n_nodules`` trained nothing: the check says so."""
    root = tmp_path / "d"
    (root / "img").mkdir(parents=True)
    rows = ["path,patient_id,label,echogenicity,margin"]
    for i in range(6):
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,p{i},{('benign', 'malignant')[i % 2]},"
                    f"{('hypoechogenicity', 'hypoechoic')[i % 2]},{('well-defined', 'smooth')[i % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    said: list[str] = []
    rep = check_before_training(root, say=said.append)
    msgs = {p.message: p.items for p in rep.problems if p.kind == "findings"}
    echo = next(m for m in msgs if m.startswith("column 'echogenicity'"))
    assert "anechoic, hyperechoic, isoechoic, hypoechoic, very_hypoechoic" in echo
    assert msgs[echo] == ["'hypoechogenicity' (3 rows)"]
    assert any(m.startswith("column 'margin'") and "smooth, ill_defined" in m for m in msgs)
    assert any("no 'view' column" in m for m in msgs) and any("no 'n_nodules' column" in m for m in msgs)
    assert all(p.severity == "warning" for p in rep.problems if p.kind == "findings")
    assert any(m.startswith("warning: findings: column 'echogenicity'") for m in said)
