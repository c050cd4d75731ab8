"""Shared CLI plumbing: one-line errors with exit code 1, warnings, progress bars, JSON output."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperGroup

from jacal._internal.validation import JacalError, first_line

try:  # typer ≥ 0.20 vendors click as typer._click; older typer depends on click itself
    from typer._click import exceptions as click_exceptions, globals as click_globals
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions, globals as click_globals

_NO_ARGS = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click ≥ 8.2

stderr = Console(stderr=True)

USER_ERRORS = (JacalError, ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError)


# commands whose work is committed as it goes and continues with --resume
RESUMABLE = ("replicate", "loop")

#: library parameters whose flag is spelled differently from the parameter (a command's own
#: parameters are found on the command)
FLAG_OF = {"root": "--data-root", "question": "--from-name", "field": "--to-name", "fmt": "--format",
           "embedding_layer": "--embedding-layer"}
_PARAM = re.compile(r"`(\w+)(?:=([^`]*))?`")


def as_flags(message: str, command: Any = None) -> str:
    """``message`` with each `` `parameter` `` (or `` `parameter=value` ``) that ``command`` takes as an
    option written as its flag: the library names its parameters, the CLI its flags.

    >>> as_flags("data root /d does not exist; pass an existing `root`, or `fmt='csv'`; `k` stays")
    'data root /d does not exist; pass an existing --data-root, or --format csv; `k` stays'
    """
    flags = dict(FLAG_OF)
    for param in getattr(command, "params", ()):
        long = [o for o in param.opts if o.startswith("--")]
        if long:
            flags[param.name] = long[0]

    def flag(m: "re.Match") -> str:
        name, value = m.group(1), m.group(2)
        if name not in flags:
            return m.group(0)
        if value is None or value == "True":
            return flags[name]
        return f"{flags[name]} {value.strip(chr(39) + chr(34))}"

    return _PARAM.sub(flag, message)


class Interrupted(Exception):
    """Ctrl-C inside a command (carried past the CLI framework, which would swallow the message)."""

    def __init__(self, command: Optional[str]) -> None:
        super().__init__(command)
        self.command = command


class JacalGroup(TyperGroup):
    """Runs commands so that every user error is one line on stderr and exit code 1, Ctrl-C exit code 130."""

    def invoke(self, ctx):  # noqa: D102
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted(ctx.invoked_subcommand) from None
        except USER_ERRORS as err:  # the library names its parameters; say the command's flags instead
            message = first_line(err, None)
            flagged = as_flags(message, self.commands.get(ctx.invoked_subcommand or ""))
            if flagged == message or os.environ.get("JACAL_DEBUG"):
                raise
            raise JacalError(flagged) from err

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _NO_ARGS as err:  # `jacal` alone: show help
            typer.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click_exceptions.ClickException as err:  # usage errors: unknown option, bad choice...
            typer.echo(f"error: {err.format_message()}", err=True)
            sys.exit(1)
        except Interrupted as err:
            if err.command in RESUMABLE:
                typer.echo("error: interrupted; finished work is saved, rerun with --resume to continue", err=True)
            else:
                typer.echo("error: interrupted; no output was written", err=True)
            sys.exit(130)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except USER_ERRORS as err:
            if os.environ.get("JACAL_DEBUG"):
                raise
            msg = first_line(err, None)
            typer.echo(f"error: {msg}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def fail(message: str) -> None:
    """Stop the command with a one-line error."""
    raise JacalError(message)


def warn(text: str) -> None:
    """One ``warning: ...`` line on stderr (the library's parameter names written as the command's flags)."""
    ctx = click_globals.get_current_context(silent=True)
    typer.echo(f"warning: {as_flags(text, ctx.command if ctx is not None else None)}", err=True)


#: with stdout not a terminal (a log file, nohup, CI), a plain progress line there at most this
#: often (seconds; the ``JACAL_PROGRESS_SECONDS`` environment variable sets it)
PROGRESS_SECONDS = 30.0
#: result tables on stdout that is not a terminal are laid out this wide, so none is cut or wrapped
LOG_WIDTH = 400


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _LoggedProgress(Progress):
    """A rich ``Progress`` that also writes one plain line of its state to stdout at most every
    ``every`` seconds (``None``: never): ``[12:03:04] models 57/228 (25%) · mnist g3: 1200/2000 (60%) ·
    5m12s elapsed, about 15m36s left`` (the time left extrapolates the first task)."""

    def __init__(self, *columns: Any, every: Optional[float], **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.every = every
        self.started_at: Optional[float] = None
        self.last_line: Optional[float] = None
        self.lines = 0

    def update(self, task_id: Any, **kwargs: Any) -> None:  # noqa: D102
        super().update(task_id, **kwargs)
        self.tick()

    def advance(self, task_id: Any, advance: float = 1) -> None:  # noqa: D102
        super().advance(task_id, advance)
        self.tick()

    def tick(self, force: bool = False) -> None:
        """Write a line if ``every`` seconds passed since the last one (or the start), or ``force``."""
        if self.every is None:
            return
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = self.last_line = now
        if force or now - self.last_line >= self.every:
            self.last_line = now
            self.lines += 1
            typer.echo(self.line(now))

    def line(self, now: float) -> str:
        parts, left = [], None
        for task in self.tasks:
            if task.total:
                parts.append(f"{task.description} {int(task.completed)}/{int(task.total)} "
                              f"({task.completed / task.total:.0%})")
                if left is None and task.completed > 0:
                    left = (now - self.started_at) * (task.total - task.completed) / task.completed
            elif task.description:
                parts.append(task.description)
        elapsed = f"{_duration(now - self.started_at)} elapsed"
        if left is not None:
            elapsed += f", about {_duration(left)} left"
        return f"[{time.strftime('%H:%M:%S')}] " + " · ".join(parts + [elapsed])


class LazyProgress:
    """A progress display that starts at its first use: a rich bar on stderr when it is a terminal,
    and, when stdout is not one (a log file, nohup, CI), a plain line there at most every
    :data:`PROGRESS_SECONDS` seconds, so a log shows how far a long run is. stderr keeps only
    warnings and the one-line error.

    Starting lazily keeps an error raised before any progress a single clean line.
    """

    def __init__(self, *columns, enabled: bool = True) -> None:
        columns = columns or (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn())
        drawn = enabled and stderr.is_terminal
        every = float(os.environ.get("JACAL_PROGRESS_SECONDS", PROGRESS_SECONDS))
        logged = enabled and not sys.stdout.isatty()
        self.progress = _LoggedProgress(*columns, console=stderr, transient=True, disable=not drawn,
                                        every=every if logged else None)
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def begin(self, task: Any, total: Optional[int], completed: int = 0) -> None:
        """Start the display (call it once the inputs are validated) with ``task`` at ``completed`` of ``total``."""
        self.start()
        self.progress.update(task, total=total, completed=completed)

    def stop(self) -> None:
        if self.started:
            if self.progress.lines:  # a log that had progress lines ends with the final state
                self.progress.tick(force=True)
            self.progress.stop()


def stdout_console() -> Console:
    """The console for result tables: the terminal's width on a terminal; elsewhere (a log file, a
    pipe, CI) :data:`LOG_WIDTH` columns, so a table keeps one line per row instead of being cut to 80."""
    console = Console()
    return console if console.is_terminal else Console(width=LOG_WIDTH)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr (see :class:`LazyProgress`); yields ``update(done, total)``."""
    lazy = LazyProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), enabled=enabled)
    task = lazy.progress.add_task(description, total=total)

    try:
        yield lambda done, tot: lazy.begin(task, tot, done)
    finally:
        lazy.stop()


def per_file_text(counts: dict) -> str:
    """``"a.csv: 10, export.json: 40"``: how many ids each annotation file named."""
    return ", ".join(f"{os.path.basename(f)}: {n}" for f, n in counts.items())


def excluded_text(summary: dict) -> str:
    """``"46 excluded (a.csv: 10, export.json: 40; 3 'none of these')"`` for an acquire summary."""
    text = f"{summary['excluded']} excluded"
    if len(summary.get("excluded_per_file") or {}) > 1 or summary.get("out_of_set"):
        parts = [per_file_text(summary["excluded_per_file"])] if len(summary["excluded_per_file"]) > 1 else []
        if summary.get("out_of_set"):
            parts.append(f"{summary['out_of_set']} 'none of these'")
        text += f" ({'; '.join(parts)})"
    return text


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=float))
