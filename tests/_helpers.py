"""Shared test helpers: one-line CLI errors, killing a run part-way."""
import signal
import sqlite3
import subprocess
import time


def one_line_error(result, fragment):
    """The CLI failed with exit code 1 and exactly one ``error: ...`` line naming ``fragment``."""
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in result.output


def kill_after_rows(cmd, db, table, *, min_rows=1, timeout=120):
    """Start ``cmd``, SIGKILL it once ``table`` in sqlite ``db`` has ``min_rows`` rows; return that count.

    Returns None when the run ended (or the time ran out) before it could be killed.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    con = sqlite3.connect(db, timeout=1)
                    n = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    con.close()
                except sqlite3.OperationalError:
                    n = 0
                if n >= min_rows:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return n
            time.sleep(0.01)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
