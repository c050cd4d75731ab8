"""``jacal``: measure how sensitive trained classifiers are to their input.

A thin typer layer: every command parses options, calls the library, and prints a summary
(or JSON with ``--json``). Errors are one line on stderr with exit code 1.
"""
from __future__ import annotations

from typing import Annotated

import typer

from ._common import JacalGroup
from ._labeling import acquire, confidence
from ._loop import loop
from ._replicate import replicate
from ._serve import serve
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

def _version(value: bool) -> None:
    if value:
        import jacal

        typer.echo(f"jacal {jacal.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print jacal's version and exit.")] = False) -> None:
    """Input-output sensitivity of trained classifiers: per-point Jacobian norms and linear-region transitions
    (Novak et al. 2018), the paper's replication, and Jacobian-based active learning."""


for command in (train, score, replicate, acquire, confidence, loop, serve):  # the order of `jacal --help`
    app.command()(command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
