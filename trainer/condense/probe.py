"""The paper's measure: a linear classifier trained on a small set, tested on real held-out pairs.

The features are the fused pair ``[a; b]`` (each modality's unit vector, concatenated in
``condense.modalities`` order). The classifier is scikit-learn's ``LogisticRegression`` with one
``C`` for every set, so the sets differ only in what they hold. Besides the condensed set:

* random real pairs: ``n`` training pairs per class drawn at random (``seeds`` draws; mean and spread);
* herding: the ``n`` k-means centres of each class's fused training pairs (each modality's half
  re-normalised, as every item of a set is unit-norm per modality);
* full: every training pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.condense.sets import LabelledPairs, unit


def _sklearn():
    try:
        from sklearn.cluster import KMeans
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the condense and dev extras
        raise ImportError("the condense report needs scikit-learn: pip install 'bindery[condense]'") from exc
    return KMeans, LogisticRegression


@dataclass(frozen=True)
class SmallSet:
    """A training set for the probe: fused features and class indices."""

    x: np.ndarray  # (n, sum of dims)
    y: np.ndarray  # (n,)

    @staticmethod
    def of(pairs: LabelledPairs) -> SmallSet:
        return SmallSet(pairs.fused(), pairs.label)


def probe_accuracy(train: SmallSet, test: SmallSet, c: float) -> float:
    """Held-out accuracy of a logistic regression fitted on ``train``."""
    _, LogisticRegression = _sklearn()
    if len(np.unique(train.y)) < 2:
        return float(np.mean(test.y == train.y[0]))
    clf = LogisticRegression(C=c, max_iter=5000).fit(train.x, train.y)
    return float(clf.score(test.x, test.y))


def random_subset(train: LabelledPairs, n: int, seed: int) -> LabelledPairs:
    """``n`` random training pairs of each class (all of a smaller class)."""
    rng = np.random.default_rng(seed)
    sel = np.concatenate([rng.choice(rows, min(n, len(rows)), replace=False) for rows in train.class_rows()])
    return train.take(np.sort(sel))


def kmeans_centres(train: LabelledPairs, n: int, seed: int) -> SmallSet:
    """The ``n`` k-means centres of each class (fewer when the class has fewer pairs)."""
    KMeans, _ = _sklearn()
    dims = np.cumsum([v.shape[1] for v in train.vectors.values()])[:-1]
    xs, ys = [], []
    fused = train.fused()
    for c, rows in enumerate(train.class_rows()):
        k = min(n, len(rows))
        centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(fused[rows]).cluster_centers_
        xs.append(np.concatenate([unit(part) for part in np.split(centres, dims, axis=1)], axis=1))
        ys.append(np.full(k, c))
    return SmallSet(np.concatenate(xs).astype(np.float32), np.concatenate(ys))


@dataclass(frozen=True)
class Score:
    accuracy: float
    share: float  # of the full-data accuracy

    @staticmethod
    def of(accuracy: float, full: float) -> Score:
        return Score(round(accuracy, 6), round(accuracy / full, 6) if full > 0 else float("nan"))


@dataclass(frozen=True)
class RandomScore:
    accuracy_mean: float
    accuracy_std: float
    share_mean: float
    accuracies: list[float]


def random_score(train: LabelledPairs, test: SmallSet, n: int, seeds: int, seed: int, c: float,
                 full: float) -> RandomScore:
    accs = [probe_accuracy(SmallSet.of(random_subset(train, n, seed * 7919 + s)), test, c) for s in range(seeds)]
    mean = float(np.mean(accs))
    return RandomScore(round(mean, 6), round(float(np.std(accs)), 6), round(mean / full, 6) if full > 0 else float("nan"),
                       [round(a, 6) for a in accs])
