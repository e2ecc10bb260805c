"""Fitting the simulated readers' noise to target accuracies, and checking the fitted constants.

The reader model itself (``ReaderModel``, ``READERS``, ``read_patient``) is in
:mod:`thyrofast.synth.readers`; fitting needs a cohort, so it lives here, above both
(``readers`` must not import ``cohort``, which uses the readers to write ``readers.csv``).

``python -m thyrofast.synth.reader_fit --fit | --verify`` refits the constants or checks them.
"""
from __future__ import annotations

import numpy as np

from .cohort import cohort_prior, plan_cohort
from .features import CLASSES, posterior
from .readers import READER_FIT, READERS, ReaderModel, model_for, reader_accuracies


def cohort_patients(preset: str, seed: int, patients: int):
    plans = plan_cohort(preset, seed, patients)
    return [pl.patient for pl in plans], cohort_prior(plans)


def fit_reader(target: float, *, preset: str = "paper", seed: int = 7001, patients: int = 20000, draws: int = 4,
               steps: int = 14, name: str = "reader") -> ReaderModel:
    """The reader whose mean accuracy over ``draws`` draws on a ``patients``-patient cohort is ``target``.

    One noise level: perception error rate ``eps`` (decision noise ``DECISION_NOISE_PER_EPS * eps``),
    found by bisection (accuracy falls as the noise grows).  Raises ValueError for a target above the
    noiseless reader's accuracy (the Bayes accuracy of the cohort) or below the noisiest's.
    """
    pats, prior = cohort_patients(preset, seed, patients)

    def acc(eps: float) -> float:
        return float(reader_accuracies(pats, model_for(name, eps), prior, seed=seed, draws=draws).mean())

    lo, hi = 0.0, 0.6
    if not acc(hi) < target < acc(lo):
        raise ValueError(f"target accuracy {target} is outside what this reader family reaches on the cohort")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if acc(mid) > target:
            lo = mid
        else:
            hi = mid
    return model_for(name, 0.5 * (lo + hi))


def calibrate(target: float, *, n: int = 20000, seed: int = 7001, decision_noise: float | None = None,
              prior: dict | None = None) -> float:
    """``eps`` for 3-class accuracy ``target`` (the older interface of :func:`fit_reader`)."""
    if decision_noise is not None or prior is not None:
        raise ValueError("decision noise follows eps (DECISION_NOISE_PER_EPS) and the prior is the cohort's")
    return fit_reader(target, seed=seed, patients=n).eps


def verify(*, preset: str = "paper", seed: int = 7002, patients: int = 10000, draws: int = 20) -> dict:
    """Each reader's accuracy in ``draws`` draws on a fresh cohort: ``{reader: {mean, sd, min, max, draws}}``,
    with the cohort's Bayes accuracy."""
    pats, prior = cohort_patients(preset, seed, patients)
    out = {}
    for k, (name, model) in enumerate(READERS.items()):
        a = reader_accuracies(pats, model, prior, seed=seed, draws=draws, reader_index=k)
        out[name] = {"eps": model.eps, "decision_noise": model.decision_noise, "mean": float(a.mean()),
                     "sd": float(a.std(ddof=1)) if draws > 1 else 0.0, "min": float(a.min()),
                     "max": float(a.max()), "draws": [float(x) for x in a]}
    bayes = np.mean([max(CLASSES, key=posterior(p, prior).get) == p.label for p in pats])
    out["bayes_accuracy"] = float(bayes)
    out["cohort"] = {"preset": preset, "seed": seed, "patients": patients, "draws": draws}
    return out


def main(argv=None) -> int:
    """``python -m thyrofast.synth.reader_fit --fit | --verify``: refit the constants or check them."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m thyrofast.synth.reader_fit")
    ap.add_argument("--fit", action="store_true", help="refit eps for the targets in READER_FIT and print them")
    ap.add_argument("--verify", action="store_true", help="accuracy over 20 draws on a fresh 10,000-patient cohort")
    a = ap.parse_args(argv)
    if a.fit:
        fit = {name: fit_reader(t, seed=READER_FIT["cohort"]["seed"], patients=READER_FIT["cohort"]["patients"],
                                draws=READER_FIT["draws"], name=name).eps
               for name, t in READER_FIT["targets"].items()}
        print(json.dumps(fit, indent=2))
    if a.verify or not a.fit:
        print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "draws"} if isinstance(v, dict) and "mean" in v
                              else v) for k, v in verify().items()}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
