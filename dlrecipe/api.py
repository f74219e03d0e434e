"""dlrecipe from Python: every command as a function, on a recipe or on the model and data objects of a notebook.

    import dlrecipe
    r = dlrecipe.train("recipes/digits_mlp.toml", overrides={"train.lr": 0.1})
    r = dlrecipe.sanity(model=my_module, data=(x, y), task="classification", lr=0.05)
    r.status, r.exit_code, r.run_dir, r.test_acc, r.summary, r.detail

A recipe is a path, a dict (nested tables or dotted keys) or a `Recipe`; the command-line options are keyword
arguments with the same names; any other keyword argument is a recipe key: `train_lr=0.1` or, where the name is
unique in [data], [model], [train] and [search] (else in the schema), `lr=0.1`. `model=` (an nn.Module, copied
for every model built, never trained in place; or a
zero-argument callable returning a fresh one) and `data=` ((x, y), a DataFrame with `target=`, a torch Dataset,
or a dict of splits) stand in for model.* and data.source (see dlrecipe/memory.py). Functions are silent unless
`progress=True`; bad input raises `dlrecipe.UserError` (RecipeError, DataError); every function returns a
`Result` (dlrecipe/contract.py) with the fields of summary.json and the run folder.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import memory
from .contract import Result, result_of
from .errors import RecipeError, UserError

TOP_KEYS = ("name", "seed", "task", "description")
CORE_SECTIONS = ("data", "model", "train", "search")  # a short keyword looks here first; other tables need a prefix


def _overrides_dict(overrides) -> dict[str, Any]:
    """{"train.lr": 0.1}, ["train.lr=0.1"] or "train.lr=0.1" as a dict of dotted keys."""
    from .recipe import parse_override

    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]
    return dict(parse_override(str(t)) for t in overrides)


def _read_flat(path: Path) -> dict[str, Any]:
    """A recipe file's keys, dotted, before validation (RecipeError when it cannot be read)."""
    import tomllib

    from .recipe import flatten

    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} not found")
    try:
        return flatten(tomllib.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, OSError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"{path}: cannot be read as a TOML recipe ({type(e).__name__}: {e})") from None


def load_recipe(recipe, overrides=None):
    """A validated `Recipe` from a TOML path, a dict (nested tables or dotted keys) or a Recipe, with overrides
    ({"train.lr": 0.1} or ["train.lr=0.1"]) applied; RecipeError naming the key on bad input."""
    from .recipe import Recipe, flatten, validate

    changes = _overrides_dict(overrides)
    if isinstance(recipe, Recipe):
        return recipe.with_values(changes) if changes else recipe
    if isinstance(recipe, Mapping):
        return validate({**flatten(dict(recipe)), **changes})
    if isinstance(recipe, (str, Path)):
        path = Path(recipe)
        flat = {**_read_flat(path), **changes}
        try:
            return validate(flat, path=path)
        except RecipeError as e:
            raise RecipeError(f"{path}: {e}") from None
    raise UserError(f"recipe is {type(recipe).__name__}; expected a path to a TOML file, a dict or a Recipe")


def _key_of(word: str) -> str:
    """A keyword argument as a recipe key: 'train_lr' -> 'train.lr', 'lr' -> 'train.lr' (unique names only)."""
    from .recipe import SCHEMA, SECTIONS, _suggest

    if word in TOP_KEYS:
        return word
    head, _, tail = word.partition("_")
    if head in SECTIONS and f"{head}.{tail}" in SCHEMA:
        return f"{head}.{tail}"
    matches = [k for k in SCHEMA if k.partition(".")[2] == word]
    core = [k for k in matches if k.partition(".")[0] in CORE_SECTIONS]  # lr= is train.lr, not pretrain.lr
    if len(core) == 1:
        return core[0]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RecipeError(f"keyword {word}= is ambiguous: it names {', '.join(matches)}; write "
                          + " or ".join(f"{m.replace('.', '_', 1)}=" for m in matches))
    plain = [k.partition(".")[2] or k for k in SCHEMA]
    raise RecipeError(f"keyword {word}= is neither an option of this function nor a recipe key"
                      f"{_suggest(word, plain)} (`dlrecipe keys` lists every key; write train_lr= for train.lr)")


