"""The README stays true: it documents every recipe key and every command."""
from __future__ import annotations

from dlrecipe.cli import app
from dlrecipe.recipe import SCHEMA

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_recipe_key_is_documented():
    missing = [k for k in SCHEMA if f"`{k}`" not in README]
    assert not missing, missing


def test_every_command_has_a_section():
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    missing = [n for n in names if f"### dlrecipe {n}" not in README]
    assert not missing, missing


def test_the_key_reference_is_the_schema():
    """The README's key table is what `reference_table()` renders (regenerate it from there after a schema change)."""
    from dlrecipe.recipe import reference_table

    assert reference_table() in README
