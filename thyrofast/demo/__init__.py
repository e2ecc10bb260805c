"""``thyrofast demo``: the paper's study reproduced end to end on the phantom.

Steps (each resumable: its output is checked and kept; ``force`` redoes all):
  1. synth     the ``paper`` phantom cohort (195 patients, 3,537 images)
  2. pretrain  two CNNs on 11,000 distinct phantom lesions, one per patient, with
               their findings and diagnoses (thyrofast.train.pretrain); the
               bundle averages them
  3. train     the bundle: the pretrained CNN as it is (see RECIPE); the
               training patients fit the prior correction, the temperature
               and the image -> patient rule
  4. export    FP32 / FP16 / gated INT8 ONNX in the bundle
  5. evaluate  the 34 test patients vs the simulated readers and the Bayes
               reference, beside the paper's published (clinical) numbers
  6. bench     preprocessing and inference on this machine
  7. summary   report.md, report.json, figures; a one-screen summary
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .._fs import atomic_write_text
from ..models import check_members

__all__ = ["run_demo", "DemoConfig", "PAPER_REFERENCE"]

#: Zhao et al. 2025 (Front. Neurosci., doi 10.3389/fnins.2025.1684104), clinical data.
PAPER_REFERENCE = {
    "Zhao et al. 2025 CNN (clinical data)": {"auc": {"BTN": 0.97, "NMTN": 0.99, "MMTN": 0.96}, "accuracy": 0.95},
    "Zhao et al. 2025 junior radiologist (clinical)": {"accuracy": 0.73},
    "Zhao et al. 2025 senior radiologist (clinical)": {"accuracy": 0.84},
}

STEPS = ("synth", "pretrain", "train", "export", "evaluate", "bench", "summary")

#: The demo's recipe: two networks pretrained side by side on 11,000 shared phantom lesions against each
#: lesion's posterior, kept as they are (``epochs=0``: the study cohort fits only the prior correction, the
#: temperature and the image -> patient rule; ``--epochs N`` trains the heads on the frozen backbone instead).
#: Why, with the measurements: docs/demo.md.
RECIPE = {"pretrain_images": 11000, "pretrain_epochs": 10, "pretrain_members": 2, "pretrain_shared_lexicon": True,
          "pretrain_diagnosis_target": "lesion",
          "epochs": 0, "backbone_lr_scale": 0.0}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: Path
    quick: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    force: bool = False
    epochs: int | None = None
    image_size: int | None = None
    patients: int | None = None
    pretrain_images: int | None = None
    pretrain_members: int | None = None
    pretrain_target: str | None = None
    progress: bool = True

    def __post_init__(self):
        from thyrofast.train.pretrain import DIAGNOSIS_TARGETS

        if self.pretrain_target is not None and self.pretrain_target not in DIAGNOSIS_TARGETS:
            raise ValueError(f"pretrain_target must be one of {DIAGNOSIS_TARGETS}, got {self.pretrain_target!r}")
        m = self.pretrain_members
        if m is not None and check_members(m, "pretrain_members") > 1 and self.epochs:
            raise ValueError("an ensemble (pretrain_members > 1) is used as pretrained: it needs epochs=0")

    def resolved(self) -> dict[str, Any]:
        """The settings that determine the result (a changed one redoes the steps)."""
        quick = {"patients": 40, "image_size": 64, "pretrain_images": 240, "pretrain_epochs": 1} if self.quick else {}
        epochs = self.epochs if self.epochs is not None else RECIPE["epochs"]
        return {
            "seed": self.seed,
            "pretrain_images": self.pretrain_images or quick.get("pretrain_images") or RECIPE["pretrain_images"],
            "pretrain_epochs": quick.get("pretrain_epochs") or RECIPE["pretrain_epochs"],
            # an ensemble is used as pretrained (epochs=0); training heads needs one network
            "pretrain_members": (self.pretrain_members or RECIPE["pretrain_members"]) if epochs == 0 else 1,
            "pretrain_shared_lexicon": RECIPE["pretrain_shared_lexicon"],
            "pretrain_diagnosis_target": self.pretrain_target or RECIPE["pretrain_diagnosis_target"],
            "backbone_lr_scale": RECIPE["backbone_lr_scale"],
            "patients": self.patients if self.patients is not None else quick.get("patients"),
            "image_size": self.image_size or quick.get("image_size"),
            "epochs": epochs,
            "quick": self.quick,
        }


class _State:
    """demo_state.json: which steps finished, with which settings, in how long."""

    def __init__(self, out: Path, settings: dict[str, Any], force: bool):
        self.path = out / "demo_state.json"
        self.settings = settings
        data = {}
        if self.path.exists() and not force:
            try:
                data = json.loads(self.path.read_text())
            except ValueError:
                data = {}
        if data.get("settings") != settings:
            data = {"settings": settings, "done": {}, "timings_s": {}}
        self.data = data

    def done(self, step: str) -> bool:
        return step in self.data["done"]

    def mark(self, step: str, seconds: float, info: Any = None) -> None:
        self.data["done"][step] = info if info is not None else True
        self.data["timings_s"][step] = round(seconds, 2)
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str))

    def forget_from(self, step: str) -> None:
        for s in STEPS[STEPS.index(step):]:
            self.data["done"].pop(s, None)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run (or resume) the demo; returns the final report dict."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = cfg.resolved()
    state = _State(out, settings, cfg.force)
    cohort_dir, bundle_dir, eval_dir = out / "cohort", out / "bundle", out / "evaluation"
    pretrain_dir = out / "pretrain"
    if cfg.force:
        for d in (cohort_dir, pretrain_dir, bundle_dir, eval_dir):
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d.with_name(d.name + ".partial"), ignore_errors=True)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if state.done(name):
            log(f"[{name}] done earlier, skipped (--force redoes it)")
            return state.data["done"][name]
        log(f"[{name}] ...")
        t0 = time.perf_counter()
        info = fn()
        state.mark(name, time.perf_counter() - t0, info)
        log(f"[{name}] finished in {time.perf_counter() - t0:.1f} s")
        return info

    # 1. cohort
    def do_synth():
        from thyrofast.synth import generate_cohort

        c = generate_cohort(cohort_dir, preset="paper", seed=cfg.seed, patients=settings["patients"],
                            workers=cfg.workers, progress=cfg.progress)
        return {"patients": c.n_patients, "images": c.n_images}

    step("synth", do_synth)

    # 2. pretraining: the cohort alone holds too few distinct nodules
    def do_pretrain():
        from thyrofast.train.pretrain import pretrain

        kw = {"image_size": settings["image_size"], "images": settings["pretrain_images"],
              "epochs": settings["pretrain_epochs"], "members": settings["pretrain_members"],
              "shared_lexicon": settings["pretrain_shared_lexicon"],
              "diagnosis_target": settings["pretrain_diagnosis_target"]}
        kw = {k: v for k, v in kw.items() if v}
        # torch's threads (all cores) for one network; ensemble members train
        # side by side on the CPU, one thread each (thyrofast.train.pretrain)
        rep = pretrain(pretrain_dir, seed=cfg.seed, workers=cfg.workers,
                       device=cfg.device, progress=cfg.progress, log=log, **kw)
        return {"backbone": str(pretrain_dir / "backbone.safetensors"), "images": rep["n_images"],
                "held_out": rep["held_out"]}

    step("pretrain", do_pretrain)

    # 3 + 4. training writes the bundle; export (FP32/FP16/gated INT8) is its own step
    def do_train():
        from thyrofast.train import DEFAULTS, train

        kw = {"epochs": settings["epochs"]}
        if settings["image_size"]:
            kw["image_size"] = settings["image_size"]
        resume = (bundle_dir / ".train").exists()
        train(cohort_dir, bundle_dir, device=cfg.device, seed=cfg.seed, progress=cfg.progress, export=False,
              resume=resume, pretrained=str(pretrain_dir / "backbone.safetensors"),
              backbone_lr_scale=settings["backbone_lr_scale"], **kw)
        return {"arch": DEFAULTS.arch, "backbone_lr_scale": settings["backbone_lr_scale"], **kw}

    step("train", do_train)

    def do_export():
        from thyrofast.bundle import Bundle
        from thyrofast.export import export_from_data

        rep = export_from_data(Bundle.load(bundle_dir), cohort_dir, fp16=True, seed=cfg.seed, progress=cfg.progress)
        artifacts = sorted(Bundle.load(bundle_dir).manifest["artifacts"])
        log(f"[export] artifacts: {', '.join(artifacts)}")
        return {"artifacts": artifacts, "report": rep}

    step("export", do_export)

    # 5. evaluation against the readers and the Bayes reference
    def do_evaluate():
        from thyrofast.evaluate import evaluate_bundle, write_report

        res = evaluate_bundle(bundle_dir, cohort_dir, split="test", readers=cohort_dir / "readers.csv",
                              level="patient", device=cfg.device, progress=cfg.progress)
        write_report(res, eval_dir, reference=PAPER_REFERENCE)
        return {"report": str(eval_dir / "report.json")}

    step("evaluate", do_evaluate)

    # 6. benchmarks on this machine
    def do_bench():
        from thyrofast.bench import bench_preprocess_cpu

        results = {"preprocess": bench_preprocess_cpu(rounds=20 if cfg.quick else 40, batch=16 if cfg.quick else 64)}
        try:
            from thyrofast.bench import inference_bench
        except ImportError:
            inference_bench = None
        if inference_bench is not None:
            for name, res in inference_bench.run("e2e", device="cpu", rounds=20 if cfg.quick else 40,
                                                 bundle=str(bundle_dir)):
                results[name] = res
        (out / "bench.json").write_text(json.dumps(results, indent=2))
        return {"bench": str(out / "bench.json")}

    step("bench", do_bench)

    # 7. the demo's own report: evaluation + timings + provenance + bench
    def do_summary():
        return _write_summary(out, eval_dir, bundle_dir, state)

    state.forget_from("summary")  # always rewritten: it is cheap and carries the timings
    step("summary", do_summary)
    report = json.loads((out / "report.json").read_text())
    print(summary_text(report))
    return report


def _write_summary(out: Path, eval_dir: Path, bundle_dir: Path, state: _State) -> dict[str, Any]:
    from thyrofast.bundle import Bundle

    ev = json.loads((eval_dir / "report.json").read_text())
    bundle = Bundle.load(bundle_dir)
    man = bundle.manifest
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
    report = dict(ev)
    report["timings_s"] = dict(state.data["timings_s"])
    report["provenance"] = {
        "bundle": str(bundle_dir),
        "arch": man.get("arch"),
        "input_shape": man.get("input_shape"),
        "thyrofast_version": man.get("thyrofast_version"),
        "artifacts": {k: v.get("sha256") for k, v in man.get("artifacts", {}).items()},
        "training_data_fingerprint": _training_fingerprint(man.get("training")),
        "pretraining": _pretraining_summary(man.get("training")),
        "settings": state.settings,
    }
    report["paper"] = PAPER_REFERENCE
    report["bench"] = bench
    report["data"] = "phantom (thyrofast synth, paper preset): NOT clinical data"
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str))
    md = (eval_dir / "report.md").read_text()
    md = md.replace("](", "](evaluation/") if "](evaluation/" not in md else md
    header = ["# thyrofast demo: Zhao et al. 2025 reproduced on phantom data", "",
              "**Phantom data (thyrofast's synthetic cohort), not clinical data; the model is not for diagnosis.** "
              "Published numbers from the paper are clinical and are shown for orientation only.", "",
              "## Timings (s)", "", "| step | seconds |", "| --- | ---: |"]
    header += [f"| {k} | {v:.1f} |" for k, v in state.data["timings_s"].items()]
    header += [""]
    (out / "report.md").write_text("\n".join(header) + "\n" + md)
    for png in eval_dir.glob("*.png"):
        shutil.copy2(png, out / png.name)
    return {"report": str(out / "report.json")}


def _training_fingerprint(training: Any) -> str | None:
    data = training.get("data") if isinstance(training, dict) else None
    return data.get("fingerprint") if isinstance(data, dict) else None


def _pretraining_summary(training: Any) -> dict[str, Any] | None:
    rep = ((training or {}).get("pretraining") or {}).get("report") if isinstance(training, dict) else None
    if not rep:
        return None
    config = rep.get("config", {})
    return {"data": rep.get("data"), "n_images": rep.get("n_images"), "epochs": config.get("epochs"),
            "diagnosis_target": config.get("diagnosis_target", "patient"), "held_out": rep.get("held_out")}


def _fmt_ci(d: Any) -> str:
    if not isinstance(d, dict) or d.get("value") is None:
        return "  n/a"
    ci = d.get("ci") or [None, None]
    if ci[0] is None:
        return f"{d['value']:.3f}"
    return f"{d['value']:.3f} ({ci[0]:.2f}-{ci[1]:.2f})"


def summary_text(report: dict[str, Any]) -> str:
    """One screen: per-class AUC, macro AUC and accuracy for model, Bayes, readers, paper."""
    from thyrofast import CLASSES

    rows = [("model (phantom)", report.get("model")), ("Bayes reference", report.get("bayes"))]
    for name, r in (report.get("readers") or {}).items():
        rows.append((f"{name} reader (sim.)", r))
    lines = ["", "thyrofast demo — phantom data, not clinical; not for diagnosis", ""]
    head = f"{'':<22}" + "".join(f"{'AUC ' + c:>18}" for c in CLASSES) + f"{'macro AUC':>18}{'accuracy':>18}"
    lines.append(head)
    for name, r in rows:
        if not r:
            continue
        auc = r.get("auc") or {}
        lines.append(f"{name:<22}" + "".join(f"{_fmt_ci(auc.get(c)):>18}" for c in CLASSES)
                     + f"{_fmt_ci(r.get('macro_auc')):>18}{_fmt_ci(r.get('accuracy')):>18}")
    for name, r in PAPER_REFERENCE.items():
        auc = r.get("auc", {})
        cells = "".join(f"{auc[c]:>18.2f}" if c in auc else f"{'':>18}" for c in CLASSES)
        acc = f"{r['accuracy']:>18.2f}" if "accuracy" in r else f"{'':>18}"
        label = name.replace("Zhao et al. 2025 ", "paper ").replace(" radiologist", "").replace(" data)", ")")
        lines.append(f"{label[:22]:<22}" + cells + f"{'':>18}" + acc)
    t = report.get("timings_s", {})
    lines += ["", "timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
              + f"; total {sum(t.values()):.0f}"]
    return "\n".join(lines)