def _resolve(recipe, *, model=None, data=None, task=None, overrides=None, seed=None, keys: dict | None = None,
             jobs: int | str = "auto"):
    """The Recipe a command runs: the recipe (or none), with model/data objects registered and keys applied."""
    from .recipe import Recipe

    values: dict[str, Any] = {}
    if task is not None:
        values["task"] = task
    if seed is not None:
        values["seed"] = seed
    for word, value in (keys or {}).items():
        values[_key_of(word)] = value
    values.update(_overrides_dict(overrides))
    notes = []
    if data is not None:
        values["data.source"] = memory.register_data(data)
        notes.append(f"data: {memory.describe(data)}")
    if model is not None:
        if not callable(model):
            raise UserError(f"model is {type(model).__name__}; expected a torch.nn.Module or a zero-argument "
                            f"callable that returns one")
        values["model.kind"], values["model.factory"] = "python", memory.register_model(model)
        notes.append(f"model: {memory.describe(model)}")
    from .search.jobs import parse_jobs

    if notes and (parse_jobs(jobs) or 1) > 1:  # auto: one process for these
        raise UserError(f"jobs={jobs}: objects passed from Python exist only in this process; use jobs=1 (or a "
                        f"recipe whose data and model.factory name files and functions)")
    if recipe is None:
        if data is None:
            raise UserError("give a recipe (a TOML path, a dict or a Recipe) or data= (and model=, task=)")
        if model is not None and "name" not in values:  # the run folder's name: the module's class or the factory
            label = type(model).__name__ if hasattr(model, "forward") else getattr(model, "__name__", "")
            values["name"] = re.sub(r"[^a-z0-9_]+", "", label.lower()) or "python"
        values.setdefault("name", "python")
        base: Any = {}
    else:
        base = recipe
    if notes:
        where = "in-memory objects from dlrecipe's Python API (" + "; ".join(notes) + ")"
        given = values.get("description") or (
            base["description"] if isinstance(base, Recipe) else base.get("description", "")
            if isinstance(base, Mapping) else _read_flat(Path(base)).get("description", ""))
        values["description"] = f"{given}; {where}" if given else where
    return load_recipe(base, values)


def _say(progress: bool) -> Callable[[str], None] | None:
    if not progress:
        return None
    from .display import err

    return lambda message: err.print(message, highlight=False, soft_wrap=True, markup=False)


def sanity(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, seed: int | None = None,
           device: str = "auto", runs_dir: str | Path | None = "runs", strict: bool = False, only=None,
           overfit_batches: int = 8, overfit_steps: int = 3000, progress: bool = False, **recipe_keys) -> Result:
    """`dlrecipe sanity`: every check of the setup; status pass / warn / fail, exit_code as the CLI's."""
    from .sanity import parse_only, run_sanity

    names = parse_only(only)
    r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys)
    res = run_sanity(r, device=device, runs_dir=runs_dir, only=names, overfit_batches=overfit_batches,
                     overfit_steps=overfit_steps, progress=_say(progress))
    return result_of("sanity", res, strict=strict)


def lr_find(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, seed: int | None = None,
            device: str = "auto", runs_dir: str | Path | None = "runs", seeds: int = 1, lrs=None,
            start_lr: float = 1e-7, end_lr: float = 10.0, apply: str | Path | None = None, progress: bool = False,
            **recipe_keys) -> Result:
    """`dlrecipe lr-find`: the recommended LR (`result.recommended_lr`) and search range; apply= writes a copy of
    the recipe file with train.lr set to it."""
    from . import lr_find as L

    if seeds < 1:
        raise UserError(f"seeds={seeds}: at least 1")
    candidates = L.parse_lrs(lrs) if isinstance(lrs, str) else (None if lrs is None else [float(v) for v in lrs])
    if candidates is not None:
        L.check_lrs(candidates)
    L.check_range_bounds(start_lr, end_lr)
    if apply is not None:
        if not isinstance(recipe, (str, Path)):
            raise UserError("apply= writes a copy of a recipe file: give the recipe as a path")
        L.check_apply_path(Path(apply), Path(recipe))
    r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys)
    res = L.lr_find(r, device=device, runs_dir=runs_dir, seeds=seeds, lrs=candidates, start_lr=start_lr,
                    end_lr=end_lr, log=_say(progress))
    if apply is not None:
        L.apply_lr(r, res.recommended_lr, Path(apply), note=f"run {res.run_dir}")
    return result_of("lr-find", res)


def train(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, seed: int | None = None,
          device: str = "auto", runs_dir: str | Path = "runs", smoke: bool = False, progress: bool = False,
          **recipe_keys) -> Result:
    """`dlrecipe train`: early stopping, LR halving, the best snapshot tested; exit_code 1 when it diverged."""
    from .display import make_progress
    from .train import train as run_train

    r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys)
    res = run_train(r, device=device, runs_dir=runs_dir, smoke=smoke, progress=make_progress(not progress))
    return result_of("train", res)


