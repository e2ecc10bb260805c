"""The simulated readers are fitted, not hand-set: they reach the paper's 73 % / 84 % on a large cohort."""
from __future__ import annotations

import numpy as np
import pytest

from thyrofast.synth import reader_fit as fit
from thyrofast.synth import readers as R


def test_readers_follow_the_fitted_family():
    assert R.READER_FIT["targets"] == {"junior": 0.73, "senior": 0.84}
    for m in R.READERS.values():
        assert m.decision_noise == pytest.approx(R.DECISION_NOISE_PER_EPS * m.eps)
    assert R.READERS["junior"].eps > R.READERS["senior"].eps > 0
    assert "see no pixels" in R.READER_DESCRIPTION


def test_draw_zero_is_the_cohorts_stream():
    # readers.csv of every cohort uses draw 0: the key must stay what it was
    a = R.reader_rng(5, 7, "senior").random(4)
    b = np.random.default_rng(np.random.SeedSequence([5, 3, 7, 1])).random(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(R.reader_rng(5, 7, "senior", draw=1).random(4), a)


def test_fit_recovers_a_known_reader():
    # a reader with a known noise level sets the target; the fit finds that level again
    pats, prior = fit.cohort_patients("paper", 11, 1500)
    known = R.model_for("x", 0.15)
    target = float(R.reader_accuracies(pats, known, prior, seed=11, draws=2).mean())
    fitted = fit.fit_reader(target, seed=11, patients=1500, draws=2, steps=12)
    got = float(R.reader_accuracies(pats, fitted, prior, seed=11, draws=2).mean())
    assert got == pytest.approx(target, abs=0.005)
    assert fitted.eps == pytest.approx(0.15, abs=0.03)
    with pytest.raises(ValueError, match="outside"):
        fit.fit_reader(0.99, seed=11, patients=300, draws=1, steps=2)  # above the Bayes accuracy


@pytest.mark.slow
def test_fitted_readers_reach_the_papers_accuracy_on_10000_patients():
    # a cohort the fit never saw (the fit used seed 7001); 20 reader draws each (a multi-reader view)
    v = fit.verify(seed=7003, patients=10000, draws=20)
    assert abs(v["junior"]["mean"] - 0.73) <= 0.01, v["junior"]
    assert abs(v["senior"]["mean"] - 0.84) <= 0.01, v["senior"]
    assert v["junior"]["sd"] < 0.01 and v["senior"]["sd"] < 0.01  # 10,000 patients: draws agree closely
    assert v["senior"]["mean"] < v["bayes_accuracy"]
