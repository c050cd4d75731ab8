"""The one validation home: model calls reworded in one line, logits and probabilities checked."""
import numpy as np
import pytest
import torch
from torch import nn

import jacal
from jacal._internal.validation import JacalError, call_model, check_logits, check_probabilities, first_line, forward_logits


def test_a_model_error_becomes_one_line_naming_the_input():
    model = nn.Linear(4, 3)
    x = torch.rand(5, 7)
    with pytest.raises(ValueError, match=r"^`model` rejected pool items with per-point shape \(7\): mat1 and mat2") as e:
        call_model(model, x, what="pool items")
    assert "\n" not in str(e.value) and isinstance(e.value.__cause__, RuntimeError)


def test_jacals_own_errors_pass_unchanged():
    def fn(x):
        raise JacalError("this strategy needs embeddings\nsecond line kept")

    with pytest.raises(JacalError, match="second line kept"):
        call_model(fn, torch.zeros(2, 3))


@pytest.mark.parametrize("out, got", [(torch.zeros(5), "(5)"), (torch.zeros(4, 3), "(4, 3)"), ((1, 2), "tuple")])
def test_logits_must_be_n_by_k(out, got):
    with pytest.raises(ValueError, match=rf"logits of shape \(N, K\) for N=5 points, got {re_escape(got)}"):
        check_logits(out, 5)
    with pytest.raises(ValueError, match="logits of shape"):
        forward_logits(lambda x: out, torch.zeros(5, 2))


def re_escape(s):
    import re
    return re.escape(s)


def test_every_entry_point_words_a_rejected_input_alike():
    model = jacal.mlp(12, 3, width=8, depth=1, seed=0).eval()
    bad = torch.rand(4, 7)
    for call, what in [(lambda: jacal.jacobian_norm(model, bad, method="vjp"), "`x`"),
                       (lambda: jacal.acquire(model, bad, 1, strategy="margin"), "pool items"),
                       (lambda: jacal.activation_codes(model, bad), "input")]:
        with pytest.raises(ValueError, match=rf"`model` rejected {re_escape(what)} with per-point shape \(7\)"):
            call()


def test_check_probabilities():
    p = np.array([[0.2, 0.8], [1.0, 0.0]])
    assert np.array_equal(check_probabilities("probs", p), p)
    for bad, message in [(np.array([[0.5, 0.6]]), "summing to 1"), (np.array([[-0.5, 1.5]]), "non-negative"),
                         (np.array([[np.nan, 1.0]]), "NaN or Inf"), (np.ones((2, 1)), "at least 2 classes"),
                         (np.ones(3) / 3, "at least 2 dimensions")]:
        with pytest.raises(ValueError, match=message):
            check_probabilities("probs", bad)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        check_probabilities("mc_probs", p, ndim=3)
    with pytest.raises(ValueError, match="with 2 dimensions"):
        check_probabilities("probs", np.ones((2, 2, 2)) / 2)


def test_first_line():
    assert first_line(ValueError("a\nb")) == "a"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 300), 10) == "x" * 10
