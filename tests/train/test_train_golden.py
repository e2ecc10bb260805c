"""Golden values: a tiny train() and a tiny pretrain() give bit-identical weights and histories.

These pin the exact numbers the training and pretraining loops produced before the
issue-23 restructuring of thyrofast/train/ (one epoch loop, thyrofast.train.engine),
so that restructuring (and any later one meant to be "behaviour unchanged") is
proven bit-identical on the CPU.

Where the values came from: computed with ``python tests/train/test_train_golden.py`` on
the code of main at d01e4f3 (thyrofast/train/ there equals 54423f5's except an
import rename in train/init.py), torch 2.14.1+cu130, CPU only, CPU capability AVX2
(torch.backends.cpu.get_cpu_capability()), one torch thread.  Float results depend
on torch's version and the CPU's instruction set, so the test is skipped elsewhere.
A change that is *meant* to change the numbers regenerates them with the same command
and says so in its commit.
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

GOLDEN_TORCH = "2.14.1"
GOLDEN_CPU_CAPABILITY = "AVX2"

# name -> (sha256 of the state_dict, sha256 of the history numbers); see _train_digest / _pretrain_digest
GOLDEN = {
    'pretrain': ('c554134592dcc29d0d80739a545958731a691ec2fe60da166f6b9d5257f6bacf',
                 'f236a7b8af6629561e229a3e2bf9689c08c2e66bba655c942d96a307dbb26269'),
    'pretrain_lesion': ('8915d46b42213cbe3ed5beb6e8c1e9b784efb830fec67f3f59dd88fd6cf87144',
                        '85e69ec588e344439b47116194810eb2a86fc24c5f639a7b9630399d5e51d082'),
    'train': ('d448b4b8d9944d0b960009d7a1b8c8bcf9f5611f3e42e4bf012048bcaa5effcc',
              'a80794a70bbcead4104adc9b90b1d7c8c942e9c20c81c3454881a780f1a2d4d8'),
    'train_ghost_lrscale': ('ad8ed8937ab5fd4bec0a214ea2b00010be0bd1c06ede29aae808788fd6b9d10d',
                            '5fcb026296a78e082b89042caa78c9e1eb901c684c853dfd1795e64d2efca0bd'),
}


def _skip_reason() -> str | None:
    if not torch.__version__.startswith(GOLDEN_TORCH):
        return f"golden values were computed with torch {GOLDEN_TORCH}, this is {torch.__version__}"
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != GOLDEN_CPU_CAPABILITY:
        return f"golden values were computed on a CPU with capability {GOLDEN_CPU_CAPABILITY}, this one has {cap}"
    return None


def _state_digest(state) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each tensor, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _numbers_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _cohort(root: Path) -> Path:
    """The shared phantom cohort (small) with annotation columns, so the auxiliary heads train too."""
    import _train_fixture

    src = _train_fixture.write_cohort(root / "src", patients_per_class=(6, 6, 6), images_per_patient=4)
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        node = i % 3 == 0
        r["view"] = "lymph_node" if node else "transverse"
        r["ln_metastatic"] = ("1" if r["label"] == "MMTN" else "0") if node else ""
        r["n_nodules"] = "1"
        r["echogenicity"] = "" if node else {"BTN": "hypoechoic", "NMTN": "hyperechoic",
                                             "MMTN": "isoechoic"}[r["label"]]
        r["path"] = str((src.parent / r["path"]).resolve())
    out = root / "manifest.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


TRAIN_RUNS = {
    "train": dict(epochs=2),
    "train_ghost_lrscale": dict(epochs=2, ghost_batches=2, backbone_lr_scale=0.5, aux_weight=0.5,
                                class_weighting="none"),
}


def _train_digest(root: Path, name: str) -> tuple[str, str]:
    from thyrofast.bundle import Bundle
    from thyrofast.train import train

    kw = TRAIN_RUNS[name]
    manifest = _cohort(root / "cohort")
    train(manifest, root / name, arch="resnet18", width=0.25, image_size=32, batch_size=8, lr=3e-3,
          patience=10, seed=0, progress=False, threads=1, export=False, log=lambda m: None,
          preprocess={"denoise": "none", "normalize": "minmax"}, **kw)
    b = Bundle.load(root / name)
    t = b.manifest["training"]
    hist = [{k: v for k, v in row.items() if "seconds" not in k} for row in t["history"]]
    numbers = {"history": hist, "temperature": b.temperature, "best_epoch": t["best_epoch"],
               "validation": t["validation"], "aggregation": b.aggregation}
    return _state_digest(b.state_dict()), _numbers_digest(numbers)


def _pretrain_digest(root: Path, name: str) -> tuple[str, str]:
    from safetensors.torch import load_file

    from thyrofast.train.pretrain import pretrain

    kw = {"pretrain": {}, "pretrain_lesion": {"diagnosis_target": "lesion"}}[name]
    report = pretrain(root / name, images=48, epochs=2, image_size=32, progress=False, threads=1, workers=1,
                      log=lambda m: None, **kw)
    hist = [{k: v for k, v in row.items() if k != "seconds"} for row in report["history"]]
    state = load_file(str(root / name / "backbone.safetensors"))
    return _state_digest(state), _numbers_digest({"history": hist, "key": report["key"]})


RUNS = {**{n: _train_digest for n in TRAIN_RUNS}, "pretrain": _pretrain_digest, "pretrain_lesion": _pretrain_digest}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_bit_identical_to_the_golden_values(name, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    old = torch.get_num_threads()
    try:
        got = RUNS[name](tmp_path, name)
    finally:
        torch.set_num_threads(old)
    assert got == GOLDEN[name], f"{name}: {got}"


if __name__ == "__main__":  # prints the GOLDEN table for this machine
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures
    print(f"# torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory() as d:
        for n in sorted(RUNS):
            state, numbers = RUNS[n](Path(d), n)
            print(f"    {n!r}: ({state!r},\n{' ' * (len(n) + 9)}{numbers!r}),")
