"""The fault matrix: every long-running command fails cleanly (one line, an exit code) and loses nothing.

=====================================  =========================  ======================  ==================
fault                                  replicate                  loop                    acquire, confidence
=====================================  =========================  ======================  ==================
damaged / foreign / other-schema store test_damaged_store         test_damaged_store      test_damaged_inputs
two runs on one --out                  test_second_run_refused    test_second_run_refused (one file, atomic
                                                                                          replace: last wins)
lock of a SIGKILLed run                test_stale_lock            test_stale_lock         –
disk full (RLIMIT_FSIZE)               test_replicate.py chain    test_loop.py chain      test_disk_full
unwritable output                      test_unwritable_output     test_unwritable_output  test_unwritable_output
SIGKILL while outputs are written      test_kill_while_writing    test_kill_while_writing test_kill_while_writing
SIGINT (Ctrl-C)                        test_replicate.py chain    test_loop.py chain      test_ctrl_c
SIGKILLs at random moments + --resume  test_replicate.py chain    test_loop.py chain      –
=====================================  =========================  ======================  ==================
"""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import jacal
from _cli import digits_model, run as _invoke
from _helpers import LOOP_TINY, REPLICATE_TINY, cli, fsize_limit, one_line_error, one_line_failure
from jacal._internal.store import SCHEMA_VERSION, check_store, open_store, run_lock
from jacal.loop.store import SCHEMA as LOOP_SCHEMA
from jacal.replication.store import SCHEMA as REPLICATE_SCHEMA, ResultStore

pytestmark = pytest.mark.slow  # each test kills a subprocess mid-write

STORE = {"replicate": "results.sqlite", "loop": "loop.sqlite"}
SCHEMA = {"replicate": REPLICATE_SCHEMA, "loop": LOOP_SCHEMA}
ARGS = {"replicate": REPLICATE_TINY, "loop": LOOP_TINY}
OTHER = {"replicate": "loop", "loop": "replicate"}
ADVICE = "remove it or choose another --out"


def _store(path, kind, rows=400):
    """A healthy multi-page store of ``kind`` (rows of plausible shape, no training needed)."""
    con = open_store(path, kind, SCHEMA[kind])
    with con:
        if kind == "replicate":
            con.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?)",
                            [(f"m{i % 7}", i, 0.1 * i, 0.01 * i, i % 2) for i in range(rows)])
        else:
            con.executemany("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [("margin", s, r, 20 + r, 0.5, 1.0, 0.1, 3, json.dumps(list(range(20 + r))))
                             for s in range(20) for r in range(rows // 20)])
    con.close()
    return path


def _damaged(kind, damage, path, scratch):
    """Write the store file ``path`` in state ``damage``; return the fragment its error must name."""
    if damage in ("truncated", "cut-short"):
        data = _store(scratch / "healthy.sqlite", kind).read_bytes()
        path.write_bytes(data[:len(data) // 2] if damage == "truncated" else data[:-100])
        return "is damaged"
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
        return "not an SQLite database"
    if damage == "other command":
        _store(path, OTHER[kind])
        return f"not a `jacal {kind}` store"
    if damage == "not jacal":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id TEXT, label TEXT)")
        con.commit()
        con.close()
        return "not a jacal store"
    if damage == "older schema":  # pre-version store whose tables differ from today's
        con = sqlite3.connect(path)
        old = SCHEMA[kind].replace(", train_epochs INTEGER", "").replace(", wall_time_s REAL", "")
        assert old != SCHEMA[kind]
        con.executescript(old)
        con.close()
        return "older jacal"
    if damage == "newer schema":
        _store(path, kind)
        con = sqlite3.connect(path)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(SCHEMA_VERSION + 1),))
        con.commit()
        con.close()
        return "upgrade jacal"
    raise AssertionError(damage)


DAMAGES = ["truncated", "cut-short", "garbage", "other command", "not jacal", "older schema", "newer schema"]


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", ["replicate", "loop"])
@pytest.mark.parametrize("resume", [True, False])
def test_damaged_store(tmp_path, command, damage, resume):
    """One line that names the file and what to do, exit 1, the file byte for byte as it was."""
    out = tmp_path / "out"
    out.mkdir()
    db = out / STORE[command]
    fragment = _damaged(command, damage, db, tmp_path)
    before = db.read_bytes()
    r = _invoke(command, "--out", out, *ARGS[command], *(["--resume"] if resume else []))
    one_line_error(r, fragment)
    assert str(db) in r.stderr and ADVICE in r.stderr
    assert db.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted([db.name, ".jacal.lock"])  # nothing else written


@pytest.mark.parametrize("kind", ["replicate", "loop"])
def test_store_versions(tmp_path, kind):
    """New stores record their command and schema version; a pre-version store of today's schema is adopted."""
    con = open_store(tmp_path / "new.sqlite", kind, SCHEMA[kind])
    meta = dict(con.execute("SELECT key, value FROM meta"))
    con.close()
    assert json.loads(meta["jacal_store"]) == kind and json.loads(meta["schema_version"]) == SCHEMA_VERSION
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.executescript(SCHEMA[kind])
    con.close()
    assert check_store(old, kind, SCHEMA[kind]) is True  # still to be stamped
    open_store(old, kind, SCHEMA[kind]).close()
    assert check_store(old, kind, SCHEMA[kind]) is False
    if kind == "replicate":  # the store class goes through the same door
        with pytest.raises(jacal.JacalError, match="not a `jacal replicate` store"):
            ResultStore(_store(tmp_path / "loop.sqlite", "loop"))


@pytest.mark.parametrize("command", ["replicate", "loop"])
def test_second_run_refused(tmp_path, command):
    """A second run on a folder in use refuses at once, naming the holder; the store is not touched."""
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out, command):
        start = time.time()
        r = _invoke(command, "--out", out, *ARGS[command], "--resume")
        one_line_error(r, f"another jacal run is using {out} (pid {os.getpid()})")
        assert time.time() - start < 10
    assert not (out / STORE[command]).exists()


