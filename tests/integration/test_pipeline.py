"""jacal.pipeline, the library behind the file-based commands: every pool format × every output format,
through the library call and through the command line (which only passes its options on), and each
step's checks, warnings and files."""
import csv
import json

import numpy as np
import pytest
import torch

import jacal
import jacal.io as jio
from _cli import run
from _pools import N, NAMES, build, read_batch
from jacal.confidence import ConfidenceEstimator
from jacal.io.labels import resolve_label_names
from jacal.io.batches import output_format
from jacal.pipeline import acquire_batch, confidence_file, score_file, train_checkpoint

POOLS = ["npy", "npz", "folder", "nested", "csv", "jsonl"]
TOLERANCE = 0.5 / 255 + 1e-6  # image pools: the array's pixels up to uint8 rounding


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build(tmp_path_factory.mktemp("pipeline"))


@pytest.mark.parametrize("via", ["library", "cli"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "label-studio", "argilla"])
@pytest.mark.parametrize("pool", POOLS)
def test_every_pool_format_to_every_output_format(setup, tmp_path, pool, fmt, via):
    out = tmp_path / ("batch.json" if fmt in ("label-studio", "argilla") else f"batch.{fmt}")
    if via == "library":
        summary = acquire_batch(setup["model"], setup["pools"][pool], 6, out, fmt=fmt, strategy="margin",
                                label_names=NAMES)
    else:
        r = run("acquire", "--strategy", "margin", "--model", setup["model"], "--pool", setup["pools"][pool], "--k", 6,
                "--out", out, "--format", fmt, "--label-names", ",".join(NAMES), "--json")
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
    batch = summary.pop("batch")  # the picks by class pair, their reasons summarized
    assert batch["k"] == 6 and batch["strategy"] == "margin" and batch["pairs_covered"] >= 1
    assert summary == {"out": str(out), "format": fmt, "strategy": "margin", "k": 6, "pool": N, "excluded": 0,
                       "invalid": []}
    ids, predicted, conf = read_batch(out, fmt)
    item_of = setup["item_of"][pool]
    picks = [item_of[i] for i in ids]  # every id names a pool item, unchanged
    assert len(set(picks)) == 6
    # the same items whatever the pool's form (images: the same pixels up to uint8 rounding)
    model = jacal.load_checkpoint(setup["model"]).model
    expected = jacal.acquire(model, setup["x"], 6, strategy="margin")
    assert sorted(picks) == sorted(expected.indices.tolist())
    assert all(0 < c <= 1 for c in conf)
    if fmt in ("label-studio", "argilla"):  # the prediction is the model's, named through the label names
        assert predicted == [NAMES[expected.predicted[j]] for j in picks]
        np.testing.assert_allclose(conf, expected.confidence[picks], atol=0.02)
    if pool in ("csv", "jsonl") and fmt in ("label-studio", "argilla"):
        uris = [t["data"]["image"] for t in json.loads(out.read_text())] if fmt == "label-studio" else \
            [rec["fields"]["image"] for rec in json.loads(out.read_text())]
        assert all(u.endswith(f"{j:02d}.png") for u, j in zip(uris, picks))


