import copy

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

import jacal
from _reference import reference_jacobian
from jacal.confidence import (FITTED, METHODS, NEEDS_LABELS, PROBABILISTIC, ConfidenceEstimator, aurc,
                              confidence_features, confidence_from, e_aurc, ece, failure_auroc, fit_confidence,
                              fpr_at_95_tpr, jacobian_features, ood_auroc, ood_fpr_at_95_tpr)


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
    # OOD: in-distribution 1..20, OOD 0.5..18.5 as above, read as ID = "correct"
    assert ood_auroc(np.arange(1, 21), np.arange(10) * 2 + 0.5) == pytest.approx(roc_auc_score(y, c))
    assert ood_fpr_at_95_tpr(np.arange(1, 21), np.arange(10) * 2 + 0.5) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="OOD"):
        ood_auroc([1.0], [])


def test_estimators(trained):
    m, d = trained
    xh, yh, xt, yt = d.x_test[:200], d.y_test[:200], d.x_test[200:], d.y_test[200:]
    with torch.no_grad():
        p = torch.softmax(m(xt).double(), 1).numpy()
    np.testing.assert_allclose(ConfidenceEstimator("max-softmax").predict_confidence(m, xt), p.max(1))
    jn = jacal.jacobian_norm(m, xt).double().numpy()
    np.testing.assert_allclose(ConfidenceEstimator("jacobian").predict_confidence(m, xt), -np.log(jn), rtol=1e-5)
    comb = ConfidenceEstimator("combined").learn(m, xh, yh)
    assert set(comb.state_) >= {"mean", "scale", "coef", "intercept"}
    proba = comb.probability_correct(m, xt)
    assert proba.shape == (250,) and ((proba > 0) & (proba < 1)).all()
    metrics = comb.evaluate(m, xt, yt)
    assert set(metrics) >= {"failure_auroc", "aurc", "e_aurc", "fpr_at_95_tpr", "ece"} and metrics["failure_auroc"] > 0.6
    assert "ece" not in ConfidenceEstimator("entropy").evaluate(m, xt, yt)
    with pytest.raises(ValueError, match="not fitted"):
        ConfidenceEstimator("combined").predict_confidence(m, xt)
    with pytest.raises(ValueError, match="probability"):
        ConfidenceEstimator("margin").probability_correct(m, xt)
    with pytest.raises(ValueError, match="`method`"):
        ConfidenceEstimator("vibes").predict_confidence(m, xt)


# ---------------------------------------------------------------------------------------------
# every estimator against a direct computation (Jacobians from the float64 reference)

@pytest.fixture(scope="module")
def small(trained):
    """A sharpened copy of the trained model (p far from uniform) and a few points, with float64 references."""
    m, d = trained
    m = copy.deepcopy(m)
    with torch.no_grad():
        m[-1].weight.mul_(3.0)
    x = d.x_test[:12]
    j = reference_jacobian(m, x, "logits")  # (N, K, D) float64, one point and one class at a time
    with torch.no_grad():
        z = m.double()(x.double()).numpy()
        emb = _body(m)(x.double()).numpy()  # the input of the last Linear
    m.float()
    return m, x, d.y_test[:12].numpy(), z, j.numpy(), emb


