"""Property-based tests of recipe validation (Hypothesis): random keys, types and values give either a clean
one-line RecipeError or a recipe that validates, and a recipe that validates survives its own TOML round trip."""
from __future__ import annotations

import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrecipe.errors import RecipeError
from dlrecipe.recipe import SCHEMA, flatten, load, parse_override, validate

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(  # what a TOML file or --set can hold (TOML has no null)
    st.booleans(), st.integers(-10**6, 10**6), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1), st.text(max_size=12), st.sampled_from(["relu", "adam", "auto", "none", "iris", "max", "val_acc"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
keys = st.one_of(st.sampled_from(sorted(SCHEMA)), st.sampled_from(["train.lrr", "trian.lr", "model.x", "x", ""]),
                 st.text(max_size=15))


def _check(flat: dict) -> None:
    try:
        r = validate(flat)
    except RecipeError as e:
        text = str(e)
        assert text and "\n" not in text  # one line
        return
    # it validated: every value is of its schema type and in range, and the recipe survives TOML
    for key, spec in SCHEMA.items():
        v = r[key]
        if spec.type == "float" and v is not None:
            assert isinstance(v, float) and math.isfinite(v), (key, v)
        if spec.type == "int" and v is not None:
            assert isinstance(v, int) and not isinstance(v, bool), (key, v)
        if spec.choices and v is not None:
            assert all(x in spec.choices for x in (v if isinstance(v, list) else [v])), (key, v)
    again = validate(flatten(tomllib.loads(r.to_toml())))
    assert again.values == r.values


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_random_keys_and_values_validate_or_are_refused_cleanly(extra):
    _check({"data.source": "iris", **extra})


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(k for k in SCHEMA if k != "data.source")), scalars, max_size=5))
def test_known_keys_with_random_scalars(extra):
    _check({"data.source": "iris", **extra})


def _near(key: str):
    """Values of a key's own type around its allowed range (and a few past it): many of these recipes validate."""
    spec = SCHEMA[key]
    if spec.choices:
        one = st.sampled_from([*spec.choices, spec.choices[0] + "x"])
        return st.lists(one, max_size=2) if spec.type.startswith("list") else one
    return {"list[int|str]": st.lists(st.one_of(st.integers(-2, 5), st.text(max_size=4)), max_size=2),
            "int": st.integers(-2, 300), "bool": st.booleans(), "str": st.text(max_size=8),
            "float": st.one_of(st.floats(-0.5, 2.0), st.sampled_from([math.nan, math.inf, 1e-9, 100.0, 1e6])),
            "list[int]": st.lists(st.integers(-1, 64), max_size=3), "list[float]": st.lists(st.floats(0, 1), max_size=3),
            "list[str]": st.lists(st.sampled_from(["hflip", "mixup", "crop", "a", ""]), max_size=2),
            "table": st.just({})}.get(spec.type, values)  # a type added later: any value


SIMPLE = sorted(k for k in SCHEMA if k not in ("data.source", "data.format", "model.factory"))


@FUZZ
@given(st.data())
def test_keys_with_values_of_their_own_type(data):
    chosen = data.draw(st.lists(st.sampled_from(SIMPLE), max_size=6, unique=True))
    _check({"data.source": "iris", **{k: data.draw(_near(k), label=k) for k in chosen}})


@FUZZ
@given(st.text(max_size=40))
def test_random_set_options_parse_or_are_refused(text):
    try:
        key, _ = parse_override(text)
    except RecipeError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(key, str)


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_recipe_files_load_or_are_refused(recipe_dir, content):
    path = recipe_dir / "r.toml"
    path.write_bytes(content)
    try:
        load(path)
    except RecipeError as e:
        assert "\n" not in str(e)
