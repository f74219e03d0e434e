"""Population training: K trials fused into one model give each trial the metrics it gets trained alone.

The reference is dlrecipe's own train_in on each member (same seed, so the same initial weights, batch order and,
on CPU, the same dropout masks). Tolerance: relative 1e-4 on every logged number (the fused kernels round in
another order, about 1e-7 relative per step here: see dlrecipe/search/population.py); accuracies within one
validation example (a near-tie argmax can flip).
"""
from __future__ import annotations

import math

import pytest
import torch

from dlrecipe import components as C
from dlrecipe.data import load_data
from dlrecipe.recipe import validate
from dlrecipe.search.fused import FusedNet, NotFusable
from dlrecipe.search.population import train_population
from dlrecipe.search.workers import _without_test
from dlrecipe.train import train_in

from .conftest import small_recipe

REL = 1e-4
ACC_ABS = 0.004  # accuracies: one of digits' 270 validation examples (or 5 of its 1257 training ones) may flip
DIGITS = {"name": "p", "data.source": "digits", "data.batch_size": 64, "model.hidden": [32, 32],
          "train.epochs": 3, "train.patience": 0}


def members(base: dict, per_member: list[dict]):
    recipes = [validate({**base, **m}) for m in per_member]
    return recipes, _without_test(load_data(recipes[0], "cpu"))


def alone_and_fused(tmp_path, recipes, data):
    alone = []
    for i, r in enumerate(recipes):
        (tmp_path / f"alone{i}").mkdir()
        alone.append(train_in(tmp_path / f"alone{i}", r, data, seed=r["seed"]))
    folders = [tmp_path / f"fused{i}" for i in range(len(recipes))]
    for f in folders:
        f.mkdir()
    return alone, train_population(folders, recipes, data)


