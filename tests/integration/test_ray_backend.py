"""The Ray backend gives the local backend's results; a killed task is retried, nothing lost or doubled."""
import csv
import os
import sqlite3

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import jacal  # noqa: E402
from _tolerance import assert_close_reordered  # noqa: E402
from jacal.backends import RayBackend  # noqa: E402
from jacal.cli.app import app  # noqa: E402

TINY = ["--groups", "2", "--models-per-group", "3", "--pairs", "2", "--steps", "120", "--device", "cpu", "--json"]


def _dies_once(fn, marker):
    """``fn`` as a unit of work whose worker process dies once, as on a lost machine: the first call to
    create the file ``marker`` kills its own process; the retry, and every other call, runs ``fn``."""
    def run(*args):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return fn(*args)
        os._exit(1)
    return run


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """``(backend, folder)``: a local Ray instance of 2 CPUs, and a folder for the tests' marker files."""
    crash_dir = tmp_path_factory.mktemp("crash")
    old_path = os.environ.get("PYTHONPATH")
    here = os.path.dirname(os.path.abspath(__file__))  # test modules' classes and functions must import on workers,
    shared = os.path.dirname(here)  # as a user's own code must; the shared helpers (_formats) sit one folder up
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, shared, old_path) if p)
    backend = RayBackend(num_cpus=2)
    yield backend, crash_dir
    ray.shutdown()
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


def _models(db):
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(models)") if r[1] != "wall_time_s"]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM models ORDER BY model_id").fetchall()
    n_points = con.execute("SELECT COUNT(*), COUNT(DISTINCT model_id || '/' || point_index) FROM points").fetchone()
    con.close()
    return rows, n_points