def test_stale_lock(tmp_path):
    """The lock of a SIGKILLed run is released with it; its lock file stays and blocks nobody."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jacal._internal.store import run_lock\n"
                         f"with run_lock({str(out)!r}, 'replicate'):\n print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for command in ("replicate", "loop"):
            one_line_error(_invoke(command, "--out", out, *ARGS[command], "--resume"),
                           f"(pid {holder.pid})")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".jacal.lock").exists()
    with run_lock(out, "loop"):  # free again
        pass


@pytest.fixture(scope="module")
def model_and_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    _, _, d = digits_model(root / "model.pt", epochs=3, metadata={"input_shape": [1, 8, 8], "dataset": "digits"})
    np.save(root / "pool.npy", d.x_test[:60].numpy())
    return root / "model.pt", root / "pool.npy"


def _command(command, model, pool, out, *extra):
    if command == "acquire":
        return ["acquire", "--model", model, "--pool", pool, "--k", 50, "--strategy", "margin", "--out", out,
                "--device", "cpu", *extra]
    return ["confidence", "--model", model, "--data", pool, "--out", out, "--device", "cpu", *extra]


@pytest.mark.parametrize("what", ["model truncated", "model garbage", "pool truncated", "pool garbage"])
@pytest.mark.parametrize("command", ["acquire", "confidence"])
def test_damaged_inputs(model_and_pool, tmp_path, command, what):
    """The single-file commands' analogue of a damaged store: their inputs. No output is written."""
    model, pool = model_and_pool
    target = {"model": model, "pool": pool}[what.split()[0]]
    bad = tmp_path / f"bad{target.suffix}"
    data = target.read_bytes()
    bad.write_bytes(data[:len(data) // 2] if what.endswith("truncated") else b"\x00garbage" * 500)
    args = (bad, pool) if what.startswith("model") else (model, bad)
    out = tmp_path / "out.csv"
    r = _invoke(*_command(command, *args, out))
    one_line_error(r, str(bad.name))
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("command", ["acquire", "confidence"])
def test_disk_full(model_and_pool, tmp_path, command):
    """A write past the file-size limit: one line naming the file, exit 1, no output, no temporary left."""
    out = tmp_path / "batch.jsonl"
    r = subprocess.run(cli(*_command(command, *model_and_pool, out)), capture_output=True, text=True, timeout=120,
                       preexec_fn=fsize_limit(1024))
    one_line_failure(r, f"cannot write {out}")
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("command", ["replicate", "loop", "acquire", "confidence"])
def test_unwritable_output(model_and_pool, tmp_path, command):
    """An output path that cannot be created (a file stands where its folder should be)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    if command in ("replicate", "loop"):
        r = _invoke(command, "--out", blocker / "sub", *ARGS[command])
    else:
        r = _invoke(*_command(command, *model_and_pool, blocker / "sub" / "out.csv"))
    one_line_error(r, "cannot create output folder")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
@pytest.mark.parametrize("command", ["acquire", "confidence"])
def test_read_only_folder(model_and_pool, tmp_path, command):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        one_line_error(_invoke(*_command(command, *model_and_pool, folder / "out.csv")), "not writable")
    finally:
        folder.chmod(0o755)


# SIGKILL while outputs are written ----------------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from jacal._internal.io import atomic_open, atomic_path
out, n = Path(sys.argv[1]), int(sys.argv[2])
fig, ax = plt.subplots()
ax.plot(range(2000))
print("ready", flush=True)
for i in range(1, 10**9):
    line = f"{i:08d}" + "x" * 91 + "\\n"
    with atomic_open(out / "rows.csv", "w") as f:  # acquire's and confidence's batch files, curves.csv
        for _ in range(n):
            f.write(line)
    with atomic_path(out / "figure.png") as tmp:  # every figure
        fig.savefig(tmp, format="png")
"""


def _check_whole(out, n):
    text = (out / "rows.csv").read_text() if (out / "rows.csv").exists() else None
    if text is not None:
        lines = text.splitlines()
        assert len(lines) == n and len(set(lines)) == 1, "a half-written or mixed batch file"
    if (out / "figure.png").exists():
        from PIL import Image

        data = (out / "figure.png").read_bytes()
        assert data.endswith(b"IEND\xaeB`\x82"), "a half-written figure"
        with Image.open(out / "figure.png") as im:
            im.verify()


def test_kill_while_writing(tmp_path):
    """The writers every command uses (atomic_open, atomic_path): SIGKILLed at random moments while
    writing, the file on disk is always an old complete one or a new complete one."""
    n = 20000  # 2 MB per batch file: most kills land inside a write
    rng = random.Random(4)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_whole(tmp_path, n)
    assert (tmp_path / "rows.csv").exists()


@pytest.mark.parametrize("command", ["replicate", "loop"])
def test_kill_while_reports_are_written(uninterrupted, tiny, tmp_path, command):
    """A finished store resumed and killed at random moments (so while its reports and figures are
    rewritten): each output is the complete old file or the complete new one; the next run cleans up."""
    source = {"replicate": uninterrupted, "loop": tiny}[command][0]
    out = tmp_path / "out"
    shutil.copytree(source, out)
    reference = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".md", ".csv")}
    cmd = cli(command, "--out", out, *ARGS[command], "--resume")
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name, data in reference.items():
            assert (out / name).read_bytes() == data, f"{name} changed or was half-written"
        for png in out.glob("*.png"):
            assert png.read_bytes().endswith(b"IEND\xaeB`\x82"), f"{png.name} was half-written"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not list(out.glob(".*.tmp"))


