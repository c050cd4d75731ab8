"""The docs site's generated references cover the code: every public name in the API reference, every
command and option in the CLI reference, and every page the nav names exists."""
import importlib.util
import re
from pathlib import Path

import pytest
import typer.main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "_hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_renders_every_name_of_every_public_all(reference):
    pages = reference.render_pages()
    text = "\n".join(pages.values())
    rendered = set(re.findall(r"^::: (\S+)$", text, flags=re.M))
    modules = reference.public_modules()
    assert {m.__name__ for m in modules} >= {"jacal", "jacal.acquisition", "jacal.io", "jacal.confidence",
                                               "jacal.sensitivity", "jacal.serve", "jacal.loop", "jacal.replication"}
    for mod in modules:
        for name in mod.__all__:
            obj = getattr(mod, name)
            # rendered once, at a module that exports this very object
            owners = [p for p in rendered if p.rsplit(".", 1)[-1] == name
                      and getattr(importlib.import_module(p.rsplit(".", 1)[0]), name, None) is obj]
            assert owners, f"{mod.__name__}.{name} is in __all__ but no API page renders it"
            page = pages[reference.page_name(mod.__name__)] if reference.page_name(mod.__name__) in pages else ""
            if mod.__name__ == "jacal":
                assert f"`jacal.{name}`" in page, f"jacal.{name} is missing from the jacal page"


def test_api_reference_renders_each_object_once(reference):
    rendered = re.findall(r"^::: (\S+)$", "\n".join(reference.render_pages().values()), flags=re.M)
    members = [p for p in rendered if p != "jacal" and not any(p == m.__name__ for m in reference.public_modules())]
    assert len(members) == len(set(members))


def test_cli_reference_lists_every_command_and_option(reference):
    from jacal.cli.app import app

    page = reference.render_cli()
    group = typer.main.get_command(app)
    assert group.commands, "the app has no commands"
    for name, command in group.commands.items():
        assert f"## `jacal {name}`" in page, f"jacal {name} is missing from the CLI reference"
        section = page.split(f"## `jacal {name}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if getattr(param, "hidden", False):  # a hidden alias is left out of --help and the reference alike
                continue
            for opt in param.opts:
                if opt.startswith("-"):
                    assert f"`{opt}" in section, f"jacal {name} {opt} is missing from the CLI reference"


def test_every_nav_page_exists():
    nav = re.findall(r"^\s*-\s*(?:[^:#\n]+:\s*)?([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert "index.md" in nav and "api/index.md" in nav
    for page in nav:
        if page not in ("api/index.md", "cli.md"):  # generated at build time
            assert (ROOT / "docs" / page).exists(), f"mkdocs.yml's nav names docs/{page}, which does not exist"
