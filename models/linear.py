"""Fitting the linear text models and calibrating their confidence (training side only).

Both models are multinomial logistic regressions over ``models.features`` buckets; the
fitted matrix is exactly what the ONNX graph gathers from, so scoring here with numpy
(``probabilities``) and scoring the exported graph agree to float precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from models.features import BUCKETS, FeatureBatch, to_sparse_rows


@dataclass(frozen=True, slots=True)
class LinearTextModel:
    name: str
    labels: tuple[str, ...]
    weights: np.ndarray  # float32 [BUCKETS, len(labels)]
    bias: np.ndarray  # float32 [len(labels)]
    temperature: float

    def logits(self, batch: FeatureBatch) -> np.ndarray:
        rows = self.weights[batch.token_ids]  # [n, L, C]
        return np.einsum("nl,nlc->nc", batch.token_weights, rows) + self.bias

    def probabilities(self, batch: FeatureBatch) -> np.ndarray:
        return softmax(self.logits(batch) / self.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sparse_matrix(batch: FeatureBatch) -> csr_matrix:
    data, indices, indptr = to_sparse_rows(batch)
    return csr_matrix((data, indices, indptr), shape=(len(batch), BUCKETS))


def fit_linear(
    name: str,
    batch: FeatureBatch,
    targets: Sequence[str],
    labels: Sequence[str],
    *,
    regularisation: float,
    seed: int,
) -> LinearTextModel:
    """Multinomial logistic regression; labels absent from the data still get a column
    (with a very low bias) so the output layout is the full, fixed label set."""
    from sklearn.linear_model import LogisticRegression

    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({t for t in targets if t not in index})
    if unknown:
        raise ValueError(f"{name}: targets outside the label set: {unknown[:5]}")
    y = np.array([index[t] for t in targets])
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError(f"{name}: need at least two classes in the training data")
    clf = LogisticRegression(
        C=regularisation, max_iter=150, tol=1e-3, random_state=seed, solver="lbfgs"
    )
    clf.fit(sparse_matrix(batch), y)
    weights = np.zeros((BUCKETS, len(labels)), dtype=np.float32)
    bias = np.full(len(labels), -30.0, dtype=np.float32)
    classes = list(clf.classes_)
    coef = clf.coef_ if len(classes) > 2 else np.vstack([-clf.coef_[0], clf.coef_[0]])
    intercept = clf.intercept_ if len(classes) > 2 else np.array([0.0, clf.intercept_[0]])
    for row, cls in enumerate(classes):
        weights[:, cls] = coef[row]
        bias[cls] = intercept[row]
    return LinearTextModel(name, tuple(labels), weights, bias, 1.0)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (Guo et al. 2017):
    one scalar, so the ranking (and accuracy) is unchanged and only confidence moves."""

    def nll(log_t: float) -> float:
        probs = softmax(logits / math.exp(log_t))
        return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden-section search on log T; NLL is unimodal in T
        a = high - ratio * (high - low)
        b = low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return math.exp((low + high) / 2)


def with_temperature(model: LinearTextModel, temperature: float) -> LinearTextModel:
    return LinearTextModel(model.name, model.labels, model.weights, model.bias, temperature)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.sum() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total / max(len(confidence), 1))
