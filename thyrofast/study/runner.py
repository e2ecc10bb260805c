"""Running a study protocol: cohorts, then each replicate x rung as one resumable unit.

Layout of a study folder ``OUT``::

    protocol.json                 the protocol run (a folder holds one protocol; another is refused)
    cohorts/<name>/               thyrofast synth output (resumable itself)
    cohorts/<name>.table.json     per patient: label, split, Bayes posterior, reader calls (draw 0),
                                  subgroup flags; reader accuracy over the protocol's draws
    units/<replicate>/<rung>/     pretraining and the bundle (each resumes on its own)
    results/<replicate>__<rung>.json   the unit's per-patient predictions, written atomically last
    state.json                    seconds per unit and per cohort (a unit's exclude its cohorts), and
                                  each call's wall time, kept up to date after every unit so a call
                                  that is killed still counts up to its last finished unit

A unit whose result file exists is done and skipped; an interrupted one resumes
from its pretraining checkpoints, its bundle or its cohort.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._fs import atomic_write_text

PROTOCOLS = Path(__file__).with_name("protocols")
_REQUIRED = ("name", "replicates", "rungs", "large_cohort", "primary", "preset", "image_size")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_protocol(protocol: str | Path | dict) -> dict:
    """A protocol as a dict: ``"full"``, ``"quick"`` (the packaged ones), a JSON file, or a dict.

    Adds ``sha256`` (of the canonical JSON) and checks the fields the runner needs.
    """
    if isinstance(protocol, dict):
        proto = json.loads(json.dumps(protocol))
    else:
        path = Path(protocol)
        if str(protocol) in ("full", "quick"):
            path = PROTOCOLS / f"{protocol}.json"
        if not path.is_file():
            raise ValueError(f"no protocol file {str(protocol)!r} (give a JSON file, 'full' or 'quick')")
        try:
            proto = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"protocol {path} is not valid JSON: {exc}") from None
    proto.pop("sha256", None)
    missing = [k for k in _REQUIRED if k not in proto]
    if missing:
        raise ValueError(f"protocol lacks {', '.join(missing)}")
    ids = [r.get("id") for r in proto["replicates"]]
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError("protocol replicates need distinct ids")
    dev = set((proto.get("development_seeds") or {}).get("cohort", []))
    used = {r["cohort_seed"] for r in proto["replicates"]} | {proto["large_cohort"]["seed"]}
    if dev & used:
        raise ValueError(f"cohort seeds {sorted(dev & used)} are development data; a protocol uses fresh ones")
    if len(used) != len(proto["replicates"]) + 1:
        raise ValueError("every replicate and the large cohort need their own cohort seed")
    if proto["primary"]["rung"] not in proto["rungs"]:
        raise ValueError(f"primary rung {proto['primary']['rung']!r} is not among the rungs")
    proto["sha256"] = hashlib.sha256(json.dumps(proto, sort_keys=True).encode()).hexdigest()
    return proto


def _cohort_name(seed: int, patients: int | None) -> str:
    return f"seed{seed}" + (f"_n{patients}" if patients else "")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cohort_table(cohort_dir: Path, preset: str, seed: int, patients: int | None, draws: int) -> dict:
    """Per-patient facts of a generated cohort (from its manifest and readers.csv) and the
    readers' accuracy over ``draws`` draws (:func:`thyrofast.synth.readers.reader_rng`)."""
    from ..synth import readers as R
    from ..synth.cohort import cohort_prior, plan_cohort
    from ..synth.features import CLASSES

    rows = _read_csv(cohort_dir / "manifest.csv")
    pat: dict[str, dict] = {}
    for r in rows:
        p = pat.setdefault(r["patient_id"], {
            "label": CLASSES.index(r["label"]), "split": r["split"],
            "bayes": [float(r[f"bayes_{c}"]) for c in CLASSES],
            "node_view": False, "multifocal": r["multifocal"] in ("1", "True"),
            "small": float(r["size_mm"]) < 10.0, "n_images": 0})
        p["node_view"] |= r["view"] == "lymph_node"
        p["n_images"] += 1
    readers: dict[str, dict[str, Any]] = {}
    for r in _read_csv(cohort_dir / "readers.csv"):
        d = readers.setdefault(r["reader"], {"call": {}, "scores": {}})
        d["call"][r["patient_id"]] = CLASSES.index(r["call"])
        d["scores"][r["patient_id"]] = [float(r[f"score_{c}"]) for c in CLASSES]
    plans = plan_cohort(preset, seed, patients)
    prior = cohort_prior(plans)
    draws_acc: dict[str, dict[str, list[float]]] = {}
    for name in R.READERS:
        acc, bal = [], []
        for d in range(draws):
            y, c = [], []
            for pl in plans:
                call = R.read_patient(pl.patient, name, R.reader_rng(seed, pl.index, name, d), prior)[0]
                y.append(CLASSES.index(pl.label))
                c.append(CLASSES.index(call))
            y, c = np.array(y), np.array(c)
            acc.append(float(np.mean(y == c)))
            bal.append(float(np.mean([np.mean(c[y == k] == k) for k in range(len(CLASSES)) if (y == k).any()])))
        draws_acc[name] = {"accuracy": acc, "balanced_accuracy": bal}
    return {"ids": sorted(pat), "patients": pat, "readers": readers, "reader_draws": draws_acc,
            "reader_models": _reader_models(),
            "reader_description": R.READER_DESCRIPTION, "seed": seed, "patients_requested": patients}