def assert_same_runs(alone, fused, rel: float = REL):
    for a, f in zip(alone, fused):
        assert f.summary["status"] == a.summary["status"] and f.summary["reason"] == a.summary["reason"]
        assert f.summary["best_epoch"] == a.summary["best_epoch"] and len(f.history) == len(a.history)
        for ra, rf in zip(a.history, f.history):
            assert set(ra) == set(rf)
            for key in ra:
                if key == "seconds":
                    continue
                if isinstance(ra[key], float) and math.isnan(ra[key]):
                    assert math.isnan(rf[key]), key
                else:
                    tol = ACC_ABS if key.endswith("_acc") else 1e-7  # a near-tie argmax may flip
                    assert rf[key] == pytest.approx(ra[key], rel=rel, abs=tol), (key, ra["epoch"])
        sa = torch.load(a.run_dir / "model.pt", weights_only=True)
        sf = torch.load(f.run_dir / "model.pt", weights_only=True)
        assert sa.keys() == sf.keys()  # the member's own state_dict names: loadable into its own model
        for key in sa:
            if sa[key].is_floating_point() and torch.isfinite(sa[key]).all():
                torch.testing.assert_close(sf[key], sa[key], rtol=10 * rel, atol=max(1e-5, 2 * rel))
            else:
                assert sf[key].shape == sa[key].shape
        assert (f.run_dir / "metrics.csv").read_text().splitlines()[0] == \
            (a.run_dir / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("layout", ["flat", "per-tensor"])
@pytest.mark.parametrize("optimizer", list(C.OPTIMIZERS))
def test_every_optimizer_gives_each_member_its_own_run(tmp_path, optimizer, layout, one_thread, monkeypatch):
    """Different LR, weight decay, momentum/betas, L1 and dropout per member, in one vectorised step, with the
    parameters in one flat buffer (small members, GPUs) or updated tensor by tensor (large members on CPU)."""
    from dlrecipe.search import fused

    monkeypatch.setattr(fused, "FLAT_MAX_PARAMS", 10**9 if layout == "flat" else 0)
    small = optimizer in ("adam", "adamw", "nadam", "rmsprop")
    lr = 0.1 if small else 1.0
    per = [{"train.lr": 0.01 * lr, "train.weight_decay": 0.0},
           {"train.lr": 0.03 * lr, "train.weight_decay": 1e-3, "model.dropout": 0.2, "train.momentum": 0.5,
            "train.beta1": 0.8},
           {"train.lr": 0.003 * lr, "train.weight_decay": 1e-4, "train.l1": 1e-4, "model.dropout": 0.4,
            "train.beta2": 0.99, "train.rho": 0.9}]
    recipes, data = members({**DIGITS, "train.optimizer": optimizer}, per)
    assert_same_runs(*alone_and_fused(tmp_path, recipes, data))


def test_batch_norm_mixup_clipping_and_schedules_per_member(tmp_path, one_thread):
    per = [{"train.lr": 0.05, "train.grad_clip": 0.5, "train.schedule": "cosine"},
           {"train.lr": 0.2, "model.dropout": 0.3, "train.schedule": "step", "train.step_size": 1},
           {"train.lr": 0.01, "train.schedule": "exponential"}]
    recipes, data = members({**DIGITS, "model.norm": "batch", "data.augment": ["mixup"], "train.optimizer":
                             "momentum", "train.epochs": 4}, per)
    # member 0 is a sensitive run: trained alone with its LR changed by 1e-6 relative, its epoch-2 val_loss moves
    # by 1.2e-4 relative (measured); the fused run's rounding moves it as much, so this test allows 1e-3
    assert_same_runs(*alone_and_fused(tmp_path, recipes, data), rel=1e-3)


def test_a_cnn_with_batch_norm_and_maxout_mlps(tmp_path, one_thread):
    cnn = {**DIGITS, "model.kind": "cnn", "data.shape": [1, 8, 8], "model.conv": [4, 8], "model.kernel_size": 3,
           "model.norm": "batch", "model.hidden": [16], "train.optimizer": "adam", "train.epochs": 2}
    recipes, data = members(cnn, [{"train.lr": 3e-3}, {"train.lr": 1e-2, "model.dropout": 0.25}])
    assert_same_runs(*alone_and_fused(tmp_path, recipes, data))
    maxout = {**DIGITS, "model.activation": "maxout", "model.norm": "batch", "train.epochs": 2}
    recipes, data = members(maxout, [{"train.lr": 0.05}, {"train.lr": 0.2}])
    (tmp_path / "maxout").mkdir()
    assert_same_runs(*alone_and_fused(tmp_path / "maxout", recipes, data))


def test_a_diverging_member_is_recorded_and_the_others_go_on(tmp_path, one_thread):
    per = [{"train.lr": 0.05}, {"train.lr": 1e8}, {"train.lr": 0.1, "model.dropout": 0.2}]
    recipes, data = members({**DIGITS, "train.momentum": 0.9, "train.epochs": 4}, per)
    alone, fused = alone_and_fused(tmp_path, recipes, data)
    assert fused[1].summary["status"] == "diverged" and "NaN/Inf" in fused[1].summary["reason"]
    assert [len(r.history) for r in fused] == [4, 1, 4]
    assert_same_runs(alone, fused)


def test_early_stopping_and_lr_halving_stay_per_member(tmp_path, one_thread):
    """Members stop at different epochs (and leave the fused model); each one's LR column halves on its own."""
    per = [{"train.lr": 0.5, "train.patience": 1}, {"train.lr": 0.02, "train.patience": 3, "train.lr_halving": 1},
           {"train.lr": 0.3, "train.patience": 2, "train.lr_halving": 1}]
    recipes, data = members({**DIGITS, "train.momentum": 0.9, "train.epochs": 8, "data.batch_size": 128}, per)
    alone, fused = alone_and_fused(tmp_path, recipes, data)
    assert len({len(r.history) for r in alone}) > 1  # the members really stop at different epochs
    assert_same_runs(alone, fused)


def test_dropout_masks_are_each_members_own_nn_dropout_masks():
    """Member k's mask is what nn.Dropout(p_k) draws from a generator seeded as loop.fit seeds the global one."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(7, 3))
              for p in (0.3, 0.6)]
    models.append(torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)))  # p = 0
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict() if len(m) == 4 else
                          {k.replace("3.", "2."): v for k, v in models[0].state_dict().items()})
    net = FusedNet(models)
    x = torch.randn(11, 5)
    gens = [torch.Generator().manual_seed(4) for _ in models]
    fused = net(x, gens)
    for k, m in enumerate(models):
        torch.manual_seed(4)
        torch.testing.assert_close(fused[k], m.train()(x), rtol=1e-6, atol=1e-6)
    keys = net.member_state(2).keys()
    assert set(keys) == set(models[2].state_dict())  # member 2 has no dropout layer: its own indices


def test_models_without_a_fused_form_are_refused_before_training():
    torch.manual_seed(0)
    with pytest.raises(NotFusable, match="architectures differ"):
        FusedNet([torch.nn.Sequential(torch.nn.Linear(4, 3)), torch.nn.Sequential(torch.nn.Linear(4, 5))])
    with pytest.raises(NotFusable, match="PReLU has no fused form"):
        FusedNet([torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.PReLU(), torch.nn.Linear(3, 2))] * 2)


def test_a_search_with_populations_writes_the_same_trials_as_one_at_a_time(tmp_path, one_thread):
    """trials.csv, each trial's metrics.csv and the selected model: the same with populations of up to 4 trials (of
    both stages) and with one trial at a time."""
    import pandas as pd

    from dlrecipe.search import search

    results = {}
    for population in (4, 1):
        recipe = small_recipe(**{"search.trials": 6, "search.coarse_epochs": 3, "search.fine_trials": 2,
                                 "search.fine_epochs": 3, "search.population": population,
                                 "search.space": {"train.lr": {"log_uniform": [0.005, 0.5]},
                                                  "model.dropout": {"uniform": [0.0, 0.5]}}})
        results[population] = search(recipe, runs_dir=tmp_path / str(population))
    fused, alone = (pd.DataFrame(results[p].trials).drop(columns=["seconds"]) for p in (4, 1))
    pd.testing.assert_frame_equal(fused.drop(columns=["best_val_loss"]), alone.drop(columns=["best_val_loss"]))
    assert fused.best_val_loss.tolist() == pytest.approx(alone.best_val_loss.tolist(), rel=REL)
    s0, s1 = results[4].summary, results[1].summary
    assert s0["selected_trial"] == s1["selected_trial"] and s0["test_acc"] == pytest.approx(s1["test_acc"])
    for n in fused.number:
        m0 = pd.read_csv(results[4].run_dir / "trials" / str(n) / "metrics.csv").drop(columns=["seconds"])
        m1 = pd.read_csv(results[1].run_dir / "trials" / str(n) / "metrics.csv").drop(columns=["seconds"])
        pd.testing.assert_frame_equal(m0, m1, rtol=REL)


def test_a_python_factory_fuses_its_coarse_trials_through_vmap(tmp_path, one_thread):
    """The user's own module: vmapped (dlrecipe/search/vmapped.py, tested in tests/test_vmapped.py), no note."""
    import json

    from dlrecipe.search import search

    recipe = small_recipe(**{"model.kind": "python", "model.factory": "tests.test_population:tiny",
                             "search.trials": 3, "search.coarse_epochs": 1, "search.fine_trials": 1,
                             "search.fine_epochs": 1})
    result = search(recipe, runs_dir=tmp_path)
    assert result.summary["status"] == "completed" and result.summary["trials"]["complete"] == 4
    assert not any(w.startswith("population:") for w in result.summary["warnings"])
    sizes = sorted(json.loads(p.read_text()).get("population", 1) for p in result.run_dir.glob("trials/*/summary.json"))
    assert sizes == [1, 3, 3, 3]  # the coarse stage as one population; the fine trial alone (auto)


