"""The Python API as a user calls it: from a fresh interpreter, on recipe files, dicts and in-memory objects."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

from .conftest import ROOT

DIGITS = str(ROOT / "recipes/digits_mlp.toml")


def _python(code: str, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (the way a notebook or script meets dlrecipe)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_import_is_light_and_the_stable_names_resolve(tmp_path):
    out = _python("""
        import sys, dlrecipe
        light = 'torch' not in sys.modules
        names = {n: type(getattr(dlrecipe, n)).__name__ for n in dlrecipe.__all__}
        print(light, dlrecipe.__version__, sorted(names))
    """, tmp_path)
    light, version, *_ = out.stdout.split(" ", 2)
    assert light == "True" and re.match(r"\d+\.\d+", version)
    for name in ("load_recipe", "sanity", "lr_find", "search", "run", "train", "report", "predict", "validate",
                 "Result", "Recipe", "EXIT_CODES", "UserError"):
        assert f"'{name}'" in out.stdout


def test_command_names_are_functions_and_still_their_modules():
    import inspect

    import dlrecipe
    import dlrecipe.train as T  # the module import must not replace the function
    from dlrecipe import search as S

    assert callable(dlrecipe.train) and T.train_in is dlrecipe.train.train_in
    assert S.parse_space is sys.modules["dlrecipe.search"].parse_space
    assert "smoke" in inspect.signature(dlrecipe.train).parameters
    assert "zero-argument" in dlrecipe.search.__doc__ and "dlrecipe search" in dlrecipe.search.__doc__


def test_load_recipe_from_a_path_a_dict_and_a_recipe_with_overrides():
    import dlrecipe

    from_path = dlrecipe.load_recipe(DIGITS, overrides={"train.lr": 0.3, "model.hidden": [16]})
    as_dict = tomllib.loads((ROOT / "recipes/digits_mlp.toml").read_text())
    from_dict = dlrecipe.load_recipe(as_dict, overrides=["train.lr=0.3", "model.hidden=[16]"])
    flat = dlrecipe.load_recipe({"data.source": "digits", "train.lr": 0.3, "model.hidden": [16]})
    assert from_path["train.lr"] == from_dict["train.lr"] == flat["train.lr"] == 0.3
    assert from_path["model.hidden"] == from_dict["model.hidden"] == [16]
    again = dlrecipe.load_recipe(from_path, overrides={"train.epochs": 2})
    assert again["train.epochs"] == 2 and again["train.lr"] == 0.3
    with pytest.raises(dlrecipe.RecipeError, match="unknown key train.lrr; did you mean 'train.lr'"):
        dlrecipe.load_recipe({"data.source": "digits", "train.lrr": 1})


def test_keyword_arguments_name_recipe_keys():
    from dlrecipe.api import _key_of
    from dlrecipe.errors import RecipeError

    assert _key_of("lr") == "train.lr" and _key_of("train_lr") == "train.lr"
    assert _key_of("batch_size") == "data.batch_size" and _key_of("seed") == "seed"
    assert _key_of("model_dropout") == "model.dropout" and _key_of("trials") == "search.trials"
    assert _key_of("epochs") == "train.epochs" and _key_of("pretrain_epochs") == "pretrain.epochs"
    with pytest.raises(RecipeError, match="neither an option of this function nor a recipe key"):
        _key_of("learning_rate")


def test_readme_notebook_example_runs_in_a_fresh_interpreter(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python: notebooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")  # the example runs from the repository root
    out = _python(code, tmp_path)
    check, train, report = out.stdout.strip().splitlines()
    assert check.startswith("pass PASS: all 3 checks passed")
    status, acc, run_dir = train.split()
    assert status == "completed" and float(acc) > 0.8 and (tmp_path / run_dir / "model.pt").is_file()
    assert report.startswith("0 ")  # the recipe's smoke run exited 0


@pytest.mark.slow
def test_module_dataframe_and_dataset_straight_to_sanity_lr_find_and_train(tmp_path):
    """An nn.Module, a DataFrame and a torch Dataset, passed as objects; the module is never trained in place."""
    out = _python("""
        import json, tomllib
        import numpy as np, pandas as pd, torch
        from sklearn.datasets import load_iris
        from torch import nn
        import dlrecipe

        x, y = load_iris(return_X_y=True)
        frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(species=np.array(["s", "v", "g"])[y])
        class Pairs(torch.utils.data.Dataset):
            def __len__(self): return len(y)
            def __getitem__(self, i): return torch.tensor(x[i], dtype=torch.float32), int(y[i])

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        report = {}
        for label, data in (("frame", frame), ("dataset", Pairs()), ("arrays", (x, y))):
            s = dlrecipe.sanity(model=model, data=data, target="species", only="labels,init_loss,gradient_flow",
                                runs_dir="runs")
            f = dlrecipe.lr_find(model=model, data=data, target="species", lrs=[0.3, 0.03], runs_dir="runs")
            t = dlrecipe.train(model=model, data=data, target="species", lr=0.1, epochs=3, runs_dir="runs")
            saved = tomllib.loads((t.run_dir / "recipe.toml").read_text())
            report[label] = [s.status, s.exit_code, f.recommended_lr in (0.3, 0.03), t.status, t.exit_code,
                             t.epochs_run, saved["model"]["kind"],
                             saved["data"]["source"].startswith("dlrecipe.memory:"),
                             "in-memory objects" in saved["description"]]
        report["untouched"] = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        print(json.dumps(report))
    """, tmp_path)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report.pop("untouched") is True
    for label, row in report.items():
        assert row == ["pass", 0, True, "completed", 0, 3, "python", True, True], label


@pytest.mark.slow
def test_search_takes_a_model_callable_and_an_in_memory_run_is_not_found_elsewhere(tmp_path):
    out = _python("""
        import json
        from sklearn.datasets import load_digits
        from torch import nn
        import dlrecipe

        x, y = load_digits(return_X_y=True)
        built = []
        def fresh():
            built.append(1)
            return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        r = dlrecipe.search(model=fresh, data=(x, y), task="classification", trials=2, coarse_epochs=1,
                            fine_trials=1, fine_epochs=1, runs_dir="runs")
        try:
            dlrecipe.search(model=fresh, data=(x, y), jobs=2, runs_dir="runs")
            refused = False
        except dlrecipe.UserError as e:
            refused = "jobs=2" in str(e)
        print(json.dumps([r.status, r.exit_code, len(built) >= 3, refused, str(r.run_dir)]))
    """, tmp_path)
    status, code, fresh_each_time, refused, run_dir = json.loads(out.stdout.strip().splitlines()[-1])
    assert (status, code, fresh_each_time, refused) == ("completed", 0, True, True)
    # another process: the recipe is still valid, and building its model says where the object lived
    other = subprocess.run([sys.executable, "-m", "dlrecipe", "validate", str(tmp_path / run_dir / "recipe.toml")],
                           capture_output=True, text=True, cwd=tmp_path, check=False)
    assert other.returncode == 2 and "another Python process" in other.stderr and "Traceback" not in other.stderr


def test_every_command_that_runs_something_is_a_function_with_the_cli_options():
    """A new CLI option must reach the Python API too (the names are the same)."""
    import inspect

    import dlrecipe
    import dlrecipe.api as A
    from dlrecipe.cli import app
    from dlrecipe.contract import COMMANDS

    display_only = {"debug", "json_out", "quiet", "sets", "recipe", "run_dir", "input_path", "tensorboard"}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__
        if name not in COMMANDS:
            continue
        fn = getattr(A, name.replace("-", "_"))
        missing = set(inspect.signature(info.callback).parameters) - display_only - set(inspect.signature(fn).parameters)
        assert not missing, (name, missing)
        assert name.replace("-", "_") in dlrecipe.__all__
