"""Pool builders (jacal.scenarios): what each pool holds, against counts done by hand."""
import numpy as np
import pytest
import torch

from jacal.data import Splits, load_dataset
from jacal.scenarios import KINDS, OUT_OF_SET, SCENARIOS, build_scenario, parse_params


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_every_scenario_is_deterministic_and_consistent(digits):
    for name in SCENARIOS:
        a, b = build_scenario(name, digits, seed=3), build_scenario(name, digits, seed=3)
        assert torch.equal(a.data.x_train, b.data.x_train) and torch.equal(a.data.y_train, b.data.y_train)
        n = len(a.data.x_train)
        assert a.kind.shape == a.group.shape == (n,) and len(a.data.y_train) == n
        assert (a.data.y_test >= 0).all() and int(a.data.y_test.max()) < a.data.n_classes
        assert torch.isfinite(a.data.x_train).all()
        # an item is labelable exactly when it is of the in-set kind
        assert np.array_equal(a.labelable, a.kind == 0)


@pytest.mark.parametrize("share,junk", [(0.4, 0.25), (0.2, 0.0), (0.5, 1.0)])
def test_open_set_share_and_kinds(digits, share, junk):
    sp = build_scenario("open-set", digits, {"share": share, "junk": junk})
    y = sp.data.y_train.numpy()
    out = y == OUT_OF_SET
    assert abs(out.mean() - share) < 0.01
    n_out = out.sum()
    junk_kinds = np.isin(sp.kind, [KINDS.index("noise"), KINDS.index("blank"), KINDS.index("corrupted")])
    assert abs(junk_kinds.sum() - junk * n_out) <= 1
    assert sp.data.n_classes == 6 and set(np.unique(y[~out])) == set(range(6))
    assert set(sp.data.y_test.numpy()) == set(range(6))
    # the unseen-class items are real images of the other classes: the same rows as in the dataset
    unseen = sp.data.x_train[torch.from_numpy(sp.kind == KINDS.index("unseen-class"))]
    src = digits.x_train[digits.y_train >= 6].reshape(-1, 64)
    if len(unseen):
        d = torch.cdist(unseen.reshape(len(unseen), -1), src).min(1).values
        assert float(d.max()) == 0.0


def test_long_tail_counts(digits):
    sp = build_scenario("long-tail", digits, {"ratio": 10})
    counts = np.bincount(sp.data.y_train.numpy(), minlength=10)
    full = np.bincount(digits.y_train.numpy(), minlength=10)
    for c in range(10):
        assert counts[c] == max(1, int(round(full[c] * 10 ** (-c / 9))))
    assert sp.balanced and len(set(np.bincount(sp.data.y_test.numpy()).tolist())) == 1


def test_repeated_copies_share_a_group(digits):
    sp = build_scenario("repeated", digits, {"copies": 3, "noise": 0.1})
    n = len(digits.x_train)
    assert len(sp.data.x_train) == 3 * n and np.array_equal(sp.group, np.tile(np.arange(n), 3))
    diff = sp.data.x_train[n:2 * n] - digits.x_train
    assert 0.08 < float(diff.std()) < 0.12 and torch.equal(sp.data.y_train[:n], sp.data.y_train[2 * n:])


def test_embedding_and_image3_shapes(digits):
    e = build_scenario("embedding", digits, {"dim": 16})
    assert e.data.x_train.shape == (len(digits.x_train), 16) and e.data.x_test.shape == (len(digits.x_test), 16)
    var = e.data.x_train.double().var(0)
    assert abs(float(var.mean()) - 1) < 1e-3 and float(var[0]) > float(var[-1])  # one overall scale, not whitened
    i = build_scenario("image3", digits, {"size": 32})
    assert i.data.x_train.shape == (len(digits.x_train), 3, 32, 32) and torch.equal(i.data.x_train[:, 0], i.data.x_train[:, 2])


def test_bad_scenarios_are_one_line_errors(digits):
    for args, frag in [(("nowhere", {}), "one of"), (("open-set", {"share": 1.5}), "share"),
                       (("open-set", {"known": 10}), "known"), (("long-tail", {"ratio": 0.5}), "ratio"),
                       (("open-set", {"colour": 1}), "takes parameters"), (("embedding", {"dim": 1000}), "dim")]:
        with pytest.raises(ValueError, match=frag):
            build_scenario(*args[:1], digits, args[1])
    flat = Splits("flat", torch.rand(20, 5), torch.arange(20) % 2, torch.rand(4, 5), torch.arange(4) % 2, 2)
    with pytest.raises(ValueError, match="images"):
        build_scenario("image3", flat)
    assert parse_params("share=0.4, junk=0") == {"share": 0.4, "junk": 0.0}
    for bad in ("share", "=3", "share=x"):
        with pytest.raises(ValueError, match="name=number"):
            parse_params(bad)


def test_even_odd_and_junk_pools():
    import numpy as np
    import pytest

    import jacal
    from jacal.scenarios import KINDS, OUT_OF_SET, build_scenario

    d = jacal.load_dataset("digits")
    eo = build_scenario("even-odd", d, {"share": 0.4}, seed=1)
    y = eo.data.y_train.numpy()
    assert abs((y == OUT_OF_SET).mean() - 0.4) < 0.01 and eo.data.n_classes == 5
    assert set(np.unique(y[y >= 0])) == set(range(5)) and set(np.unique(eo.data.y_test.numpy())) == set(range(5))
    # relabeled even digits: every in-set item's label is its digit // 2, the odd digits are out of the set
    assert (eo.kind[y == OUT_OF_SET] == KINDS.index("unseen-class")).all()
    junk = build_scenario("junk", d, {"share": 0.3}, seed=1)
    yj = junk.data.y_train.numpy()
    assert abs((yj == OUT_OF_SET).mean() - 0.3) < 0.01 and junk.data.n_classes == 10
    kinds = np.bincount(junk.kind[yj == OUT_OF_SET], minlength=len(KINDS))
    assert set(np.flatnonzero(kinds)) == {KINDS.index(k) for k in ("noise", "blank", "corrupted", "inverted", "blurred",
                                                                    "overlaid")}
    assert kinds.max() - kinds[kinds > 0].min() <= 1  # six equal parts
    assert float(junk.data.x_train.min()) >= 0 and float(junk.data.x_train.max()) <= 1
    assert np.array_equal(build_scenario("junk", d, {"share": 0.3}, seed=1).data.x_train.numpy(), junk.data.x_train.numpy())
    for name in ("even-odd", "junk"):
        with pytest.raises(ValueError, match="share"):
            build_scenario(name, d, {"share": 1.0})
    with pytest.raises(ValueError, match="images"):
        build_scenario("junk", d.flattened(), {"share": 0.3})