def test_acquire_batch_excludes_and_warns(setup, tmp_path):
    ids = setup["ids"]
    with open(tmp_path / "done.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "label"], [ids[0], "one"], [ids[1], ""], ["not in the pool", "two"]])
    notes = []
    summary = acquire_batch(setup["model"], setup["pools"]["npz"], 38, tmp_path / "b.csv", strategy="margin",
                            exclude=tmp_path / "done.csv", label_names=NAMES, on_warning=notes.append)
    assert summary["excluded"] == 2 and summary["k"] == 38
    assert notes == [f"1 id(s) in {tmp_path / 'done.csv'} are not in the pool"]
    picked = {row["id"] for row in csv.DictReader(open(tmp_path / "b.csv", encoding="utf-8"))}
    assert picked == set(ids[2:])
    with pytest.warns(UserWarning, match="not in the pool"):  # without on_warning: Python warnings
        acquire_batch(setup["model"], setup["pools"]["npz"], 3, tmp_path / "c.csv", exclude=tmp_path / "done.csv",
                      label_names=NAMES)


def test_acquire_batch_refuses_before_writing(setup, tmp_path):
    out = tmp_path / "b.json"
    for kwargs, message in [({"fmt": "txt"}, "cannot tell the format"),
                            ({"fmt": "label-studio", "label_names": ["a", "b"]}, "has 2 names but the model has 10"),
                            ({"fmt": "argilla", "label_names": "a,a"}, "repeats 'a'")]:
        with pytest.raises(jacal.JacalError, match=message):
            acquire_batch(setup["model"], setup["pools"]["csv"], 3, out, **kwargs)
        assert not out.exists()
    out.write_text("old")
    with pytest.raises(jacal.JacalError, match="exists; pass `force=True`"):
        acquire_batch(setup["model"], setup["pools"]["csv"], 3, out, fmt="label-studio")
    assert out.read_text() == "old"
    acquire_batch(setup["model"], setup["pools"]["csv"], 3, out, fmt="label-studio", force=True)
    assert len(json.loads(out.read_text())) == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("pool", POOLS)
def test_confidence_file_every_pool_format(setup, tmp_path, pool, fmt):
    out = tmp_path / f"conf.{fmt}"
    summary = confidence_file(setup["model"], setup["pools"][pool], out=out, review_below=0.9, device="cpu")
    rows = (list(csv.DictReader(out.open(encoding="utf-8"))) if fmt == "csv"
            else [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()])
    assert summary["n"] == N and summary["out"] == str(out) and len(rows) == N
    model = jacal.load_checkpoint(setup["model"]).model
    conf, pred = ConfidenceEstimator("max-softmax").learn(model, None).confidence_and_prediction(model, setup["x"])
    order = [setup["item_of"][pool][str(r["id"])] for r in rows]  # each row's id names its item
    assert sorted(order) == list(range(N))
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], conf[order], atol=0.02)
    assert sum(int(r["review"]) for r in rows) == summary["to_review"]
    assert summary["mean_confidence"] == pytest.approx(float(np.mean(conf)), abs=0.01)


def test_confidence_file_fits_saves_and_reuses(setup, tmp_path):
    d = jacal.load_dataset("digits", n_train=300, seed=0)
    np.save(tmp_path / "xf.npy", d.x_test[N:N + 150].numpy())
    np.save(tmp_path / "yf.npy", d.y_test[N:N + 150].numpy())
    (tmp_path / "y.txt").write_text("\n".join(str(int(v)) for v in d.y_test[:N]) + "\n")
    est = tmp_path / "est.pt"
    first = confidence_file(setup["model"], setup["pools"]["npy"], method="temperature", fit_data=tmp_path / "xf.npy",
                            fit_labels=tmp_path / "yf.npy", labels=tmp_path / "y.txt", save_estimator=est, device="cpu")
    again = confidence_file(setup["model"], setup["pools"]["npy"], estimator=est, labels=tmp_path / "y.txt",
                            device="cpu")
    assert first["estimator"] == again["estimator"] == str(est) and again["method"] == "temperature"
    assert again["metrics"] == pytest.approx(first["metrics"])
    notes = []
    confidence_file(setup["model"], setup["pools"]["npy"], method="entropy", fit_data=tmp_path / "xf.npy",
                    on_warning=notes.append)
    assert notes == ["method 'entropy' learns nothing; `fit_data`/`fit_labels` are ignored"]
    with pytest.raises(jacal.JacalError, match="3 labels for 40 items"):
        np.save(tmp_path / "short.npy", np.zeros(3, np.int64))
        confidence_file(setup["model"], setup["pools"]["npy"], labels=tmp_path / "short.npy")


def test_read_labels(tmp_path):
    (tmp_path / "y.txt").write_text("3\n1\n")
    np.save(tmp_path / "y.npy", np.array([[3], [1]]))
    for name in ("y.txt", "y.npy"):
        y = jio.read_labels(tmp_path / name, 2)
        assert y.tolist() == [3, 1] and y.dtype == np.int64
    with pytest.raises(jacal.JacalError, match="labels file not found"):
        jio.read_labels(tmp_path / "none.txt")
    (tmp_path / "bad.txt").write_text("cat\n")
    with pytest.raises(jacal.JacalError, match="could not read labels"):
        jio.read_labels(tmp_path / "bad.txt")


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("source", ["npy", "npz", "digits"])
def test_score_file(setup, tmp_path, source, fmt):
    out = tmp_path / f"scores.{fmt}"
    kwargs = {"dataset": "digits"} if source == "digits" else {"input_file": setup["pools"][source]}
    summary = score_file(setup["model"], out=out, device="cpu", **kwargs)
    rows = (list(csv.DictReader(out.open(encoding="utf-8"))) if fmt == "csv"
            else json.loads(out.read_text(encoding="utf-8"))["scores"])
    n = N if source != "digits" else 450
    assert summary["n"] == len(rows) == n and summary["out"] == str(out)
    model = jacal.load_checkpoint(setup["model"]).model
    x = torch.as_tensor(setup["x"]) if source != "digits" else jacal.load_dataset("digits").x_test
    np.testing.assert_allclose([float(r["jacobian_norm"]) for r in rows], jacal.jacobian_norm(model, x).numpy(),
                               rtol=1e-5)
    assert [int(r["predicted"]) for r in rows] == model(x).argmax(1).tolist()
    assert [str(r["id"]) for r in rows] == ([str(i) for i in range(n)] if source != "npz" else setup["ids"])
    assert ("accuracy" in summary) == (source == "digits") == ("label" in rows[0])


