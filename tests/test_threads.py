"""dlrecipe.threads: the CPU thread policy (small models 1 thread, larger ones cores / jobs, busy machine 1)."""
from __future__ import annotations

import torch

from dlrecipe import threads as T

from .conftest import small_recipe


def test_multiply_adds_per_step_are_counted_by_hand():
    mlp = small_recipe(**{"model.hidden": [256, 256], "data.batch_size": 64})
    assert T.macs_per_step(mlp, (64,)) == 64 * (64 * 256 + 256 * 256 + 256 * 10)  # estimated with 10 outputs
    cnn = small_recipe(**{"model.kind": "cnn", "model.conv": [4], "model.kernel_size": 3, "model.pool": "none",
                          "model.hidden": [], "data.batch_size": 2})
    # conv: 4 channels x 10 positions, each 1 channel x 3 taps; then the output layer 40 -> 10
    assert T.macs_per_step(cnn, (1, 10)) == 2 * (4 * 10 * 3 + 40 * 10)


def test_a_python_factorys_model_is_counted_too():
    recipe = small_recipe(**{"model.kind": "python", "model.factory": "tests.test_population:tiny",
                             "data.batch_size": 8})
    assert T.macs_per_step(recipe, (64,)) == 8 * 64 * 10  # tiny: Flatten, Linear(64 -> 10 outputs)


def test_small_models_get_one_thread_larger_ones_share_the_cores():
    assert T.threads_for(5.4e6, n_cores=2) == 1  # recipes/digits_mlp.toml
    assert T.threads_for(4.6e7, n_cores=2) == 2  # recipes/mnist1d_cnn.toml
    assert T.threads_for(4.6e7, jobs=2, n_cores=2) == 1
    assert T.threads_for(4.6e7, n_cores=2, busy=True) == 1


def test_a_busy_machine_is_said_and_an_idle_one_is_not():
    assert T.busy_warning(n_cores=2, load=1.5) is None
    warning = T.busy_warning(n_cores=2, load=3.2)
    assert "load average 3.2 on 2 cores" in warning and "1 torch thread" in warning


def test_configure_sets_the_threads_and_keeps_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(T, "load_average", lambda: 0.0)
        assert T.configure(small_recipe(), (4,)) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert T.configure(small_recipe(), (4,)) is None  # the user's choice
    finally:
        torch.set_num_threads(before)


def test_the_busy_machine_warning_comes_after_the_result_and_never_beside_an_error(monkeypatch):
    from typer.testing import CliRunner

    import dlrecipe.threads as T
    from dlrecipe.cli import app

    from .conftest import ROOT

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "load_average", lambda: 8.0)  # 4x the cores
    recipe = str(ROOT / "recipes" / "digits_mlp.toml")
    bad = CliRunner().invoke(app, ["validate", recipe, "--set", "train.lr=-1"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "busy" not in bad.output
    ok = CliRunner().invoke(app, ["validate", recipe])
    assert ok.exit_code == 0 and ok.output.strip().splitlines()[-1].startswith("warning: the machine is busy")
