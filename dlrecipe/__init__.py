"""dlrecipe: automate the step-by-step recipe for training neural networks (check, overfit, LR, search, curves).

The stable Python surface is the names in `__all__`: `load_recipe`, one function per command (`sanity`, `lr_find`,
`search`, `run`, `train`, `pretrain`, `report`, `predict`, `validate`, in dlrecipe/api.py), the `Result` they return, `Recipe`,
`EXIT_CODES` and the errors they raise. Everything else may change between versions. Names are loaded on first
use, so that `import dlrecipe` (and `dlrecipe --help`) does not import torch.

Seven of the functions share their name with the module that implements the command (dlrecipe/train.py, ...):
`dlrecipe.train` is a `Command`, the API function when called and that module for any attribute, so both
`dlrecipe.train(recipe)` and `from dlrecipe import train as T; T.train_in` keep working.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_NAMES = {
    "load_recipe": "api", "run": "api", "validate": "api",
    "Result": "contract", "EXIT_CODES": "contract",
    "Recipe": "recipe",
    "UserError": "errors", "RecipeError": "errors", "DataError": "errors",
}
_COMMANDS = ("sanity", "lr_find", "search", "train", "pretrain", "report", "predict")  # also module names

__all__ = ["__version__", "load_recipe", "sanity", "lr_find", "search", "run", "train", "pretrain", "report", "predict",
           "validate", "Result", "EXIT_CODES", "Recipe", "UserError", "RecipeError", "DataError"]


class Command:
    """`dlrecipe.<command>`: calling it runs the API function; any attribute is the same-named module's."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def _function(self):
        return getattr(importlib.import_module(".api", __name__), self._name)

    def __call__(self, *args, **kwargs):
        return self._function()(*args, **kwargs)

    @property
    def __wrapped__(self):  # inspect.signature(dlrecipe.train) and help() show the API function's
        return self._function()

    @property
    def __doc__(self):
        return self._function().__doc__

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(f".{self._name}", __name__), attr)

    def __setattr__(self, attr: str, value) -> None:  # monkeypatching the module through this name still works
        setattr(importlib.import_module(f".{self._name}", __name__), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(importlib.import_module(f".{self._name}", __name__), attr)

    def __repr__(self) -> str:
        return f"<dlrecipe.{self._name}: the API function when called, the dlrecipe.{self._name} module's attributes>"


_COMMAND_OBJECTS = {name: Command(name) for name in _COMMANDS}


class _Package(types.ModuleType):
    """The dlrecipe package: importing the module dlrecipe.train must not replace the function dlrecipe.train."""


for _name in _COMMANDS:
    setattr(_Package, _name, property(lambda self, n=_name: _COMMAND_OBJECTS[n],
                                      lambda self, value, n=_name: None))  # the submodule stays in sys.modules
sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'dlrecipe' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