def _reader_models() -> dict:
    from ..synth import readers as R

    return {n: {"eps": m.eps, "decision_noise": m.decision_noise} for n, m in R.READERS.items()}


def _rewrite_readers(folder: Path, preset: str, seed: int, patients: int | None) -> None:
    """readers.csv of a generated cohort, made again with the current reader constants."""
    from ..synth import cohort as C

    plans = C.plan_cohort(preset, seed, patients)
    C._write_csv(folder / "readers.csv", C.readers_rows(plans, seed, C.cohort_prior(plans)))


class Study:
    """One study folder running one protocol (see the module docstring)."""

    def __init__(self, protocol, out, *, workers: int = 2, device: str = "auto", progress: bool = True,
                 log: Callable[[str], None] = _say):
        self.proto = load_protocol(protocol)
        self.out = Path(out)
        self.workers, self.device, self.progress, self.log = workers, device, progress, log
        self.out.mkdir(parents=True, exist_ok=True)
        ppath = self.out / "protocol.json"
        if ppath.exists():
            try:
                old = json.loads(ppath.read_text()).get("sha256")
            except ValueError:
                old = None
            if old != self.proto["sha256"]:
                raise FileExistsError(f"{self.out} holds a study of another protocol; choose another folder")
        else:
            atomic_write_text(ppath, json.dumps(self.proto, indent=2))
        self.state_path = self.out / "state.json"
        try:
            self.state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            self.state = {"seconds": {}}

    # ------------------------------------------------------------------ bookkeeping
    def units(self) -> list[tuple[str, str]]:
        return [(r["id"], rung) for r in self.proto["replicates"] for rung in self.proto["rungs"]]

    def result_path(self, rep: str, rung: str) -> Path:
        return self.out / "results" / f"{rep}__{rung}.json"

    def done(self) -> list[tuple[str, str]]:
        return [u for u in self.units() if self.result_path(*u).is_file()]

    def _save_state(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=2))

    def _mark(self, key: str, seconds: float) -> None:
        self.state["seconds"][key] = round(seconds, 1)
        self._save_state()

    # ------------------------------------------------------------------ cohorts
    def cohort(self, seed: int, patients: int | None) -> tuple[Path, dict]:
        """The cohort folder and its table (generated, or resumed, when missing)."""
        from ..synth import generate_cohort

        name = _cohort_name(seed, patients)
        folder = self.out / "cohorts" / name
        table_path = self.out / "cohorts" / f"{name}.table.json"
        t0 = time.perf_counter()
        if table_path.is_file():
            table = json.loads(table_path.read_text())
            if table.get("reader_models") == _reader_models():
                return folder, table
            # the readers were refitted since: their calls (readers.csv) and the table are redone
            self.log(f"study: cohort {name}: reader constants changed, re-reading its patients")
            _rewrite_readers(folder, self.proto["preset"], seed, patients)
        else:
            self.log(f"study: cohort {name} ...")
            generate_cohort(folder, preset=self.proto["preset"], seed=seed, patients=patients,
                            workers=self.workers, progress=self.progress)
        table = cohort_table(folder, self.proto["preset"], seed, patients, int(self.proto["readers"]["draws"]))
        atomic_write_text(table_path, json.dumps(table))
        self._mark(f"cohort {name}", time.perf_counter() - t0)
        return folder, table

    def large(self) -> tuple[Path, dict]:
        lc = self.proto["large_cohort"]
        return self.cohort(int(lc["seed"]), lc.get("patients"))

    # ------------------------------------------------------------------ one unit
    def run_unit(self, rep_id: str, rung_name: str) -> dict:
        from ..train import train
        from ..train.pretrain import BACKBONE_FILE, pretrain

        rep = next(r for r in self.proto["replicates"] if r["id"] == rep_id)
        rung = self.proto["rungs"][rung_name]
        cohort_dir, _ = self.cohort(int(rep["cohort_seed"]), self.proto.get("study_cohort_patients"))
        large_dir, _ = self.large()
        # timed after the cohorts: they have their own entries in state.json, so no second is counted twice
        t0 = time.perf_counter()
        unit = self.out / "units" / rep_id / rung_name
        pretrained = None
        quiet = None if self.progress else (lambda msg: None)
        if rung.get("pretrain"):
            kw = dict(rung["pretrain"])
            members = int(kw.pop("members", 1))
            shared = bool(kw.pop("shared_lexicon", False))
            pretrain(unit / "pretrain", seed=int(rep["pretrain_seed"]), image_size=int(self.proto["image_size"]),
                     members=members, shared_lexicon=shared and members > 1, workers=self.workers,
                     device=self.device, progress=self.progress, log=quiet, **kw)
            pretrained = str(unit / "pretrain" / BACKBONE_FILE)
        bundle = unit / "bundle"
        if not self._bundle_ok(bundle):
            tr = dict(rung["train"])
            train(cohort_dir, bundle, epochs=int(tr.pop("epochs")), image_size=int(self.proto["image_size"]),
                  seed=int(rep["train_seed"]), pretrained=pretrained, device=self.device, progress=self.progress,
                  export=True, int8=False, resume=(bundle / ".train").exists(), log=quiet, **tr)
        from .. import Classifier

        clf = Classifier.load(bundle, backend="onnxruntime", device="cpu")
        result = {"replicate": rep_id, "rung": rung_name, "protocol_sha256": self.proto["sha256"],
                  "bundle_sha256": clf.provenance.get("bundle_sha256") if isinstance(clf.provenance, dict)
                  else None,
                  "test": self._patient_predictions(clf, cohort_dir, "test"),
                  "large": self._patient_predictions(clf, large_dir, None),
                  "cohort": _cohort_name(int(rep["cohort_seed"]), self.proto.get("study_cohort_patients")),
                  "seconds": round(time.perf_counter() - t0, 1)}
        path = self.result_path(rep_id, rung_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result))
        self._mark(f"{rep_id}/{rung_name}", time.perf_counter() - t0)
        return result

    @staticmethod
    def _bundle_ok(bundle: Path) -> bool:
        # train writes thyrofast.json when training ends, then the ONNX graphs (export); its checkpoints
        # (.train) stay.  No card: training was interrupted (train resumes from .train).  A card without
        # model.onnx: the export was interrupted; the bundle is redone.
        if not (bundle / "thyrofast.json").is_file():
            return False
        if not (bundle / "model.onnx").is_file():
            shutil.rmtree(bundle, ignore_errors=True)
            return False
        try:
            from ..bundle import Bundle

            Bundle.load(bundle)
        except Exception:  # noqa: BLE001 - any unreadable bundle is redone
            shutil.rmtree(bundle, ignore_errors=True)
            return False
        return True

    def _patient_predictions(self, clf, cohort_dir: Path, split: str | None) -> dict:
        from ..classifier import bundle_aggregation
        from ..evaluate import inputs as I
        from ..evaluate.core import predict_manifest

        with I.using_classes(getattr(clf, "classes", None) or I.classes()):
            lab = I.load_labels(str(cohort_dir / "manifest.csv"), split)
            records = predict_manifest(clf, lab, progress=self.progress)
            img, _ = I.image_table(records, lab)
            pat = I.aggregate_patients(img, bundle_aggregation(clf))
        return {"ids": list(pat.ids), "probs": np.round(pat.probs, 7).tolist()}

    # ------------------------------------------------------------------ all
    def run(self, *, rungs: list[str] | None = None, replicates: list[str] | None = None) -> dict:
        """Run every missing unit (optionally only some rungs / replicates), then write the report."""
        from tqdm.auto import tqdm

        from .report import wall_summary, write_report

        for r in rungs or []:
            if r not in self.proto["rungs"]:
                raise ValueError(f"unknown rung {r!r}; the protocol has {', '.join(self.proto['rungs'])}")
        for r in replicates or []:
            if r not in {x["id"] for x in self.proto["replicates"]}:
                raise ValueError(f"unknown replicate {r!r}")
        todo = [u for u in self.units() if (not rungs or u[1] in rungs) and (not replicates or u[0] in replicates)]
        left = [u for u in todo if not self.result_path(*u).is_file()]
        t0 = time.perf_counter()
        call = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": 0.0, "units_run": 0,
                "status": "running"}
        self.state.setdefault("calls", []).append(call)

        def record(status: str) -> None:
            # written after every unit, so a call killed mid-way (no finally runs) keeps its time so far
            call.update(wall_s=round(time.perf_counter() - t0, 1), status=status)
            self.state["wall_s_last_call"] = call["wall_s"]
            self.state["wall_s_total"] = wall_summary(self.state)["wall_s"]
            self._save_state()

        record("running")
        bar = tqdm(total=len(todo), initial=len(todo) - len(left), desc="study", unit="unit",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            self.large()
            record("running")
            for rep, rung in left:
                bar.set_postfix_str(f"{rep} {rung}")
                self.log(f"study: {rep} / {rung} ...")
                res = self.run_unit(rep, rung)
                call["units_run"] += 1
                record("running")
                self.log(f"study: {rep} / {rung} done in {res['seconds']:.0f} s")
                bar.update(1)
        except BaseException:
            record("interrupted")
            raise
        finally:
            bar.close()
        record("done")
        return write_report(self)