def _body(model):
    """The model up to its last Linear: the embedding the feature-space estimators use."""
    return torch.nn.Sequential(*list(model)[:-1])


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_logit_baselines_and_odin(small):
    m, x, _, z, _, _ = small
    feats = confidence_features(m, x, need={"odin_logits"})
    np.testing.assert_allclose(feats.logits, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(confidence_from(z, method="max-logit"), z.max(1))
    np.testing.assert_allclose(confidence_from(z, method="energy"), np.log(np.exp(z).sum(1)), rtol=1e-12)
    np.testing.assert_allclose(confidence_from(z, method="margin"), np.diff(np.sort(_softmax(z), 1)[:, -2:], axis=1)[:, 0])
    p = _softmax(z)
    np.testing.assert_allclose(confidence_from(z, method="entropy"), (p * np.log(p)).sum(1), rtol=1e-10)
    # ODIN, directly: one float64 gradient step on log max softmax(z / T), then max softmax(z̃ / T)
    t, eps = 1000.0, 0.002
    md = copy.deepcopy(m).double()
    xd = x.double().requires_grad_(True)
    torch.log_softmax(md(xd) / t, 1).max(1).values.sum().backward()
    with torch.no_grad():
        zt = md(x.double() + eps * torch.sign(xd.grad)).numpy()
    est = ConfidenceEstimator("odin").predict_confidence(m, x)
    np.testing.assert_allclose(est, _softmax(zt / t).max(1), rtol=1e-5)


def test_temperature_minimises_the_nll(small, trained):
    m, d = trained
    z = confidence_features(m, d.x_test[:300]).logits
    y = d.y_test[:300].numpy()
    t = float(fit_confidence(z, y, method="temperature")["temperature"])

    def nll(temp):
        return -np.mean(np.log(_softmax(z / temp)[np.arange(len(y)), y]))

    assert nll(t) <= min(nll(t * 1.01), nll(t / 1.01)) + 1e-12
    st = {"temperature": np.asarray(t), "n_classes": np.asarray(10)}
    np.testing.assert_allclose(confidence_from(z, method="temperature", state=st), _softmax(z / t).max(1))


def test_feature_space_estimators(small, trained):
    m, d = trained
    x_tr, y_tr = d.x_train[:300], d.y_train[:300].numpy()
    x = d.x_test[:40]
    with torch.no_grad():
        e_tr, e = _body(m)(x_tr).double().numpy(), _body(m)(x).double().numpy()
    # Mahalanobis: class means, one Ledoit–Wolf covariance of the class-centred features
    maha = ConfidenceEstimator("mahalanobis").learn(m, x_tr, y_tr)
    mu = np.stack([e_tr[y_tr == c].mean(0) for c in range(10)])
    prec = LedoitWolf(assume_centered=True).fit(e_tr - mu[y_tr]).precision_
    ref = -np.min([np.einsum("nd,de,ne->n", e - mu[c], prec, e - mu[c]) for c in range(10)], axis=0)
    np.testing.assert_allclose(maha.predict_confidence(m, x), ref, rtol=1e-4, atol=1e-6)
    # kNN: the k-th smallest distance between L2-normalised features, brute force
    knn = ConfidenceEstimator("knn", k=5).learn(m, x_tr)
    nrm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist = np.linalg.norm(nrm(e)[:, None] - nrm(e_tr)[None], axis=2)
    np.testing.assert_allclose(knn.predict_confidence(m, x), -np.sort(dist, 1)[:, 4], rtol=1e-4, atol=1e-6)


def test_jacobian_estimators_against_the_reference(small):
    m, x, y, z, j, _ = small
    feats = confidence_features(m, x, need={"gram", "jacobian"})
    n, k = z.shape
    p = _softmax(z)
    t = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    js = np.linalg.norm(t @ j, axis=(1, 2))  # ‖∂p/∂x‖_F
    jz = np.linalg.norm(j, axis=(1, 2))      # ‖∂z/∂x‖_F
    a = z.argmax(1)
    dist = np.array([min((z[i, a[i]] - z[i, c]) / np.linalg.norm(j[i, a[i]] - j[i, c]) for c in range(k) if c != a[i])
                     for i in range(n)])
    jf = jacobian_features(feats.logits, feats.gram)
    np.testing.assert_allclose(jf["log_js"], np.log(js), rtol=1e-4)
    for method, ref in (("jacobian", -np.log(js)), ("jacobian-logits", -np.log(jz)), ("jacobian-boundary", np.log(dist))):
        got = confidence_from(**feats.arrays(), method=method)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=method)
        est = ConfidenceEstimator(method).predict_confidence(m, x)  # the estimator's own pass, same numbers
        np.testing.assert_allclose(est, got, rtol=1e-4, atol=1e-6, err_msg=method)
    # residual: least squares of log ‖∂p/∂x‖ on [1, log(1 − p_a), log p_b], fitted here on the same points
    srt = np.sort(p, 1)
    design = np.c_[np.ones(n), np.log(1 - srt[:, -1]), np.log(srt[:, -2])]
    coef = np.linalg.lstsq(design, np.log(js), rcond=None)[0]
    st = fit_confidence(**{k_: v for k_, v in feats.arrays().items() if k_ != "odin_logits"}, method="jacobian-residual")
    np.testing.assert_allclose(st["coef"], coef, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(confidence_from(**feats.arrays(), method="jacobian-residual", state=st),
                               np.log(js) - design @ coef, atol=1e-3)
    # noise: probit-averaged softmax with the centred logits' gradient norms
    jc = j - j.mean(1, keepdims=True)
    var = (jc ** 2).sum(2)
    s2 = 0.05
    ref = _softmax(z / np.sqrt(1 + np.pi / 8 * s2 * var))[np.arange(n), a]
    got = confidence_from(**feats.arrays(), method="jacobian-noise", state={"sigma2": np.asarray(s2)})
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_confidence_arrays_are_needs_of_the_one_feature_pass(small):
    """The feature pass computes the Gram and ODIN's logits like every other feature: chunk by chunk, a NaN
    row for a non-finite item, the same numbers as a direct call; confidence_features is that pass and
    refuses a non-finite item instead."""
    from jacal.features import Need, extract_features, odin_logits

    m, x, _, _, j, _ = small
    xb = x.clone()
    xb[5].view(-1)[0] = float("nan")
    f = extract_features(m, xb, need={Need.GRAM, Need.ODIN_LOGITS}, batch_size=5)
    ok = np.arange(len(x)) != 5
    assert f.finite.tolist() == ok.tolist() and f.gram.shape == (len(x), 10, 10) and f.odin_logits.shape == (len(x), 10)
    assert np.isnan(f.gram[5]).all() and np.isnan(f.odin_logits[5]).all()
    gram = np.einsum("nkd,nld->nkl", j, j)  # float64, one point and one class at a time
    np.testing.assert_allclose(f.gram[ok], gram[ok], rtol=1e-4, atol=1e-5 * np.abs(gram).max())
    np.testing.assert_allclose(f.odin_logits[ok], odin_logits(m, x).double().numpy()[ok], rtol=1e-5, atol=1e-5)
    cf = confidence_features(m, x, need={"gram", "odin_logits"}, batch_size=5)
    np.testing.assert_allclose(cf.gram[ok], f.gram[ok], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cf.odin_logits[ok], f.odin_logits[ok], rtol=1e-6, atol=1e-9)
    assert cf.embeddings is None and cf.jacobian is None
    with pytest.raises(ValueError, match=r"NaN or Inf in row\(s\) 5\.$"):
        confidence_features(m, xb, need={"gram"})


def test_jacobian_noise_fits_sigma_by_nll(trained):
    m, d = trained
    f = confidence_features(m, d.x_test[:300], need={"gram"})
    y = d.y_test[:300].numpy()
    s2 = float(fit_confidence(f.logits, y, method="jacobian-noise", gram=f.gram)["sigma2"])
    c = np.eye(10) - 0.1
    var = np.diagonal(c @ f.gram @ c, axis1=1, axis2=2)  # ‖∇(z_k − z̄)‖²

    def nll(v):
        return -np.mean(np.log(_softmax(f.logits / np.sqrt(1 + np.pi / 8 * v * var))[np.arange(300), y]))

    assert 1e-8 < s2 < 1e3 and nll(s2) <= min(nll(s2 * 1.05), nll(s2 / 1.05)) + 1e-9
    tiny = confidence_from(f.logits, method="jacobian-noise", gram=f.gram, state={"sigma2": np.asarray(1e-12)})
    np.testing.assert_allclose(tiny, _softmax(f.logits).max(1), rtol=1e-9)  # σ² → 0 is max-softmax


def test_log_space_survives_a_saturated_softmax():
    """p_b = e^-800 underflows in float64; log ‖∂p/∂x‖ and log(1 − p_a) stay exact."""
    z = np.array([[800.0, 0.0], [3.0, 0.0]])
    gram = np.array([[[4.0, 1.0], [1.0, 1.0]]] * 2)  # ‖∇(z₁ − z₂)‖² = 3
    jf = jacobian_features(z, gram)
    # K = 2: ‖T J‖² = (p₁p₂)² · 2 · ‖∇(z₁ − z₂)‖²
    log_p2 = -np.logaddexp(0, z[:, 0])
    log_p1 = -np.logaddexp(0, -z[:, 0])
    np.testing.assert_allclose(jf["log_js"], log_p1 + log_p2 + 0.5 * np.log(6.0), rtol=1e-12)
    np.testing.assert_allclose(jf["log_boundary"], np.log(z[:, 0] / np.sqrt(3.0)), rtol=1e-12)
    assert np.isfinite(confidence_from(z, method="jacobian", gram=gram)).all()


def test_every_method_is_chunk_invariant(trained):
    m, d = trained
    xh, yh, x_tr, y_tr, xt = d.x_test[:150], d.y_test[:150], d.x_train[:200], d.y_train[:200], d.x_test[150:190]
    for method in METHODS:
        fit_x, fit_y = (x_tr, y_tr) if FITTED.get(method) == "training" else (xh, yh)
        big = ConfidenceEstimator(method, batch_size=256).learn(m, fit_x, fit_y)
        small_b = ConfidenceEstimator(method, batch_size=7).learn(m, fit_x, fit_y)
        a, b = big.predict_confidence(m, xt), small_b.predict_confidence(m, xt)
        assert a.shape == (40,) and np.isfinite(a).all(), method
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=method)
        if method in PROBABILISTIC:
            assert ((a >= 0) & (a <= 1)).all(), method


