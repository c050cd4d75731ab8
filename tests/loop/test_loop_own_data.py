"""`jacal loop --pool --labels`: the simulation on a team's own pool and annotation export."""
import csv
import json
import sqlite3

import numpy as np
import pytest

from _cli import run
from _helpers import one_line_error
from jacal.data import load_dataset
from jacal.loop import LoopCallbacks, LoopConfig, run_loop
from jacal.loop.source import LabeledSource, load_source
from jacal.stopping.measure import REPLAYED

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N_LABELED, N_NONE, N_SKIPPED, N_QUEUED, N_UNLABELED = 230, 12, 3, 4, 20
GHOST = "not-in-the-pool.png"
BROKEN = "zz broken.png"  # in the folder, labeled, unreadable
# 2 strategies x 2 seeds x 2 rounds, small enough for a CPU test
LOOP = ["--strategies", "margin,random", "--seeds", "2", "--rounds", "2", "--k", "10", "--initial", "20",
        "--val-size", "40", "--n-test", "50", "--max-epochs", "15", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module's in-process runs: on a shared 2-core machine several threads
    make the tiny MLP's steps five times slower. Every run compared here runs in this process."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ls_task(n, item, choice=None, cancelled=False):
    """One task of a Label Studio JSON export (``choice`` None: queued, no annotation)."""
    anns = [] if choice is None and not cancelled else [{
        "id": n, "was_cancelled": cancelled, "completed_by": 1,
        "result": [] if cancelled else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]}]
    return {"id": 1000 + n, "data": {"id": item, "image": f"/data/{item}"}, "annotations": anns}


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Digits as a team has them: a folder of PNGs with a Label Studio export (class names, 'none of
    these', skips, queued tasks and an id the pool lacks), and the same items as an .npz with a CSV
    export of class indices."""
    from PIL import Image

    root = tmp_path_factory.mktemp("team")
    d = load_dataset("digits")
    n = N_LABELED + N_NONE + N_SKIPPED + N_QUEUED + N_UNLABELED
    x = d.x_train[:n].numpy()
    y = d.y_train[:n].numpy()
    pixels = (x[:, 0] * 255).round().astype(np.uint8)
    folder = root / "images"
    folder.mkdir()
    ids = [f"scan {i:03d}.png" for i in range(n)]
    for i in range(n):
        Image.fromarray(pixels[i], mode="L").save(folder / ids[i])
    tasks = [_ls_task(i, ids[i], NAMES[y[i]]) for i in range(N_LABELED)]
    a = N_LABELED
    tasks += [_ls_task(i, ids[i], "none of these") for i in range(a, a + N_NONE)]
    a += N_NONE
    tasks += [_ls_task(i, ids[i], cancelled=True) for i in range(a, a + N_SKIPPED)]
    a += N_SKIPPED
    tasks += [_ls_task(i, ids[i]) for i in range(a, a + N_QUEUED)]
    tasks.append(_ls_task(n, GHOST, "three"))
    (folder / BROKEN).write_bytes(b"not a PNG")
    tasks.append(_ls_task(n + 1, BROKEN, "five"))
    (root / "export.json").write_text(json.dumps(tasks))
    np.savez(root / "pool.npz", x=x, ids=np.array(ids))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows([ids[i], str(y[i])] for i in range(N_LABELED))
    return {"root": root, "folder": folder, "ids": ids, "x": x, "y": y, "pixels": pixels}


def _loop(out, *args):
    r = run("loop", "--out", out, *LOOP, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _curves(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "acquisition_time_s"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def ls_run(team, tmp_path_factory):
    out = tmp_path_factory.mktemp("ls") / "run"
    printed = _loop(out, "--pool", team["folder"], "--labels", team["root"] / "export.json")
    return out, printed, json.loads((out / "summary.json").read_text())


def test_label_studio_export_counts_what_it_used_and_left_out(team, ls_run):
    out, printed, summary = ls_run
    data = summary["data"]
    assert printed["data"] == data
    assert data["format"] == "label-studio" and data["label_names"] == sorted(NAMES)  # names sorted, none given
    assert data["exported"] == N_LABELED + N_NONE + N_SKIPPED + N_QUEUED + 2
    assert data["used"] == N_LABELED and data["test"] == 50
    assert data["used_out_of_set"] == N_NONE + N_SKIPPED  # skipped tasks are outside the label set too
    assert data["dropped"] == {"not_in_pool": 1, "unreadable": 1, "no_answer": N_QUEUED}
    assert data["examples"]["not_in_pool"] == [GHOST] and data["examples"]["unreadable"] == [BROKEN]
    assert data["pool_items_not_named"] == N_UNLABELED
    assert data["used"] + data["used_out_of_set"] + sum(data["dropped"].values()) == data["exported"]
    truth = np.bincount(team["y"][:N_LABELED], minlength=10)
    assert data["per_class"] == {name: int(truth[NAMES.index(name)]) for name in sorted(NAMES)}
    report = (out / "report.md").read_text()
    assert "## The labels used" in report and "1 name no pool item, 1 could not be read" in report
    assert "## Where each stopping criterion would have stopped" in report


def test_label_studio_run_curves_and_stop_points(ls_run):
    out, _, summary = ls_run
    rows = _curves(out / "curves.csv")
    assert len(rows) == 2 * 2 * 3  # strategies x seeds x (rounds + 1)
    for r in rows:
        assert int(r["n_labeled"]) == 20 + 10 * int(r["round"])
        hits = float(r["test_accuracy"]) * 50  # the 50 held-out test items
        assert abs(hits - round(hits)) < 1e-6, r
    # the strategies' own numbers come from these curves
    margin = [float(r["test_accuracy"]) for r in rows if r["strategy"] == "margin" and r["round"] == "2"]
    assert summary["strategies"]["margin"]["final_accuracy"]["mean"] == pytest.approx(np.mean(margin))
    assert set(summary["ranking"]) == {"margin", "random"}
    for strategy in ("margin", "random"):
        st = summary["stopping"][strategy]
        assert set(st["per_seed"]) == {"0", "1"}
        for table in st["per_seed"].values():
            assert set(table) == set(REPLAYED) | {"oracle"}
            assert all(t["labels"] in (20, 30, 40) for t in table.values())
        assert set(st["over_seeds"]) == set(REPLAYED)
    # a 'none of these' pick costs a label and trains nothing: per-class labels + wasted = labels sent
    con = sqlite3.connect(out / "loop.sqlite")
    try:
        for (n_labeled, m) in con.execute("SELECT r.n_labeled, m.metrics FROM rounds r JOIN round_metrics m "
                                          "USING (strategy, seed, round)"):
            m = json.loads(m)
            assert sum(m["labels_per_class"]) + m["wasted_total"] == n_labeled
    finally:
        con.close()


def test_the_universe_joins_ids_to_their_items(team):
    """Every test and training item is the pool image its exported id names, with that id's label."""
    sp, prov = load_source(LabeledSource(str(team["folder"]), (str(team["root"] / "export.json"),),
                                         label_names=tuple(NAMES)), n_test=50, val_size=40, acquired=40)
    by_pixels = {team["pixels"][i].tobytes(): i for i in range(N_LABELED + N_NONE + N_SKIPPED)}
    d = sp.data
    assert len(d.x_test) == 50 and len(d.x_train) == N_LABELED - 50 + N_NONE + N_SKIPPED
    for x, y in [(d.x_test, d.y_test), (d.x_train, d.y_train)]:
        for xi, yi in zip(x, y.tolist()):
            i = by_pixels[(xi[0].numpy() * 255).round().astype(np.uint8).tobytes()]
            assert yi == (team["y"][i] if i < N_LABELED else -1)
    assert (sp.kind[d.y_train.numpy() == -1] > 0).all() and (sp.kind[d.y_train.numpy() >= 0] == 0).all()
    share = np.bincount(team["y"][:N_LABELED], minlength=10) / N_LABELED  # stratified: each class its share
    assert np.abs(np.bincount(d.y_test.numpy(), minlength=10) - 50 * share).max() <= 1


def test_csv_export_resume_after_interrupt_gives_the_same_curves(team, tmp_path):
    pool, labels = team["root"] / "pool.npz", team["root"] / "labels.csv"
    whole = tmp_path / "whole"
    summary = _loop(whole, "--pool", pool, "--labels", labels, "--strategies", "margin")
    assert summary["data"]["format"] == "csv" and summary["data"]["used"] == N_LABELED
    assert summary["data"]["label_names"] == [str(c) for c in range(10)]
    cfg = LoopConfig(strategies=("margin",), seeds=2, rounds=2, k=10, initial=20, val_size=40, n_test=50,
                     max_epochs=15, source=LabeledSource(str(pool), (str(labels),)))
    done = []

    def stop_after_three(*_):
        done.append(1)
        if len(done) == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_loop(part, cfg, device="cpu", callbacks=LoopCallbacks(on_round=stop_after_three))
    con = sqlite3.connect(part / "loop.sqlite")
    assert con.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 3
    con.close()
    moved = tmp_path / "moved" / "labels.csv"  # the same export elsewhere: the same experiment
    moved.parent.mkdir()
    moved.write_bytes(labels.read_bytes())
    _loop(part, "--pool", pool, "--labels", moved, "--strategies", "margin", "--resume")
    assert _curves(part / "curves.csv") == _curves(whole / "curves.csv")
    # a changed export is another experiment: resume refuses it
    changed = tmp_path / "changed.csv"
    text = labels.read_text().splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ",9" if not text[1].endswith(",9") else text[1].rsplit(",", 1)[0] + ",8"
    changed.write_text("\n".join(text) + "\n")
    r = run("loop", "--out", part, *LOOP, "--strategies", "margin", "--pool", pool, "--labels", changed, "--resume")
    one_line_error(r, "different experiment")


def test_bad_own_data_is_one_line_naming_the_flag(team, tmp_path):
    root, pool = team["root"], team["root"] / "pool.npz"
    (tmp_path / "bad.npz").write_text("not an archive")
    (tmp_path / "bad.json").write_text('[{"data": ')
    (tmp_path / "nomatch.csv").write_text("id,label\nfoo,3\nbar,4\n")
    (tmp_path / "one.csv").write_text("id,label\n" + "".join(f"{i},3\n" for i in team["ids"][:30]))
    few = "id,label\n" + "".join(f"{i},{y}\n" for i, y in zip(team["ids"][:60], team["y"][:60]))
    (tmp_path / "few.csv").write_text(few)
    cases = [
        (["--pool", pool, "--labels", tmp_path / "missing.json"], "--labels"),
        (["--pool", tmp_path / "missing.npz", "--labels", root / "labels.csv"], "--pool"),
        (["--pool", tmp_path / "bad.npz", "--labels", root / "labels.csv"], "--pool"),
        (["--pool", pool, "--labels", tmp_path / "bad.json"], "--labels"),
        (["--pool", pool, "--labels", tmp_path / "nomatch.csv"], "--labels"),
        (["--pool", pool, "--labels", tmp_path / "one.csv"], "--labels"),
        (["--pool", pool, "--labels", tmp_path / "few.csv"], "--n-test + --val-size + --initial + --k·--rounds"),
        (["--pool", pool], "--labels"),
        (["--pool", pool, "--labels", root / "labels.csv", "--dataset", "digits"], "--dataset"),
        (["--pool", pool, "--labels", root / "labels.csv", "--scenario", "open-set"], "--scenario"),
        (["--pool", pool, "--labels", root / "labels.csv", "--label-names", "a,b"], "--label-names"),
    ]
    for args, flag in cases:
        out = tmp_path / "out"
        r = run("loop", "--out", out, *LOOP, *args)
        one_line_error(r, flag)
        assert not out.exists() or not any(out.iterdir()), args  # nothing half-written
