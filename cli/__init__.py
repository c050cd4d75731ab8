"""The ``jacal`` command line: a thin typer layer over the library (installed as ``jacal.cli``)."""