def test_score_file_refuses_before_scoring(setup, tmp_path):
    seen = []
    with pytest.raises(jacal.JacalError, match=r"pass `fmt` \(csv or json\)"):
        score_file(setup["model"], input_file=setup["pools"]["npy"], out=tmp_path / "x.txt",
                   progress=lambda done, n: seen.append(done))
    assert not seen and not (tmp_path / "x.txt").exists()
    with pytest.raises(jacal.JacalError, match="names no dataset"):
        score_file(setup["model"])


@pytest.mark.parametrize("labels", ["csv", "label-studio"])
@pytest.mark.parametrize("pool", ["npz", "nested", "csv"])
def test_train_checkpoint_from_labels(setup, tmp_path, pool, labels):
    ids = list(setup["item_of"][pool])[:12]
    truth = {i: NAMES[int(setup["y"][setup["item_of"][pool][i]])] for i in ids}
    path = tmp_path / "labels.json"
    if labels == "csv":
        path = tmp_path / "labels.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["id", "label"], *truth.items(), ["not in the pool", "one"]])
    else:
        tasks = [{"data": {"id": i}, "annotations": [{"result": [{"from_name": "label", "to_name": "image",
                                                                  "type": "choices", "value": {"choices": [c]}}]}]}
                 for i, c in [*truth.items(), ("not in the pool", "one")]]
        path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    notes = []
    meta = train_checkpoint(tmp_path / "m.pt", pool=setup["pools"][pool], labels=path, label_names=NAMES, width=16,
                            depth=1, epochs=2, device="cpu", on_warning=notes.append)
    assert notes == [f"1 labeled id(s) in {path} are not in {setup['pools'][pool]}"]
    assert meta["label_names"] == NAMES and meta["input_shape"] == [1, 8, 8] and meta["dataset"] is None
    assert meta["source"] == {"pool": str(setup["pools"][pool]), "labels": [str(path)], "format": labels,
                              "n_labeled": 12, "n_out_of_set": 0, "per_file": {str(path): 13}}
    assert meta["metrics"]["test_accuracy"] is None
    ck = jacal.load_checkpoint(tmp_path / "m.pt")
    assert ck.metadata["label_names"] == NAMES and ck.model(torch.as_tensor(setup["x"][:2])).shape == (2, 10)


def test_train_checkpoint_on_a_dataset_and_its_checks(tmp_path):
    meta = train_checkpoint(tmp_path / "m.pt", n_train=100, width=16, depth=1, epochs=1, device="cpu")
    assert meta["dataset"] == "digits" and meta["checkpoint"] == str(tmp_path / "m.pt")
    assert 0 <= meta["metrics"]["test_accuracy"] <= 1
    with pytest.raises(jacal.JacalError, match="exists; pass `force=True`"):
        train_checkpoint(tmp_path / "m.pt")
    with pytest.raises(jacal.JacalError, match="`pool` and `labels` go together"):
        train_checkpoint(tmp_path / "n.pt", labels=tmp_path / "x.csv")
    assert not (tmp_path / "n.pt").exists()


def test_invalid_report_and_label_names(setup):
    pool = jio.Pool(np.zeros((15, 2), np.float32), [f"i{k}" for k in range(15)])
    assert pool.invalid_report([3, 4]) == ["2 pool item(s) contain NaN/Inf and were not selected: i3, i4"]
    assert pool.invalid_report(range(12))[0].endswith("i0, i1, i2, i3, i4, i5, i6, i7, i8, i9 ...")
    images = jio.ImagePool(["a", "b", "c"], ["/none/a.png", "/none/b.png", None], size=(8, 8), channels=1,
                           uris=["a", "b", "https://x/c.png"])
    report = jio.Pool(images, ["a", "b", "c"]).invalid_report([0, 1, 2], limit=2)
    assert report == ["skipped item 'a': file not found: /none/a.png", "skipped item 'b': file not found: /none/b.png",
                      "... and 1 more unreadable item(s) (Pool.problems lists them all)"]
    assert resolve_label_names(None, ["x", "y"], 2) == ["x", "y"]
    assert resolve_label_names(("p", "q"), ["x", "y"], None) == ["p", "q"]
    assert resolve_label_names(None, None, None) is None
    with pytest.raises(jacal.JacalError, match="`label_names` has 1 names but the model has 2 classes"):
        resolve_label_names(["p"], None, 2)
    assert output_format("b.CSV") == "csv" and output_format("b", "label-studio", jio.BATCH_FORMATS)
    with pytest.raises(jacal.JacalError, match=r"pass `fmt` \(csv or jsonl\)"):
        output_format("b.txt")


