"""Sensitivity of the Bayes reference to the generator's unsourced knobs."""
from __future__ import annotations

import copy

import pytest

from thyrofast.synth import features as F
from thyrofast.synth import sensitivity as S


def test_generator_with_changes_and_restores():
    before = {k: copy.deepcopy(getattr(F, k)) for k in S.KNOBS}
    with S.generator_with(NODE_COUNT={"MMTN": {0: 1.0}}, METASTATIC_SHARE={"MMTN": 0.5}):
        assert F.NODE_COUNT["MMTN"] == {0: 1.0} and F.METASTATIC_SHARE["MMTN"] == 0.5
        assert F.NODE_COUNT["BTN"] == before["NODE_COUNT"]["BTN"]
    assert {k: getattr(F, k) for k in S.KNOBS} == before
    with pytest.raises(ValueError, match="unknown knobs"):
        with S.generator_with(PRIOR={}):
            pass


def test_node_count_carries_mmtn_signal_only_when_class_dependent():
    base = S.bayes_under(3000, seed=1)
    flat = S.bayes_under(3000, seed=1, NODE_COUNT={"MMTN": dict(F.NODE_COUNT["BTN"])})
    assert base["node_count_only_mmtn_auc"] > 0.7  # the preset: the count alone separates MMTN
    assert abs(flat["node_count_only_mmtn_auc"] - 0.5) < 0.05
    assert flat["all"]["macro_auc"] < base["all"]["macro_auc"]
    assert base["node_view"]["macro_auc"] > base["no_node_view"]["macro_auc"]