def search(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, seed: int | None = None,
           device: str = "auto", runs_dir: str | Path = "runs", jobs: int | str = "auto", prune: str = "none", seeds: int = 1,
           ensemble: int = 1, storage: str | None = None, study: str | None = None,
           from_lr_find: str | Path | None = None, resume: str | Path | None = None, worker: bool = False,
           progress: bool = False, **recipe_keys) -> Result:
    """`dlrecipe search`: coarse then fine trials, the selected model tested once. model= may be a zero-argument
    callable (a fresh model per trial) or an nn.Module (every trial starts from a copy of its weights)."""
    from . import search as S

    if worker:  # join the study `study` in `storage` and run trials until none is left
        if not (storage and study):
            raise UserError("worker=True needs storage= (a URL) and study= (the search to join)")
        r = None if recipe is None else _resolve(recipe, overrides=overrides, seed=seed, keys=recipe_keys)
        run_dir, n = S.join(r, storage=storage, study=study, device=device, runs_dir=runs_dir, quiet=not progress)
        return Result("search", "completed", run_dir, {"command": "search", "study": study, "trials_run": n})
    if resume is not None:
        r = None if recipe is None and model is None and data is None else _resolve(
            recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys, jobs=jobs)
        res = S.resume(resume, recipe=r, device=device, jobs=jobs, quiet=not progress)
    else:
        r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys,
                     jobs=jobs)
        res = S.search(r, device=device, runs_dir=runs_dir, jobs=jobs, prune=prune, seeds=seeds, ensemble=ensemble,
                       storage=storage, study=study, from_lr_find=from_lr_find, quiet=not progress)
    return result_of("search", res)


def run(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, seed: int | None = None,
        device: str = "auto", runs_dir: str | Path = "runs", budget: float | None = None, force: bool = False,
        jobs: int | str = "auto", passes: int | None = None, resume: str | Path | None = None, progress: bool = False,
        **recipe_keys) -> Result:
    """`dlrecipe run`: sanity, lr-find, search passes (at most `passes`, default 3) and report in one parent
    folder."""
    from .pipeline import DEFAULT_PASSES, resume_run, run_recipe

    if resume is not None:
        res = resume_run(resume, device=device, jobs=jobs, say=_say(progress), quiet=not progress)
    else:
        r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, seed=seed, keys=recipe_keys,
                     jobs=jobs)
        res = run_recipe(r, device=device, runs_dir=runs_dir, budget_minutes=budget, force=force, jobs=jobs,
                         say=_say(progress), quiet=not progress, passes=DEFAULT_PASSES if passes is None else passes)
    return result_of("run", res)


def pretrain(recipe=None, *, overrides=None, seed: int | None = None, device: str = "auto",
             runs_dir: str | Path = "runs", progress: bool = False, **recipe_keys) -> Result:
    """`dlrecipe pretrain`: greedy layer-wise autoencoder pre-training of the recipe's MLP ([pretrain] table)."""
    from .pretrain import pretrain as run_pretrain

    r = _resolve(recipe, overrides=overrides, seed=seed, keys=recipe_keys)
    return result_of("pretrain", run_pretrain(r, device=device, runs_dir=runs_dir, say=_say(progress)))


def report(run_dir: str | Path) -> Result:
    """`dlrecipe report`: the curves' diagnosis (`result.curves`, each with its findings) and the files written."""
    from .report import build_report

    return result_of("report", build_report(Path(run_dir)))


def predict(run_dir: str | Path, input: str | Path, *, output: str | Path | None = None,
            runs_dir: str | Path = "runs") -> Result:
    """`dlrecipe predict`: the run's model on new data; `result.detail.table` is the predictions DataFrame."""
    from .predict import predict as run_predict

    res = run_predict(Path(run_dir), Path(input), output=None if output is None else Path(output), runs_dir=runs_dir)
    return result_of("predict", res)


def validate(recipe=None, *, model=None, data=None, task: str | None = None, overrides=None, **recipe_keys) -> Result:
    """`dlrecipe validate`: keys, data and one forward pass checked; nothing trained, no run folder."""
    from .data import load_data
    from .models import build_model, count_parameters

    r = _resolve(recipe, model=model, data=data, task=task, overrides=overrides, keys=recipe_keys)
    space = {}
    if r["search.space"]:
        from .search import parse_space

        space = parse_space(r)
    d = load_data(r, "cpu")
    net = build_model(r, d)
    summary = {"name": r.name, "command": "validate", "status": "ok", "task": r["task"],
               "data_source": r["data.source"], "model_kind": r["model.kind"], "searched": list(space),
               "train_examples": len(d.x_train), "val_examples": len(d.x_val), "test_examples": len(d.x_test),
               "input_shape": list(d.x_train.shape[1:]), "num_outputs": d.num_outputs,
               "parameters": count_parameters(net), "notes": list(d.notes)}
    return Result("validate", "ok", None, summary, 0, r)
