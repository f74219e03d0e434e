"""The user's own Python code named by a recipe: `model.factory` and data hooks (`data.source`).

A spec is 'package.module:function' or 'path/to/file.py:function'. A module is looked for beside the recipe file,
then in the working folder, then on sys.path; a file path relative to the working folder, then to the recipe's
folder. Import failures are one-line RecipeErrors naming the key and the spec.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import RecipeError

SPEC = re.compile(r"^(?P<module>[^:]+(?:\.py)?):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_spec(text: str) -> bool:
    """'pkg.mod:func' or 'file.py:func' (a data file path has no ':function' part)."""
    m = SPEC.match(text)
    return bool(m) and (MODULE.match(m["module"]) is not None or m["module"].endswith(".py"))


def load_callable(spec: str, key: str, recipe_path: Path | None = None) -> Callable:
    """The function a spec names; RecipeError naming `key` when it cannot be imported or is not callable."""
    m = SPEC.match(spec)
    if not m or not is_spec(spec):
        raise RecipeError(f"{key} = {spec!r} is not allowed: expected 'package.module:function' or "
                          f"'path/to/file.py:function'")
    module_name, func_name = m["module"], m["func"]
    try:
        if module_name.endswith(".py"):
            module = _import_file(module_name, recipe_path)
        else:
            module = _import_module(module_name, recipe_path)
        func = getattr(module, func_name)
    except RecipeError as e:
        raise RecipeError(f"{key} = {spec!r}: {e}") from None
    except AttributeError:
        raise RecipeError(f"{key} = {spec!r}: module {module_name!r} has no function {func_name!r}") from None
    except Exception as e:  # noqa: BLE001 -- ImportError, or the module's own code raising on import
        raise RecipeError(f"{key} = {spec!r} cannot be imported: {type(e).__name__}: {e}") from None
    if not callable(func):
        raise RecipeError(f"{key} = {spec!r}: {func_name} is a {type(func).__name__}, not a function")
    return func


def _import_file(name: str, recipe_path: Path | None):
    candidates = [Path(name)]
    if recipe_path is not None and not Path(name).is_absolute():
        candidates.append(Path(recipe_path).parent / name)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise RecipeError(f"no such file (looked in {', '.join(str(p.parent.resolve()) for p in candidates)})")
    path = path.resolve()
    mod_name = f"dlrecipe_user_{abs(hash(str(path)))}_{path.stem}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent))  # the file's own imports of its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import_module(name: str, recipe_path: Path | None):
    extra = [str(Path(recipe_path).parent.resolve())] if recipe_path is not None else []
    extra.append(str(Path.cwd()))
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(name)
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def code_it_runs(recipe) -> list[str]:
    """The user's functions a recipe imports and runs, as 'mymodule.make (model.factory)': a recipe is data, but
    these two keys name Python code, which a user running a recipe from elsewhere should see before it runs."""
    from .data import is_hook

    named = []
    if recipe["model.kind"] == "python" and is_spec(recipe["model.factory"]):
        named.append((recipe["model.factory"], "model.factory"))
    if is_hook(recipe["data.source"], recipe.path):
        named.append((recipe["data.source"], "data.source"))
    out = []
    for spec, key in named:
        module, func = SPEC.match(spec).group("module", "func")
        out.append(f"{module}:{func} ({key})" if module.endswith(".py") else f"{module}.{func} ({key})")
    return out