def _close(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for va, vb in zip(ra, rb):
            if isinstance(va, float):
                assert va == pytest.approx(vb, rel=1e-4, abs=1e-6)
            else:
                assert va == vb


@pytest.mark.slow
def test_replicate_on_ray_equals_local_and_survives_a_lost_worker(ray_local, tmp_path, monkeypatch):
    _, crash_dir = ray_local
    run = CliRunner().invoke
    r = run(app, ["replicate", "--out", str(tmp_path / "local"), *TINY])
    assert r.exit_code == 0, r.output
    marker = crash_dir / "replicate-crashed"
    submit = RayBackend.map_unordered  # the first group to start on Ray loses its worker once
    monkeypatch.setattr(RayBackend, "map_unordered",
                        lambda self, fn, jobs, **kw: submit(self, _dies_once(fn, str(marker)), jobs, **kw))
    r = run(app, ["replicate", "--out", str(tmp_path / "ray"), *TINY, "--backend", "ray"])
    assert r.exit_code == 0, r.output
    assert marker.exists()  # the task did die, and was retried
    local, lp = _models(tmp_path / "local" / "results.sqlite")
    remote, rp = _models(tmp_path / "ray" / "results.sqlite")
    assert [m[0] for m in remote] == [m[0] for m in local]  # no model missing or duplicated
    assert rp == lp and rp[0] == rp[1]
    _close(remote, local)


def test_acquire_sharded_on_ray_equals_local(ray_local, tmp_path):
    backend, _ = ray_local
    model = jacal.mlp(64, 10, width=32, depth=2, dropout=0.2, seed=0).eval()
    pool = torch.rand(2000, 64)
    for strategy in ("jacobian", "jacobian-kmeans", "jacobian-topk", "bald", "coreset"):
        local = jacal.acquire(model, pool, 25, strategy=strategy, batch_size=128, seed=1)
        remote = jacal.acquire(model, pool, 25, strategy=strategy, batch_size=128, seed=1, backend=backend,
                               shard_size=500)
        assert np.array_equal(local.indices, remote.indices)
        # shards of 500 run in chunks of 128, 128, 128, 116: BLAS takes the float32 sums in another order
        assert_close_reordered(remote.scores, local.scores, length=64, depth=3, per_row=False)
    ck = jacal.save_checkpoint(tmp_path / "m.pt", model)
    np.save(tmp_path / "pool.npy", pool.numpy())
    outs = {}
    for name, extra in (("local", []), ("ray", ["--backend", "ray", "--shard-size", "300"])):
        out = tmp_path / f"{name}.csv"
        r = CliRunner().invoke(app, ["acquire", "--model", str(ck), "--pool", str(tmp_path / "pool.npy"), "--k", "10",
                                     "--out", str(out), "--strategy", "jacobian", *extra])
        assert r.exit_code == 0, r.output
        outs[name] = [row["id"] for row in csv.DictReader(out.open())]
    assert outs["local"] == outs["ray"]


def test_loop_on_ray_equals_local(ray_local, tmp_path):
    args = ["--strategies", "jacobian,margin", "--rounds", "2", "--seeds", "2", "--k", "7", "--max-epochs", "20",
            "--device", "cpu", "--json"]
    run = CliRunner().invoke
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray's workers: the same float rounding in training and features
    try:  # (the rejection seeding's draws follow last-bit differences of the embeddings: selection/d2.py)
        assert run(app, ["loop", "--out", str(tmp_path / "l"), *args]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    r = run(app, ["loop", "--out", str(tmp_path / "r"), *args, "--backend", "ray"])
    assert r.exit_code == 0, r.output

    def rows(p):
        with open(p / "curves.csv") as f:
            return [(r["strategy"], r["seed"], r["round"], r["n_labeled"], float(r["test_accuracy"]),
                     float(r["test_loss"])) for r in csv.DictReader(f)]

    a, b = rows(tmp_path / "l"), rows(tmp_path / "r")
    assert [x[:4] for x in a] == [x[:4] for x in b]
    for x, y in zip(a, b):  # Ray workers run 1 thread: float rounding may differ in the last digits
        assert x[4] == pytest.approx(y[4], abs=1e-9) and x[5] == pytest.approx(y[5], rel=1e-4)



def test_acquire_manifest_pool_on_ray_equals_local(ray_local, tmp_path):
    """A lazily decoded image pool (a torch Dataset) is sharded too; a missing file is invalid on both."""
    from PIL import Image

    import jacal.io as jio

    backend, _ = ray_local
    pixels = (torch.rand(300, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    lines = ["id,path"]
    for i in range(300):
        Image.fromarray(pixels[i], mode="L").save(tmp_path / f"{i:03d}.png")
        lines.append(f'"item {i}, é",{i:03d}.png')
    lines[5] = '"gone",missing.png'
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pool = jio.open_pool(tmp_path / "m.csv", image_size=(8, 8), channels=1)
    model = jacal.mlp(64, 10, width=16, depth=1, seed=0).eval()
    local = jacal.acquire(model, pool.items, 10, strategy="jacobian", batch_size=64, seed=1)
    remote = jacal.acquire(model, pool.items, 10, strategy="jacobian", batch_size=64, seed=1, backend=backend,
                           shard_size=100)
    assert np.array_equal(local.indices, remote.indices)
    assert local.invalid.tolist() == remote.invalid.tolist() == [4]


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_compiled_models_travel_to_ray_workers(ray_local, tmp_path, fmt):
    """TorchScript and torch.export models reach the workers as bytes in their own format; every
    kind of strategy (scores, Jacobians, embeddings, MC dropout) picks what the local backend picks."""
    import warnings

    from jacal.models import load_model_file

    backend, _ = ray_local
    warnings.simplefilter("ignore")
    seq = torch.nn.Sequential(*jacal.mlp(64, 10, width=32, depth=2, dropout=0.2, seed=0).children()).eval()
    pool = torch.rand(1200, 64, generator=torch.Generator().manual_seed(0))
    path = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    if fmt == "torchscript":
        torch.jit.script(seq).save(str(path))
    else:
        torch.export.save(torch.export.export(seq, (pool[:4],), dynamic_shapes={"input": {0: torch.export.Dim("b")}}),
                          str(path))
    model = load_model_file(path).model
    for strategy in ("margin", "jacobian", "coreset", "bald"):
        local = jacal.acquire(model, pool, 20, strategy=strategy, batch_size=128, seed=1)
        remote = jacal.acquire(model, pool, 20, strategy=strategy, batch_size=128, seed=1, backend=backend,
                               shard_size=400)
        assert np.array_equal(local.indices, remote.indices), strategy
        # shards of 400 run in chunks of 128, 128, 128, 16: BLAS takes the float32 sums in another order
        assert_close_reordered(remote.scores, local.scores, length=64, depth=3, per_row=False)


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    from _formats import build_formats

    return build_formats(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("fmt", ["checkpoint", "module", "scripted", "traced", "export"])
def test_every_format_every_strategy_on_ray(ray_local, formats, fmt):
    """The third axis of the matrix: each model format × every registered strategy on Ray picks what the
    local backend picks (in three shards), or gives the local backend's pinned one-line error."""
    from _formats import PINNED

    backend, _ = ray_local
    models, _, x = formats
    for strategy in sorted(jacal.STRATEGIES):
        kw = dict(strategy=strategy, batch_size=16, seed=1, device="cpu")
        if (fmt, strategy) in PINNED:
            with pytest.raises(ValueError, match=PINNED[(fmt, strategy)]):
                jacal.acquire(models[fmt], x, 5, backend=backend, shard_size=32, **kw)
            continue
        local = jacal.acquire(models[fmt], x, 5, **kw)
        remote = jacal.acquire(models[fmt], x, 5, backend=backend, shard_size=32, **kw)
        assert np.array_equal(local.indices, remote.indices), strategy
        assert_close_reordered(remote.scores, local.scores, length=64, depth=3, per_row=False)  # other processes
    if fmt != "traced":  # a named layer and an embed callable travel too
        for extra in ({"embedding_layer": "body.1" if fmt == "module" else "1"}, {"embed": _first_eight}):
            local = jacal.acquire(models[fmt], x, 5, strategy="badge", seed=1, batch_size=16, **extra)
            remote = jacal.acquire(models[fmt], x, 5, strategy="badge", seed=1, batch_size=16, backend=backend,
                                   shard_size=32, **extra)
            assert np.array_equal(local.indices, remote.indices)


def _first_eight(x):
    return x.reshape(len(x), -1)[:, :8]