def tiny(input_shape, num_outputs):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_outputs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_population_on_cuda_matches_training_alone_on_cuda_and_cpu(tmp_path):
    """No dropout (CUDA draws its masks another way). On the GPU, each member's run is its run alone on the GPU
    within the CPU tests' tolerance; against the CPU, a gentle member agrees to 1e-3, while a high-LR one is
    chaotic enough that CUDA's and the CPU's rounding alone part its curves by a few percent (measured on an
    H200: 0.561 against 0.535 after 2 epochs, the same for the member trained alone), so it is not compared."""
    per = [{"train.lr": 0.05}, {"train.lr": 0.2, "train.weight_decay": 1e-3}]
    recipes = [validate({**DIGITS, "model.norm": "batch", "train.momentum": 0.9, **m}) for m in per]
    cpu = _without_test(load_data(recipes[0], "cpu"))
    gpu = _without_test(load_data(recipes[0], "cuda"))
    alone_gpu, fused = alone_and_fused(tmp_path, recipes, gpu)
    assert_same_runs(alone_gpu, fused)
    (tmp_path / "cpu").mkdir()
    alone_cpu = train_in(tmp_path / "cpu", recipes[0], cpu, seed=0)
    assert [r["val_loss"] for r in fused[0].history] == pytest.approx([r["val_loss"] for r in alone_cpu.history],
                                                                       rel=1e-3)
    assert fused[0].summary["population"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dropout_masks_are_one_draw_with_each_members_own_rate():
    """On a GPU all members' masks come from one draw: member k keeps each unit with its own 1 - p_k, scaled."""
    net = FusedNet([torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(p), torch.nn.Linear(8, 2))
                    for p in (0.2, 0.5)] + [torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))])
    like = torch.zeros(1, device="cuda")
    gens = [torch.Generator(device="cuda").manual_seed(0) for _ in range(3)]
    masks = net._masks(0, (4096, 64), like, gens)
    assert masks.shape == (3, 4096, 64) and masks.is_cuda
    for k, p in enumerate((0.2, 0.5, 0.0)):
        kept = masks[k] != 0
        assert float(1 - kept.float().mean()) == pytest.approx(p, abs=0.01)
        assert torch.allclose(masks[k][kept], torch.full_like(masks[k][kept], 1 / (1 - p)))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("channels, act", [(2, torch.nn.ReLU), (1, torch.nn.ReLU), (1, lambda: torch.nn.LeakyReLU(0.1)),
                                           (2, lambda: torch.nn.LeakyReLU(0.0)), (2, torch.nn.ELU), (1, torch.nn.SELU),
                                           (2, torch.nn.Tanh), (1, torch.nn.Sigmoid), (2, torch.nn.GELU)])