# ---------------------------------------------------------------------------------------------
# files and bad input

@pytest.mark.parametrize("method", list(FITTED) + ["energy"])
def test_save_load_round_trip(trained, tmp_path, method):
    m, d = trained
    fit_x, fit_y = (d.x_train[:200], d.y_train[:200]) if FITTED.get(method) == "training" else (d.x_test[:150], d.y_test[:150])
    est = ConfidenceEstimator(method, k=7).learn(m, fit_x, fit_y)
    path = est.save(tmp_path / f"{method}.pt")
    back = ConfidenceEstimator.load(path)
    assert back.method == method and back.k == 7
    xt = d.x_test[150:200]
    np.testing.assert_array_equal(back.predict_confidence(m, xt), est.predict_confidence(m, xt))
    payload = torch.load(path, weights_only=True)  # tensors and plain values only
    assert payload["format"] == "jacal-confidence-estimator"


def test_file_errors_are_one_line(trained, tmp_path):
    m, d = trained
    est = ConfidenceEstimator("mahalanobis").learn(m, d.x_train[:200], d.y_train[:200])
    path = est.save(tmp_path / "maha.pt")
    with pytest.raises(jacal.JacalError, match="not found"):
        ConfidenceEstimator.load(tmp_path / "none.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(jacal.JacalError, match="not a readable estimator file"):
        ConfidenceEstimator.load(tmp_path / "garbage.pt")
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(jacal.JacalError, match="not a readable estimator file"):
        ConfidenceEstimator.load(tmp_path / "truncated.pt")
    jacal.save_checkpoint(tmp_path / "model.pt", m)
    with pytest.raises(jacal.JacalError, match="not a jacal confidence estimator"):
        ConfidenceEstimator.load(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state"]["precision"]
    torch.save(payload, tmp_path / "incomplete.pt")
    with pytest.raises(jacal.JacalError, match="corrupt estimator file.*precision"):
        ConfidenceEstimator.load(tmp_path / "incomplete.pt")
    other = jacal.mlp(64, 10, width=32, depth=1, seed=1).eval()
    with pytest.raises(ValueError, match="fitted on another model"):
        ConfidenceEstimator.load(path).predict_confidence(other, d.x_test[:5])
    for err in (jacal.JacalError, ValueError):
        assert issubclass(jacal.JacalError, err)


def test_bad_input_is_a_one_line_value_error(trained):
    m, d = trained
    x = d.x_test[:10].clone()
    x[3, 0, 0, 0] = float("nan")
    for method in ("max-softmax", "jacobian-boundary", "odin"):
        with pytest.raises(ValueError, match=r"NaN or Inf in row\(s\) 3"):
            ConfidenceEstimator(method).predict_confidence(m, x)
    with pytest.raises(ValueError, match="rejected"):
        ConfidenceEstimator("jacobian-logits").predict_confidence(m, torch.rand(4, 1, 9, 9))
    for method in NEEDS_LABELS:
        with pytest.raises(ValueError, match="pass `y`"):
            ConfidenceEstimator(method).learn(m, d.x_test[:20])
    with pytest.raises(ValueError, match="one label per item"):
        ConfidenceEstimator("temperature").learn(m, d.x_test[:20], d.y_test[:19])
    with pytest.raises(ValueError, match=r"labels in \[0, 9\]"):
        ConfidenceEstimator("mahalanobis").learn(m, d.x_test[:20], d.y_test[:20] + 10)
    with pytest.raises(ValueError, match="not fitted"):
        confidence_from(np.zeros((3, 4)), method="knn", embeddings=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(N, K, K\)"):
        confidence_from(np.zeros((3, 4)), method="jacobian-logits", gram=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        confidence_from(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="needs `embeddings`"):
        confidence_from(np.zeros((3, 4)), method="mahalanobis", state={"means": np.zeros((4, 2)), "precision": np.eye(2)})
    st = fit_confidence(np.random.default_rng(0).normal(size=(30, 4)), np.arange(30) % 4, method="mahalanobis",
                        embeddings=np.random.default_rng(1).normal(size=(30, 2)))
    with pytest.raises(ValueError, match="2-dimensional embeddings, got 3"):
        confidence_from(np.zeros((3, 4)), method="mahalanobis", embeddings=np.zeros((3, 3)), state=st)
    with pytest.raises(ValueError, match="fitted for 4 classes"):
        confidence_from(np.zeros((3, 5)), method="mahalanobis", embeddings=np.zeros((3, 2)), state=st)


# ---------------------------------------------------------------------------------------------
# the command line: every method × {csv, jsonl}, with --json
