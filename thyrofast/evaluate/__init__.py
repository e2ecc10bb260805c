"""Evaluation and the reader study: the paper's tables and figures with CIs and tests.

>>> from thyrofast.evaluate import evaluate_predictions, write_report
>>> result = evaluate_predictions("results.jsonl", "cohort/manifest.csv",
...                               readers_csv="cohort/readers.csv", split="test")
>>> write_report(result, "report/")       # report.json, report.md, *.png

Patient level by default: a patient's probabilities come from its images'
by the bundle's ``aggregation`` rule with a bundle (:mod:`thyrofast.aggregation`),
else by ``aggregation=`` (default "mean_log_prob": the mean of the images'
log-probabilities, renormalized).  The statistics themselves are
plain functions in :mod:`thyrofast.metrics`.
"""
from __future__ import annotations

from .core import evaluate_bundle, predict_manifest, rater_metrics
from .core import evaluate_predictions as _evaluate_predictions
from .report import render_markdown, summary_lines, to_jsonable, write_report

__all__ = ["evaluate_predictions", "evaluate_bundle", "write_report", "render_markdown", "summary_lines",
           "to_jsonable", "rater_metrics", "predict_manifest"]


def evaluate_predictions(predictions, labels_manifest_csv, readers_csv=None, level="patient", split=None,
                         **kwargs):
    """Evaluate prediction records (a results.jsonl/.csv path or dicts) against a manifest.

    See :func:`thyrofast.evaluate.core.evaluate_predictions` for the options
    (``ci_level``, ``n_boot``, ``seed``, ``stratified``, ``n_bins``).
    """
    return _evaluate_predictions(predictions, labels_manifest_csv, readers=readers_csv, level=level,
                                 split=split, **kwargs)
