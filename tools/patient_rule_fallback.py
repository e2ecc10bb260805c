"""Measure the patient-rule fallback on a demo run: ``python tools/patient_rule_fallback.py DEMO_OUT``.

DEMO_OUT is a ``thyrofast demo`` output folder (``bundle/``, ``cohort/manifest.csv``).  Predicts the
test images once (ONNX Runtime FP32), then compares the bundle's fitted rule as stored (old bundles:
no ``fallback``) with the same rule plus the fallback (``--below``, default 10: the 10th percentile
of the demo's training patients' image counts):

* the demo's test evaluation (patient macro-AUC, accuracy, balanced accuracy);
* every test image as a one-image patient: how many images called MMTN are turned into another class
  at patient level (the failure a user met on real one-image patients).
"""
from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from thyrofast import Classifier
    from thyrofast.aggregation import aggregate
    from thyrofast.evaluate import evaluate_predictions
    from thyrofast.evaluate import inputs as I
    from thyrofast.evaluate.core import predict_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("demo_out")
    ap.add_argument("--below", type=int, default=10)
    a = ap.parse_args()
    manifest = f"{a.demo_out}/cohort/manifest.csv"
    clf = Classifier.load(f"{a.demo_out}/bundle", backend="onnxruntime", device="cpu", precision="fp32")
    with I.using_classes(clf.classes):
        recs = predict_manifest(clf, I.load_labels(manifest, "test"), progress=False)
    old = {k: v for k, v in clf.bundle.aggregation.items() if k != "fallback"}
    new = {**old, "fallback": {"rule": "mean_log_prob", "below_images": a.below}}
    P = np.array([[r["probs"][c] for c in clf.classes] for r in recs if r["status"] == "ok"])
    called = P.argmax(1) == clf.classes.index("MMTN")
    for name, agg in (("as stored (no fallback)", old), (f"fallback below {a.below} images", new)):
        m = evaluate_predictions(recs, manifest, split="test", n_boot=500, aggregation=agg)["model"]
        out = aggregate(P, list(range(len(P))), agg)
        pp = np.array([out[i][0] for i in range(len(P))])
        print(f"{name}: test macro-AUC {m['macro_auc']['value']:.4f}, accuracy {m['accuracy']['value']:.4f}, "
              f"balanced accuracy {m['balanced_accuracy']['value']:.4f}; one-image patients called MMTN at image "
              f"level: {int(called.sum())}, of them not MMTN at patient level: "
              f"{int((pp[called].argmax(1) != 2).sum())} (BTN: {int((pp[called].argmax(1) == 0).sum())})")


if __name__ == "__main__":
    main()
