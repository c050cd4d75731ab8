import numpy as np
import pytest

from jacal.replication.stats import correlation, one_sample_greater, paired_comparison, verdict


def test_correlation_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + 0.3 * rng.normal(size=200)
    r = correlation(x, y, n_boot=300)
    assert r["n"] == 200 and r["rho"] > 0.9 and r["p"] < 1e-20
    assert r["ci_low"] < r["rho"] < r["ci_high"] and r["ci_low"] > 0.8
    assert r["tau"] > 0.7
    perfect = correlation(np.arange(10), -np.arange(10.0) ** 3, n_boot=100)
    assert perfect["rho"] == pytest.approx(-1.0) and perfect["tau"] == pytest.approx(-1.0)
    noise = correlation(rng.normal(size=300), rng.normal(size=300), n_boot=200)
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p"] > 0.01
    withnan = correlation([1, 2, np.nan, 4, 5], [1, 2, 3, np.inf, 5], n_boot=50)
    assert withnan["n"] == 3
    assert np.isnan(correlation([1, 1, 1], [1, 2, 3])["rho"])


def test_paired_comparison_known_answers():
    base = np.ones(10)
    variant = np.array([10.0] * 9 + [0.5])
    r = paired_comparison(base, variant, predicted="greater")
    assert r["n"] == 10 and r["fraction_predicted"] == 0.9
    assert r["sign_p"] == pytest.approx(11 / 1024)  # P(X ≥ 9), X ~ Bin(10, ½)
    assert r["median_log10_ratio"] == pytest.approx(1.0)
    opposite = paired_comparison(base, variant, predicted="less")
    assert opposite["fraction_predicted"] == 0.1 and opposite["sign_p"] > 0.9
    diff = paired_comparison([0.1, 0.2, 0.3], [0.2, 0.4, 0.6], predicted="greater", log=False)
    assert diff["median_difference"] == pytest.approx(0.2)


def test_one_sample_and_verdicts():
    r = one_sample_greater(np.linspace(0.1, 0.5, 20))
    assert r["fraction_above"] == 1.0 and r["p"] < 1e-4
    assert verdict(n=5, p=1e-9, direction_ok=True)["verdict"] == "inconclusive"
    assert verdict(n=50, p=1e-9, direction_ok=True)["verdict"] == "replicated"
    assert verdict(n=50, p=1e-9, direction_ok=False)["verdict"] == "not replicated"
    assert verdict(n=50, p=0.3, direction_ok=True)["verdict"] == "not replicated"
    assert verdict(n=12, p=0.3, direction_ok=True)["verdict"] == "inconclusive"
    assert verdict(n=12, p=float("nan"), direction_ok=None)["verdict"] == "inconclusive"
