"""MkDocs hook: the CLI and API reference pages, generated when the site is built.

The CLI reference is typer's own Markdown generator (``typer utils docs``), run in this process on
``jacal.cli.app``: every command, argument and option with its help and default.

The API reference comes from each public module's ``__all__``.

A public module is one under ``jacal`` whose dotted path has no ``_``-prefixed part and that defines
``__all__`` (the CLI package is documented by the CLI reference instead). Each public name is rendered
once, by mkdocstrings, on the page of the module that defines it (or, for a re-export from a private
module, the shallowest public module that exports it); every other page that exports the same object
links to that entry. So the reference cannot fall behind ``__all__``: a new name appears, a removed
one disappears, and ``tests/project/test_docs.py`` checks the pages against ``__all__``.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

PACKAGE = "jacal"
SKIP = ("jacal.cli",)
API_DIR = "api"


def public_modules() -> list[ModuleType]:
    """Every public module of the package that declares ``__all__``, ``jacal`` first, then by path."""
    root = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(root.__path__, prefix=PACKAGE + "."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or info.name.startswith(SKIP):
            continue
        names.append(info.name)
    mods = [importlib.import_module(n) for n in names]
    return [m for m in mods if hasattr(m, "__all__")]


def _key(name: str, obj: object) -> tuple:
    # the name too: small ints and interned strings are shared by unrelated constants
    return name, id(obj)


def _canonical(modules: list[ModuleType]) -> dict[tuple, str]:
    """(name, id(object)) -> the dotted path of the one entry that renders it: its shallowest public exporter.

    ``jacal`` itself is left out (its page is an index of links), so ``jacal.acquire`` is rendered as
    ``jacal.acquisition.acquire``, where a reader of that package looks for it.
    """
    exporters: dict[tuple, list[str]] = {}
    for mod in modules:
        if mod.__name__ == PACKAGE:
            continue
        for name in mod.__all__:
            exporters.setdefault(_key(name, getattr(mod, name)), []).append(f"{mod.__name__}.{name}")
    return {key: min(paths, key=lambda p: (p.count("."), p)) for key, paths in exporters.items()}


def documented_modules() -> list[ModuleType]:
    """The modules that get a page: ``jacal`` and every module that renders at least one name."""
    modules = public_modules()
    canon = set(_canonical(modules).values())
    return [m for m in modules
            if m.__name__ == PACKAGE or any(f"{m.__name__}.{n}" in canon for n in m.__all__)]


def page_name(module: str) -> str:
    return f"{API_DIR}/{module}.md"


def render_pages() -> dict[str, str]:
    """``{page path under docs/: markdown}`` for every public module, and the reference's index."""
    modules = public_modules()
    canon = _canonical(modules)
    shown = {m.__name__ for m in documented_modules()}
    pages = {}
    for mod in modules:
        if mod.__name__ not in shown:
            continue
        lines = [f"# `{mod.__name__}`", ""]
        if mod.__name__ == PACKAGE:
            lines += ["::: jacal", "    options:", "      members: false", "      show_root_heading: false", ""]
            lines += ["Every name here is also importable as `jacal.<name>`; each links to its entry.", "",
                      "| name | documented at |", "|---|---|"]
            own = []  # exported by jacal alone (defined in a private module): rendered on this page
            for name in mod.__all__:
                target = canon.get(_key(name, getattr(mod, name))) or f"jacal.{name}"
                if target == f"jacal.{name}":
                    own.append(name)
                lines.append(f"| `jacal.{name}` | [`{target}`][{target}] |")
            for name in own:
                lines += ["", f"::: jacal.{name}", "    options:", "      show_root_heading: true",
                          "      show_root_full_path: true", "      heading_level: 2"]
        else:
            parent, _, leaf = mod.__name__.rpartition(".")
            if leaf in getattr(importlib.import_module(parent), "__all__", ()):
                # the package exports a function of the module's name (jacal.sensitivity.transitions):
                # the path names that function, so the module's docstring is shown as text
                lines += [inspect.cleandoc(mod.__doc__ or ""), ""]
            else:
                lines += [f"::: {mod.__name__}", "    options:", "      members: false",
                          "      show_root_heading: false", ""]
            for name in mod.__all__:
                path = f"{mod.__name__}.{name}"
                target = canon[_key(name, getattr(mod, name))]
                if target == path:
                    lines += [f"::: {path}", "    options:", "      show_root_heading: true",
                              "      show_root_full_path: true", "      heading_level: 2", ""]
                else:
                    lines += [f"## `{name}`", "", f"Exported here too; documented at [`{target}`][{target}].", ""]
        pages[page_name(mod.__name__)] = "\n".join(lines) + "\n"
    index = ["# API reference", "",
             "Generated from each public module's `__all__` and docstrings. "
             "The common names are also importable from `jacal` itself.", "",
             "| module | what it holds |", "|---|---|"]
    for mod in modules:
        if mod.__name__ not in shown:
            continue
        summary = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
        index.append(f"| [`{mod.__name__}`]({mod.__name__}.md) | {summary.replace('|', '/')} |")
    pages[f"{API_DIR}/index.md"] = "\n".join(index) + "\n"
    return pages


def render_cli() -> str:
    """The CLI reference page: typer's generator over ``jacal.cli.app``, under a short preface."""
    import typer
    import typer.cli
    import typer.main

    from jacal.cli.app import app

    command = typer.main.get_command(app)
    body = typer.cli.get_docs_for_click(obj=command, ctx=typer.Context(command), name="jacal", title="CLI reference")
    for name, sub in command.commands.items():  # typer cuts each summary at 45 characters: link the whole line
        first = (sub.help or "").strip().split("\n\n")[0].replace("\n", " ")
        body = re.sub(rf"^\* `{name}`: .*$", lambda _: f"* [`{name}`](#jacal-{name}): {first}", body, count=1, flags=re.M)
    head, _, rest = body.partition("\n\n")
    preface = ("Generated from jacal's typer app (`jacal.cli.app`) each time the site is built, so it lists "
               "every command and option of this version. Every command also answers `--help`, prints a "
               "summary line (or JSON with `--json`) and reports bad input as one line on stderr with exit "
               "code 1.")
    return f"{head}\n\n{preface}\n\n{rest.strip()}\n"


def on_config(config):
    """Expand the nav entry ``api/index.md`` into the reference's section, one page per module."""
    pages = ["api/index.md"] + [page_name(m.__name__) for m in documented_modules()]

    def expand(items):
        out = []
        for item in items:
            if isinstance(item, dict):
                (title, value), = item.items()
                if value == "api/index.md":
                    item = {title: pages}
                elif isinstance(value, list):
                    item = {title: expand(value)}
            out.append(item)
        return out

    config["nav"] = expand(config["nav"])
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "cli.md", content=render_cli()))
    for path, text in render_pages().items():
        files.append(File.generated(config, path, content=text))
    return files