def test_fused_convolutions_norms_and_pools_match_each_members_own_modules(dims, device, channels, act):
    """The conv layout (channels last on CPU, channels first on CUDA, a 1-D signal as height 1) gives each
    member's own outputs and gradients, for max and average pools with strides, padding and ceil_mode; a
    one-channel input (its first conv as one matmul on CPU) and an activation the max pool runs before (GELU
    is not monotonic: it keeps its place) included. The ReLU's zeros tie in many 3-wide pool windows here."""
    Conv, Norm = (torch.nn.Conv1d, torch.nn.BatchNorm1d) if dims == 1 else (torch.nn.Conv2d, torch.nn.BatchNorm2d)
    Max, Avg = (torch.nn.MaxPool1d, torch.nn.AvgPool1d) if dims == 1 else (torch.nn.MaxPool2d, torch.nn.AvgPool2d)
    shape = (channels, 11) if dims == 1 else (channels, 7, 6)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        body = torch.nn.Sequential(Conv(channels, 4, 3, padding=1), Norm(4), act(),
                                   Max(3, stride=2, padding=1, ceil_mode=True), Conv(4, 5, 3, padding=1, bias=False),
                                   torch.nn.Tanh(), Avg(2, ceil_mode=True, count_include_pad=False),
                                   Avg(2, stride=1, padding=1), torch.nn.Flatten())
        n_flat = body(torch.zeros(1, *shape)).numel()
        models.append(torch.nn.Sequential(*body, torch.nn.Linear(n_flat, 3)).to(device))
    net = FusedNet(models)
    x = torch.randn(6, *shape, device=device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # (CUDA: full float32 convolutions)
        out = net(x)
        out.square().sum().backward()
        refs = [m(x) for m in models]
        for ref in refs:
            ref.square().sum().backward()
    for k, (m, ref) in enumerate(zip(models, refs)):
        torch.testing.assert_close(out[k], ref, rtol=1e-5, atol=1e-6)
        for name, key in net.keys[k].items():
            if name in net.params:
                grad = net.params[name].grad[k]
                grad = grad.t() if name in net.transposed else grad
                torch.testing.assert_close(grad, m.get_parameter(key).grad, rtol=1e-4, atol=1e-5)


def test_a_max_pool_runs_before_a_monotonic_activation_only():
    """relu(maxpool(x)) = maxpool(relu(x)) for activations that never decrease; not for GELU, a negative leaky
    slope or an average pool, which keep their order."""
    from dlrecipe.search.fused import _pool_first

    def order(*layers):
        net = FusedNet([torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), *layers, torch.nn.Flatten(),
                                            torch.nn.Linear(2, 2))])
        return [op.kind for op in net.ops if op.kind in ("act", "pool")]

    assert order(torch.nn.ReLU(), torch.nn.MaxPool1d(2)) == ["pool", "act"]
    assert order(torch.nn.Tanh(), torch.nn.MaxPool1d(2)) == ["pool", "act"]
    assert order(torch.nn.GELU(), torch.nn.MaxPool1d(2)) == ["act", "pool"]
    assert order(torch.nn.LeakyReLU(-0.5), torch.nn.MaxPool1d(2)) == ["act", "pool"]
    assert order(torch.nn.ReLU(), torch.nn.AvgPool1d(2)) == ["act", "pool"]
    assert _pool_first([]) == []


