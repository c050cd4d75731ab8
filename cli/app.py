"""``jacal``: measure how sensitive trained classifiers are to their input.

A thin typer layer: every command parses options, calls the library, and prints a summary
(or JSON with ``--json``). Errors are one line on stderr with exit code 1.
"""
from __future__ import annotations

import typer

from ._common import JacalGroup
from ._labeling import acquire, confidence
from ._loop import loop
from ._replicate import replicate
from ._train import score, train

app = typer.Typer(
    name="jacal",
    cls=JacalGroup,
    help="Input-output sensitivity of trained classifiers: per-point Jacobian norms and linear-region "
         "transitions (Novak et al. 2018), the paper's replication, and Jacobian-based active learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (train, score, replicate, acquire, confidence, loop):  # the order of `jacal --help`
    app.command()(command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
