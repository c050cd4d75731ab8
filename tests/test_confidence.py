import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import jacal
from jacal.confidence import ConfidenceEstimator, aurc, e_aurc, ece, failure_auroc, fpr_at_95_tpr


def _slow_aurc(conf, correct):
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    risks = []
    for n in range(1, len(conf) + 1):
        kept = order[:n]
        risks.append(sum(1 - correct[i] for i in kept) / n)
    return sum(risks) / len(risks)


def test_metrics_known_values():
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    correct = (rng.random(200) < conf).astype(int)
    assert failure_auroc(conf, correct) == pytest.approx(roc_auc_score(1 - correct, -conf))
    assert aurc(conf, correct) == pytest.approx(_slow_aurc(conf, correct))
    # a perfect ranking has zero excess AURC; a reversed one is worse
    perfect = np.where(correct == 1, 1.0, 0.0) + 0.001 * rng.random(200)
    assert e_aurc(perfect, correct) == pytest.approx(0.0, abs=1e-12)
    assert e_aurc(-perfect, correct) > 0.3
    # FPR@95%TPR: 20 correct with conf 1..20, 10 errors with conf 0.5..18.5 (every other value)
    c = np.r_[np.arange(1, 21), np.arange(10) * 2 + 0.5]
    y = np.r_[np.ones(20), np.zeros(10)]
    # keeping ≥ 95% of the correct means threshold ≤ 2 → errors with conf ≥ 2 are 2.5, 4.5, ... 18.5 → 9 of 10
    assert fpr_at_95_tpr(c, y) == pytest.approx(0.9)
    # ECE: perfectly calibrated bins → 0; always 0.9 confident but 50% right → 0.4
    assert ece(np.full(1000, 0.9), np.r_[np.ones(500), np.zeros(500)]) == pytest.approx(0.4)
    assert ece(np.r_[np.full(10, 0.25), np.full(10, 0.75)], np.r_[[1] * 2 + [0] * 8, [1] * 8 + [0] * 2],
               n_bins=2) == pytest.approx(0.05)
    assert np.isnan(failure_auroc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError, match="one length"):
        aurc([0.1, 0.2], [1])


@pytest.fixture(scope="module")
def trained():
    d = jacal.load_dataset("digits")
    m = jacal.mlp(64, 10, width=32, depth=1, seed=0)
    jacal.train(m, d, epochs=3, seed=0)
    return m, d


def test_estimators(trained):
    m, d = trained
    xh, yh, xt, yt = d.x_test[:200], d.y_test[:200], d.x_test[200:], d.y_test[200:]
    with torch.no_grad():
        p = torch.softmax(m(xt).double(), 1).numpy()
    np.testing.assert_allclose(ConfidenceEstimator("max_softmax").predict_confidence(m, xt), p.max(1))
    jn = jacal.jacobian_norm(m, xt).double().numpy()
    np.testing.assert_allclose(ConfidenceEstimator("jacobian").predict_confidence(m, xt), -np.log(jn), rtol=1e-5)
    comb = ConfidenceEstimator("combined").fit(m, xh, yh)
    assert hasattr(comb, "logreg_")
    proba = comb.predict_proba(m, xt)
    assert proba.shape == (250, 2) and np.allclose(proba.sum(1), 1)
    metrics = comb.evaluate(m, xt, yt)
    assert set(metrics) >= {"failure_auroc", "aurc", "e_aurc", "fpr_at_95_tpr", "ece"} and metrics["failure_auroc"] > 0.6
    assert "ece" not in ConfidenceEstimator("entropy").evaluate(m, xt, yt)
    with pytest.raises(ValueError, match="not fitted"):
        ConfidenceEstimator("combined").predict_confidence(m, xt)
    with pytest.raises(ValueError, match="probability"):
        ConfidenceEstimator("margin").predict_proba(m, xt)
    with pytest.raises(ValueError, match="`method`"):
        ConfidenceEstimator("vibes").predict_confidence(m, xt)
