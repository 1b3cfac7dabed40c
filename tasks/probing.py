"""Diagnostic classifiers on frozen states, in scikit-learn: the probe, its control task and its
description length.

* ``fit_probe``: a standardising pipeline around logistic regression or a small MLP, its
  regularisation chosen by cross-validation on the probe's training items only, with folds that
  never split a sentence (``StratifiedGroupKFold`` on the sentence ids).
* ``control_labels`` (Hewitt & Liang 2019): every word type gets one label, drawn from the
  labels' own distribution by a hash of the type, so a probe can score on the control task only
  by remembering word identities; *selectivity* is accuracy minus control accuracy.
* ``online_codelength`` (Voita & Titov 2020): the bits needed to send the labels with a probe
  retrained on every growing portion of the data, against the uniform code's ``n·log2(K)``.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

Family = Literal["logreg", "mlp"]
#: the regularisation grids cross-validation chooses from: inverse L2 strength C (logistic
#: regression), L2 penalty alpha (MLP)
GRIDS = {"logreg": {"clf__C": [0.001, 0.01, 0.1, 1.0]}, "mlp": {"clf__alpha": [1e-4, 1e-2, 1.0]}}
#: portions of the data the online code is sent in (Voita & Titov's: 0.1% … 100%)
MDL_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class ProbeSet:
    """Items to probe: one state vector each, with its label, the sentence it comes from and the
    word at its position (for the control task)."""

    features: np.ndarray  # (N, d) float
    labels: np.ndarray  # (N,) int
    groups: np.ndarray  # (N,) sentence ids
    words: tuple[str, ...]

    def __post_init__(self):
        n = len(self.labels)
        if self.features.shape[0] != n or len(self.groups) != n or len(self.words) != n:
            raise ValueError(f"a probe set's features, labels, groups and words differ in length "
                             f"({self.features.shape[0]}, {n}, {len(self.groups)}, {len(self.words)})")

    def take(self, rows: np.ndarray) -> "ProbeSet":
        return ProbeSet(self.features[rows], self.labels[rows], self.groups[rows],
                        tuple(self.words[i] for i in rows))

    def with_labels(self, labels: np.ndarray) -> "ProbeSet":
        return ProbeSet(self.features, labels, self.groups, self.words)


def pipeline(family: Family, seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if family == "logreg":
        clf = LogisticRegression(max_iter=1000, tol=1e-3)
    elif family == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, early_stopping=True,
                            n_iter_no_change=5, random_state=seed)
    else:
        raise ValueError(f"no probe family {family!r}: logreg or mlp")
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def fit_probe(family: Family, data: ProbeSet, seed: int = 0, params: dict | None = None):
    """A fitted probe on ``data``: regularisation from ``params`` if given, else the best of
    ``GRIDS[family]`` by 3-fold cross-validation accuracy on ``data`` alone (folds stratified by
    label, never splitting a sentence). A set of one class gets a constant predictor."""
    from sklearn.dummy import DummyClassifier
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

    if len(np.unique(data.labels)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(data.features, data.labels)
    model = pipeline(family, seed)
    if family == "mlp" and len(data.labels) < 100:  # too few items to hold a tenth out for stopping
        model.set_params(clf__early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a fold of one class (tiny probing sets) scores its candidates 0 rather than stopping
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        if params is not None:
            return model.set_params(**params).fit(data.features, data.labels)
        folds = min(3, len(np.unique(data.groups)))
        if folds < 2:
            return model.fit(data.features, data.labels)
        search = GridSearchCV(model, GRIDS[family], cv=StratifiedGroupKFold(folds),
                              scoring="accuracy", error_score=0.0)
        search.fit(data.features, data.labels, groups=data.groups)
        return search.best_estimator_


def chosen_params(probe) -> dict:
    """The grid values a fitted probe was trained with ({} for a constant predictor)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if not isinstance(probe, Pipeline):
        return {}
    family = "logreg" if isinstance(probe.named_steps["clf"], LogisticRegression) else "mlp"
    return {k: probe.get_params()[k] for k in GRIDS[family]}


def control_labels(words: tuple[str, ...], labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: each word type's label is drawn once from the empirical
    distribution of ``labels``, by a hash of (seed, type), so it is the same wherever the type
    occurs and owes nothing to the real label of any item."""
    values, counts = np.unique(labels, return_counts=True)
    cumulative = np.cumsum(counts) / counts.sum()
    by_type: dict[str, int] = {}
    for word in set(words):
        digest = hashlib.sha256(f"{seed}\x00{word}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2 ** 64
        by_type[word] = int(values[min(np.searchsorted(cumulative, u, side="right"), len(values) - 1)])
    return np.array([by_type[w] for w in words], dtype=labels.dtype)


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float
    control_accuracy: float
    #: accuracy of always naming the most frequent training label
    majority: float
    #: the test items' predicted labels, in order (for accuracy by distance or group)
    predictions: np.ndarray
    #: the test items' control labels and the control probe's predictions of them
    control_targets: np.ndarray
    control_predictions: np.ndarray
    params: dict

    @property
    def selectivity(self) -> float:
        return self.accuracy - self.control_accuracy


def probe(family: Family, train: ProbeSet, test: ProbeSet, seed: int = 0) -> ProbeResult:
    """Fit on ``train``, score on ``test``; the same for the control task on the same states."""
    model = fit_probe(family, train, seed)
    predictions = model.predict(test.features)
    words = train.words + test.words
    control = control_labels(words, np.concatenate([train.labels, test.labels]), seed)
    control_train, control_test = control[:len(train.words)], control[len(train.words):]
    control_model = fit_probe(family, train.with_labels(control_train), seed, chosen_params(model) or None)
    control_predictions = control_model.predict(test.features)
    values, counts = np.unique(train.labels, return_counts=True)
    majority = float(np.mean(test.labels == values[np.argmax(counts)]))
    return ProbeResult(float(np.mean(predictions == test.labels)),
                       float(np.mean(control_predictions == control_test)), majority,
                       predictions, control_test, control_predictions, chosen_params(model))


def online_codelength(family: Family, data: ProbeSet, n_classes: int, seed: int = 0,
                      params: dict | None = None) -> tuple[float, float]:
    """(online codelength, uniform codelength) of ``data``'s labels in bits. The sentences
    (``groups``) are put in a random order, each one's items together; the first portion is sent
    with the uniform code, and every later portion with a probe trained on all items before it
    (regularisation ``params``, or chosen by ``fit_probe``'s cross-validation on those items).
    Probabilities are mixed with the uniform distribution at 0.1% so that a class a portion's
    probe never saw costs finite bits."""
    n = len(data.labels)
    # whole sentences in a random order, so no portion is coded by a probe that saw its sentence
    rank = {g: i for i, g in enumerate(np.random.default_rng(seed).permutation(np.unique(data.groups)))}
    data = data.take(np.array(sorted(range(n), key=lambda i: (rank[data.groups[i]], i))))
    ends = sorted({max(1, math.ceil(f * n)) for f in MDL_FRACTIONS})
    uniform = n * math.log2(n_classes)
    bits = ends[0] * math.log2(n_classes)
    for start, end in zip(ends, ends[1:]):
        seen = data.take(np.arange(start))
        model = fit_probe(family, seen, seed, params)
        p = np.zeros((end - start, n_classes))
        p[:, model.classes_] = model.predict_proba(data.features[start:end])
        p = 0.999 * p + 0.001 / n_classes
        bits -= float(np.log2(p[np.arange(end - start), data.labels[start:end]]).sum())
    return bits, uniform