def test_repeated_excludes_are_unioned_and_none_of_these_reaches_acquire(setup, tmp_path, monkeypatch):
    """Two files: the union is never selected; the items answered 'none of these' reach jacal.acquire as
    ``out_of_set``, positions in ``labeled`` (every item already sent)."""
    ids = setup["ids"]
    (tmp_path / "seed.csv").write_text("id\n" + "\n".join(f'"{i}"' for i in ids[:4]) + "\n", encoding="utf-8")
    tasks = [{"id": 50 + n, "data": {"id": i}, "annotations": [{"was_cancelled": False, "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [c]}}]}]}
        for n, (i, c) in enumerate([(ids[3], "none of these"), (ids[7], "one"), (ids[9], "None of these")])]
    tasks.append({"id": 60, "data": {"id": ids[11]}, "annotations": [{"was_cancelled": True, "result": []}]})  # skip
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    seen = {}
    real = jacal.acquire

    def spy(model, pool, k, **kwargs):  # records the call; the keyword itself is jacal.acquire's (issue 21)
        seen.update(kwargs)
        kwargs.pop("out_of_set", None)
        return real(model, pool, k, **kwargs)

    monkeypatch.setattr(jacal, "acquire", spy)
    summary = acquire_batch(setup["model"], setup["pools"]["npz"], 10, tmp_path / "b.csv", strategy="margin",
                            exclude=[tmp_path / "seed.csv", tmp_path / "export.json"], label_names=NAMES)
    sent = [0, 1, 2, 3, 7, 9, 11]
    assert summary["excluded"] == 7 and summary["out_of_set"] == 3
    assert summary["excluded_per_file"] == {str(tmp_path / "seed.csv"): 4, str(tmp_path / "export.json"): 4}
    assert list(seen["labeled"]) == sent
    assert [sent[p] for p in seen["out_of_set"]] == [3, 9, 11]
    picked = {row["id"] for row in csv.DictReader(open(tmp_path / "b.csv", encoding="utf-8"))}
    assert not picked & {ids[j] for j in sent} and len(picked) == 10
    seen.clear()
    acquire_batch(setup["model"], setup["pools"]["npz"], 3, tmp_path / "c.csv", strategy="margin",
                  exclude=tmp_path / "seed.csv", label_names=NAMES)
    assert "out_of_set" not in seen  # only passed when there is one


def test_train_on_several_label_files_leaves_none_of_these_out(setup, tmp_path):
    ids, truth = setup["ids"], setup["truth"]
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "label"], *[[i, truth[i]] for i in ids[:6]], [ids[6], "none of these"]])
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "label"], *[[i, truth[i]] for i in ids[6:10]], [ids[10], "None of these"]])
    meta = train_checkpoint(tmp_path / "m.pt", pool=setup["pools"]["npz"], labels=[tmp_path / "a.csv", tmp_path / "b.csv"],
                            label_names=NAMES, width=16, depth=1, epochs=2, device="cpu")
    src = meta["source"]
    assert src["n_labeled"] == 10 and src["n_out_of_set"] == 1  # ids[6]: labeled in the later file, so it counts
    assert src["labels"] == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert src["per_file"] == {str(tmp_path / "a.csv"): 7, str(tmp_path / "b.csv"): 5}
    r = run("train", "--pool", setup["pools"]["npz"], "--labels", tmp_path / "a.csv", "--labels", tmp_path / "b.csv",
            "--label-names", ",".join(NAMES), "--out", tmp_path / "m2.pt", "--width", 16, "--depth", 1, "--epochs", 2)
    assert r.exit_code == 0, r.output
    assert "on 10 labeled items; a.csv: 7, b.csv: 5; 1 'none of these' left out" in r.stdout
    (tmp_path / "none.csv").write_text(f'id,label\n"{ids[0]}",none of these\n', encoding="utf-8")
    with pytest.raises(jacal.JacalError, match="labels none of the readable items .*1 answered 'none of these'"):
        train_checkpoint(tmp_path / "m3.pt", pool=setup["pools"]["npz"], labels=tmp_path / "none.csv", label_names=NAMES)
