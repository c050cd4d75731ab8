"""Shared test helpers: one-line CLI errors, the tiny runs, and faults (kills, Ctrl-C, a full disk)."""
import random
import resource
import signal
import sqlite3
import struct
import subprocess
import sys
import time

import numpy as np

REPLICATE_TINY = ["--c2-seeds", "1", "--c2-ellipses", "6", "--groups", "3", "--models-per-group", "2", "--pairs", "2", "--steps", "400", "--device", "cpu"]
LOOP_TINY = ["--strategies", "jacobian,margin", "--rounds", "2", "--seeds", "1", "--k", "7", "--max-epochs", "30",
             "--device", "cpu"]
INTERRUPTED_RESUMABLE = "error: interrupted; finished work is saved, rerun with --resume to continue"


def one_line_error(result, fragment):
    """The CLI failed with exit code 1 and exactly one ``error: ...`` line naming ``fragment``."""
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in result.output


def one_line_failure(proc, fragment, code=1):
    """Like :func:`one_line_error` for a ``subprocess.CompletedProcess`` with text output."""
    err = proc.stderr
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


def cli(*args):
    """The command line that runs ``jacal ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "jacal.cli.app", *map(str, args)]


def fsize_limit(nbytes):
    """``preexec_fn`` for a child that may write at most ``nbytes`` per file: a disk that fills up.

    SIGXFSZ is ignored so that a write past the limit fails with EFBIG instead of killing the child.
    """
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


def count_rows(db, table):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or mid-transaction
        return 0


def integrity(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def signal_after_rows(cmd, db, table, sig, *, min_rows=1, timeout=120):
    """Start ``cmd``; once ``table`` in ``db`` has ``min_rows`` rows send ``sig`` and wait for the end.

    Returns ``(rows when signalled, a CompletedProcess with its stderr text)``, or ``(None, proc)`` when the
    run ended (or the time ran out) before it could be signalled.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    n = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists() and count_rows(db, table) >= min_rows:
                n = count_rows(db, table)
                proc.send_signal(sig)
                break
            time.sleep(0.01)
        _, err = proc.communicate(timeout=timeout)
        return n, subprocess.CompletedProcess(cmd, proc.returncode, None, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_after_rows(cmd, db, table, *, min_rows=1, timeout=120):
    """Start ``cmd``, SIGKILL it once ``table`` in sqlite ``db`` has ``min_rows`` rows; return that count."""
    return signal_after_rows(cmd, db, table, signal.SIGKILL, min_rows=min_rows, timeout=timeout)[0]


def kill_at_random_moment(cmd, rng: random.Random, low: float, high: float):
    """Start ``cmd`` and SIGKILL it after a uniform random delay in [low, high] s; True if it was killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=rng.uniform(low, high))
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def write_idx(path, arr):
    """An IDX file as torchvision's MNIST reader expects it (unsigned bytes)."""
    arr = np.asarray(arr, dtype=np.uint8)
    code = 0x08
    header = struct.pack(">HBB", 0, code, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    path.write_bytes(header + arr.tobytes())


def fake_mnist_family(root, folder, n_train=20, n_test=10):
    """Random images and labels in torchvision's layout under ``root/folder/raw``; returns the arrays."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 256, (n_test, 28, 28))
    y_tr, y_te = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    write_idx(raw / "train-images-idx3-ubyte", x_tr)
    write_idx(raw / "train-labels-idx1-ubyte", y_tr)
    write_idx(raw / "t10k-images-idx3-ubyte", x_te)
    write_idx(raw / "t10k-labels-idx1-ubyte", y_te)
    return x_tr, y_tr, x_te, y_te
