"""The scikit-learn estimators: the estimator checks, Pipeline / GridSearchCV, and y = -1 as unlabelled."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from aeclass import AutoencoderClassifier, AutoencoderTransformer

# The one check that cannot apply: it trains with the classes -1 and 1, and -1 is how scikit-learn's
# semi-supervised estimators (and these) mark an unlabelled sample, so it cannot also be a class.
EXPECTED_FAILURES = {"check_classifiers_classes": "y = -1 marks unlabelled samples (sklearn.semi_supervised's "
                                                  "convention), so -1 cannot be a class"}


@parametrize_with_checks([AutoencoderClassifier(epochs=20, lr=1e-2, threads=1), AutoencoderTransformer(epochs=2, threads=1)],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES if isinstance(est, AutoencoderClassifier) else {})
@pytest.mark.slow
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits():
    X, y = load_digits(return_X_y=True)
    return X[:1400], y[:1400], X[1400:], y[1400:]


def test_unlabelled_rows_are_used_and_counted():
    X, y, Xt, yt = _digits()
    part = y.copy()
    part[150:] = -1
    clf = AutoencoderClassifier(epochs=6, threads=1, random_state=0).fit(X, part)
    assert clf.n_unlabelled_ == 1250 and clf.metrics_["n_unlabelled"] == 1250 and clf.metrics_["n_labelled"] == 150
    assert list(clf.classes_) == list(range(10)) and clf.predict_proba(Xt).shape == (len(Xt), 10)
    assert clf.score(Xt, yt) > 0.5  # 10 classes: chance is 0.1
    again = AutoencoderClassifier(epochs=6, threads=1, random_state=0).fit(X, part)
    assert np.array_equal(again.predict_proba(Xt), clf.predict_proba(Xt))  # same seed, same model
    assert clf.encode(Xt).shape[0] == len(Xt)


def test_a_pipeline_and_a_grid_search():
    X, y, Xt, yt = _digits()
    pipe = make_pipeline(AutoencoderTransformer(epochs=3, threads=1, model_kwargs={"code_dim": 16}),
                         AutoencoderClassifier(epochs=3, threads=1))
    pipe.fit(X, y)
    assert pipe.named_steps["autoencodertransformer"].transform(Xt).shape == (len(Xt), 16)
    grid = GridSearchCV(AutoencoderClassifier(epochs=2, threads=1), {"lr": [1e-3, 1e-2]}, cv=2).fit(X[:400], y[:400])
    assert grid.best_params_["lr"] in (1e-3, 1e-2) and 0 < grid.best_score_ <= 1
