"""Numpy helpers of the training loop: softmax, temperature (aggregation: thyrofast.aggregation).

AUC and ECE come from :mod:`thyrofast.metrics` (one implementation project-wide).
"""
from __future__ import annotations

import numpy as np

from ..metrics import ece, macro_auc

__all__ = ["softmax", "log_softmax", "macro_auc", "ece", "fit_temperature", "nll"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-lp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimizing the NLL of softmax(logits / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: nll(logits, labels, float(np.exp(lt))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))