def test_the_cpu_cache_per_thread_is_read_from_sys_and_falls_back(tmp_path):
    from dlrecipe.search.population import FALLBACK_CACHE, cache_per_thread

    for i, (level, kind, size, shared) in enumerate([(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"),
                                                     (2, "Unified", "1024K", "0"), (3, "Unified", "32768K", "0-1")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{text}\n")
    assert cache_per_thread(str(tmp_path)) == (1 << 20) + 0.5 * (32 << 20) / 2  # L2 + half of one core's L3 share
    (tmp_path / "index3" / "shared_cpu_list").write_text("0-3,8-11\n")        # 8 cores share it
    assert cache_per_thread(str(tmp_path)) == (1 << 20) + 0.5 * (32 << 20) / 8
    assert cache_per_thread(str(tmp_path / "missing")) == FALLBACK_CACHE


def test_auto_size_keeps_a_populations_swept_tensors_in_the_threads_cache():
    """digits MLP 512-512: 301,066 parameters; with momentum a step sweeps weights, gradients and the buffer
    (3 x 4 bytes each per member: 3.6 MB); 9 MB of cache per thread holds 2 members, 2 threads 5, rounded to 4."""
    from dlrecipe.search.population import auto_size

    recipe = validate({**DIGITS, "model.hidden": [512, 512], "train.optimizer": "sgd", "train.momentum": 0.9})
    data = _without_test(load_data(recipe, "cpu"))
    cache = 9 << 20
    assert [auto_size(recipe, data, "cpu", threads=t, cache=cache) for t in (1, 2)] == [2, 4]
    plain = recipe.with_values({"train.momentum": 0.0})  # plain SGD keeps no state: 2.4 MB per member
    assert auto_size(plain, data, "cpu", threads=1, cache=cache) == 3
    adam = recipe.with_values({"train.optimizer": "adam"})  # two states: 4.8 MB, one member
    assert auto_size(adam, data, "cpu", threads=1, cache=cache) == 1
    small = recipe.with_values({"model.hidden": [64, 64]})  # overhead-bound: as many as MAX_AUTO
    assert auto_size(small, data, "cpu", threads=1, cache=cache) == 32