# Ctrl-C ---------------------------------------------------------------------------------------------

def _bytes_read(pid):
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


@pytest.fixture(scope="module")
def startup_read():
    """Bytes a fresh `jacal` process reads while importing itself (Linux /proc accounting)."""
    code = "import jacal.cli.app; print(open('/proc/self/io').read().split()[1])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _maps(pid, path):
    """Whether process ``pid`` has ``path`` memory-mapped."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return str(path) in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/PID/io")
@pytest.mark.parametrize("command", ["acquire", "confidence"])
def test_ctrl_c(model_and_pool, startup_read, tmp_path, command):
    """Ctrl-C during scoring: exit 130, one line, no output file and no temporary left behind."""
    model, _ = model_and_pool
    pool = tmp_path / "big.npy"
    np.save(pool, np.random.default_rng(0).random((200_000, 1, 8, 8), dtype=np.float32))
    out = tmp_path / "out.jsonl"
    extra = ["--method", "jacobian"] if command == "confidence" else []
    args = _command(command, model, pool, out, *extra)
    if command == "acquire":
        args[args.index("--k") + 1] = 100_000
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # past start-up (a Ctrl-C during Python's imports is Python's to report): the child has read
    # what its imports read plus the pool (confidence), or memory-mapped the pool (acquire reads a
    # .npy pool through a map, which /proc/PID/io does not count), so it is inside the command,
    # scoring for seconds more
    deadline = time.time() + 60
    while (_bytes_read(proc.pid) < startup_read + pool.stat().st_size and not _maps(proc.pid, pool)
           and time.time() < deadline):
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "error: interrupted; no output was written", err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
