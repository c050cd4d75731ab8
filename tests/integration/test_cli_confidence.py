"""`jacal confidence`: every method in both row formats, fitted estimators saved and reused, one-line errors."""
import csv
import json
import warnings

import numpy as np
import pytest

import jacal
from _cli import run as _run
from _helpers import one_line_error
from jacal.confidence import FITTED, METHODS, NEEDS_LABELS, PROBABILISTIC, ConfidenceEstimator


@pytest.fixture(scope="module")
def cli_files(trained, tmp_path_factory):
    m, d = trained
    root = tmp_path_factory.mktemp("confidence_cli")
    jacal.save_checkpoint(root / "model.pt", m, metadata={"input_shape": [1, 8, 8], "dataset": "digits"})
    np.save(root / "x.npy", d.x_test[:30].numpy())
    np.save(root / "y.npy", d.y_test[:30].numpy())
    np.save(root / "xh.npy", d.x_test[30:230].numpy())
    np.save(root / "yh.npy", d.y_test[30:230].numpy())
    np.save(root / "xtr.npy", d.x_train[:300].numpy())
    np.save(root / "ytr.npy", d.y_train[:300].numpy())
    return root


def _fit_args(root, method):
    if method not in FITTED:
        return []
    x, y = ("xtr", "ytr") if FITTED[method] == "training" else ("xh", "yh")
    return ["--fit-data", root / f"{x}.npy"] + (["--fit-labels", root / f"{y}.npy"] if method in NEEDS_LABELS else [])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("method", METHODS)
def test_cli_every_method(cli_files, tmp_path, trained, method, fmt):
    root = cli_files
    out = tmp_path / f"conf.{fmt}"
    r = _run("confidence", "--model", root / "model.pt", "--data", root / "x.npy", "--labels", root / "y.npy",
             "--method", method, *_fit_args(root, method), "--out", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n"] == 30 and s["method"] == method and 0 <= s["metrics"]["failure_auroc"] <= 1
    assert ("ece" in s["metrics"]) == (method in PROBABILISTIC)
    rows = list(csv.DictReader(out.open())) if fmt == "csv" else [json.loads(line) for line in out.open()]
    assert len(rows) == 30 and {"id", "predicted", "confidence"} <= set(rows[0])
    # the library gives the same confidences
    m, d = trained
    est = ConfidenceEstimator(method)
    if method in FITTED:
        fx, fy = (d.x_train[:300], d.y_train[:300]) if FITTED[method] == "training" else (d.x_test[30:230], d.y_test[30:230])
        est.learn(m, fx, fy)
    np.testing.assert_allclose([float(r_["confidence"]) for r_ in rows], est.predict_confidence(m, d.x_test[:30]),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["mahalanobis", "knn", "combined", "jacobian-noise"])
def test_cli_save_and_reuse_an_estimator(cli_files, tmp_path, method):
    root = cli_files
    est = tmp_path / f"model.{method}.pt"
    first = _run("confidence", "--model", root / "model.pt", "--data", root / "x.npy", "--method", method,
                 *_fit_args(root, method), "--save-estimator", est, "--device", "cpu", "--json")
    assert first.exit_code == 0, first.output and est.exists()
    again = _run("confidence", "--model", root / "model.pt", "--data", root / "x.npy", "--estimator", est, "--json")
    assert again.exit_code == 0, again.output
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert b["method"] == method and b["mean_confidence"] == pytest.approx(a["mean_confidence"], rel=1e-9)
    assert b["estimator"] == str(est)


def test_cli_one_line_errors(cli_files, tmp_path, trained):
    root = cli_files
    base = ["confidence", "--model", root / "model.pt", "--data", root / "x.npy", "--device", "cpu"]
    one_line_error(_run(*base, "--method", "mahalanobis"), "needs --fit-data and --fit-labels")
    one_line_error(_run(*base, "--method", "knn"), "needs --fit-data")
    one_line_error(_run(*base, "--method", "temperature", "--fit-data", root / "xh.npy"), "--fit-labels")
    one_line_error(_run(*base, "--estimator", tmp_path / "none.pt"), "Invalid value for '--estimator'")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage" * 40)
    one_line_error(_run(*base, "--estimator", tmp_path / "bad.pt"), "not a readable estimator file")
    one_line_error(_run(*base, "--estimator", root / "model.pt"), "not a jacal confidence estimator")
    saved = tmp_path / "knn.pt"
    assert _run(*base, "--method", "knn", "--fit-data", root / "xtr.npy", "--save-estimator", saved).exit_code == 0
    one_line_error(_run(*base, "--estimator", saved, "--method", "mahalanobis"), "differs from")
    one_line_error(_run(*base, "--estimator", saved, "--fit-data", root / "xh.npy"),
                   "--estimator is already fitted: drop --fit-data/--fit-labels, or fit anew without --estimator")
    one_line_error(_run(*base, "--method", "knn", "--fit-data", root / "xtr.npy", "--save-estimator", saved),
                   "exists; pass --force")
    other = jacal.mlp(64, 10, width=32, depth=1, seed=5).eval()
    jacal.save_checkpoint(tmp_path / "other.pt", other, metadata={"input_shape": [1, 8, 8]})
    one_line_error(_run("confidence", "--model", tmp_path / "other.pt", "--data", root / "x.npy", "--estimator", saved),
                   "fitted on another model")
    bad = np.load(root / "x.npy")
    bad[2, 0, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    one_line_error(_run("confidence", "--model", root / "model.pt", "--data", tmp_path / "nan.npy", "--method",
                        "jacobian-logits"), "NaN or Inf in row(s) 2")
    np.save(tmp_path / "short.npy", np.zeros(3, np.int64))
    one_line_error(_run(*base, "--method", "combined", "--fit-data", root / "xh.npy", "--fit-labels",
                        tmp_path / "short.npy"), "3 labels for 200 items")
    r = _run(*base, "--method", "entropy", "--fit-data", root / "xh.npy")
    assert r.exit_code == 0 and "learns nothing" in r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warnings from the CLI's own calls
        assert _run(*base, "--method", "combined", *_fit_args(root, "combined")).exit_code == 0
