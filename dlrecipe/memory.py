"""Objects handed to the Python API (a model, a DataFrame, arrays, a Dataset), reachable from a recipe by name.

The API registers each object here under a fresh name and writes the recipe as `data.source =
"dlrecipe.memory:data_<token>"` (a data hook) and `model.kind = "python"`, `model.factory =
"dlrecipe.memory:model_<token>"` (a model factory), so the data and model code paths are the ones a recipe file
takes, and the recipe.toml in the run folder says where its data and model came from. The names live as long as
the Python process: in another process they are a one-line error saying so.
"""
from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from typing import Any

from .errors import RecipeError

MODULE = "dlrecipe.memory"
_DATA: dict[str, Any] = {}
_MODELS: dict[str, Any] = {}


def register_data(obj: Any) -> str:
    """A data hook spec whose function returns `obj` ((x, y), a DataFrame, a Dataset or a dict of splits)."""
    name = f"data_{secrets.token_hex(4)}"
    _DATA[name] = obj
    return f"{MODULE}:{name}"


def register_model(obj: Any) -> str:
    """A model factory spec: a copy of the nn.Module `obj` for every model built, or what the zero-argument
    callable `obj` returns (a fresh model per search trial)."""
    name = f"model_{secrets.token_hex(4)}"
    _MODELS[name] = obj
    return f"{MODULE}:{name}"


def describe(obj: Any) -> str:
    """A few words for the run's recipe.toml: what was passed, e.g. 'DataFrame 344x8', 'MyNet (nn.Module)'."""
    shape = getattr(obj, "shape", None)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return f"(x, y) with x of shape {list(getattr(obj[0], 'shape', [len(obj[0])]))}"
    if isinstance(obj, dict):
        return "splits " + ", ".join(f"{k}: {describe(v)}" for k, v in obj.items())
    if shape is not None:
        return f"{type(obj).__name__} {'x'.join(map(str, shape))}"
    if callable(obj) and not hasattr(obj, "forward"):
        return f"{getattr(obj, '__name__', type(obj).__name__)}() (a model factory)"
    kind = "nn.Module" if hasattr(obj, "forward") else "Dataset" if hasattr(obj, "__getitem__") else "object"
    size = f" of {len(obj)} items" if kind == "Dataset" and hasattr(obj, "__len__") else ""
    return f"{type(obj).__name__} ({kind}){size}"


def _data_hook(obj: Any) -> Callable:
    def hook(cfg: dict, seed: int) -> Any:  # the signature of a recipe's data hook
        return obj
    return hook


def _model_factory(obj: Any, name: str) -> Callable:
    def factory(input_shape, num_outputs, **kwargs):  # the signature of a recipe's model.factory
        from torch import nn

        if isinstance(obj, nn.Module):
            return copy.deepcopy(obj)  # never the caller's own object: training it would change their model
        model = obj()
        if not isinstance(model, nn.Module):
            raise RecipeError(f"the model callable {getattr(obj, '__name__', name)} returned "
                              f"{type(model).__name__}, not a torch.nn.Module")
        return model
    return factory


def __getattr__(name: str) -> Callable:
    if name in _DATA:
        return _data_hook(_DATA[name])
    if name in _MODELS:
        return _model_factory(_MODELS[name], name)
    if name.startswith(("data_", "model_")):
        raise RecipeError(f"{name} was an object passed to dlrecipe's Python API in another Python process; it "
                          f"exists only there (load the model from model.pt in that session, or pass it again)")
    raise AttributeError(f"module {MODULE!r} has no attribute {name!r}")
