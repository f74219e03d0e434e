"""Transfer learning: which layers load (loaded / new / ignored), frozen weights stay bit-identical, the staged
unfreeze schedule, and the data keys that make a transfer task (classes_only, max_train)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from dlrecipe.data import load_data
from dlrecipe.errors import RecipeError
from dlrecipe.loop import fit
from dlrecipe.models import build_model
from dlrecipe.train import train_in
from dlrecipe.transfer import FineTuning, layer_groups, load_pretrained, resolve_pretrained

from .conftest import small_recipe


def _mlp(hidden=(16, 8), **values):
    return small_recipe(**{"model.hidden": list(hidden), **values})


def test_layers_are_numbered_from_the_input_with_their_batch_norm():
    r = _mlp(**{"model.norm": "batch"})
    model = build_model(r, load_data(r))
    groups = layer_groups(model)
    assert [name for name, _ in groups] == ["1", "4", "7"]  # linear, BN, relu, linear, BN, relu, output
    assert groups[0][1] == ["1", "2"]  # the batch norm belongs to the linear layer before it


def test_loading_copies_matching_layers_and_reports_new_and_ignored(tmp_path):
    r = _mlp()
    data = load_data(r)
    source = build_model(r, data, seed=1)
    state = source.state_dict()
    state["extra.weight"] = torch.ones(2, 2)  # in the file, not in the model
    torch.save(state, tmp_path / "w.pt")
    target_recipe = _mlp(hidden=(16, 5))  # layer 1 has another width: new; the output layer's input changes too
    target = build_model(target_recipe, data, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    rows = load_pretrained(target, tmp_path / "w.pt")
    status = {row["name"]: row["status"] for row in rows}
    assert status == {"1": "loaded", "3": "new", "5": "new", "extra.weight": "ignored"}
    assert torch.equal(target[1].weight, source[1].weight) and torch.equal(target[1].bias, source[1].bias)
    assert torch.equal(target[3].weight, before["3.weight"])  # a new layer keeps its own init
    assert "shape changed" in next(r["detail"] for r in rows if r["name"] == "3")


def test_pretrained_skip_keeps_the_output_layer_new(tmp_path):
    r = _mlp()
    data = load_data(r)
    torch.save(build_model(r, data, seed=1).state_dict(), tmp_path / "w.pt")
    model = build_model(r, data, seed=2)
    out_before = model[5].weight.clone()
    rows = load_pretrained(model, tmp_path / "w.pt", ["output"])
    assert [row["status"] for row in rows] == ["loaded", "loaded", "new"]
    assert torch.equal(model[5].weight, out_before)


def test_load_refuses_a_pickle_with_code(tmp_path):
    import pickle

    (tmp_path / "bad.pt").write_bytes(pickle.dumps(print))  # weights_only loading refuses arbitrary objects
    r = _mlp()
    with pytest.raises(RecipeError, match="weights_only"):
        load_pretrained(build_model(r, load_data(r)), tmp_path / "bad.pt")


def test_model_pretrained_names_a_run_folder_and_train_reports_the_load(tmp_path):
    r = _mlp(**{"train.epochs": 2})
    (tmp_path / "src").mkdir()
    train_in(tmp_path / "src", r, load_data(r))
    assert resolve_pretrained(str(tmp_path / "src"), None) == tmp_path / "src" / "model.pt"
    with pytest.raises(RecipeError, match="no such file or run folder"):
        resolve_pretrained(str(tmp_path / "nothing"), None)
    r2 = _mlp(**{"train.epochs": 2, "model.pretrained": str(tmp_path / "src"), "model.pretrained_skip": ["output"]})
    (tmp_path / "dst").mkdir()
    summary = train_in(tmp_path / "dst", r2, load_data(r2)).summary
    assert summary["pretrained"]["loaded"] == 2 and summary["pretrained"]["new"] == 1
    layers = pd.read_csv(tmp_path / "dst" / "layers.csv")
    assert list(layers["pretrained"].str.split(":").str[0]) == ["loaded", "loaded", "new"]


def test_frozen_weights_are_bit_identical_after_training_and_get_no_decay():
    r = _mlp(**{"train.freeze": [0], "train.weight_decay": 0.1, "train.l1": 0.01, "model.norm": "batch",
                "train.optimizer": "adam", "train.epochs": 3})
    data = load_data(r)
    model = build_model(r, data)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("1.", "2."))}
    other_before = model[4].weight.clone()
    result = fit(model, data, r.section("train"), batch_size=16)
    for k, v in model.state_dict().items():
        if k in frozen_before:  # weights, and the batch norm's running statistics too
            assert torch.equal(v, frozen_before[k]), k
    assert not torch.equal(model[4].weight, other_before)  # the rest did train
    assert result.fine_tuning["frozen_at_end"] == ["1"]


def test_frozen_layers_are_not_in_the_optimizer():
    from dlrecipe import components as C

    r = _mlp(**{"train.freeze": [0, 1]})
    model = build_model(r, load_data(r))
    FineTuning.from_train(model, r.section("train"))
    opt = C.build_optimizer(model, r.section("train"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(model[5].weight), id(model[5].bias)}


def test_unfreeze_schedule_unfreezes_from_the_top_at_the_given_epochs_with_a_lower_lr():
    r = _mlp(**{"train.freeze": [0, 1], "train.unfreeze": [2, 4], "train.unfreeze_lr": 0.1, "train.lr": 0.05,
                "train.epochs": 5, "train.patience": 0, "train.lr_halving": 0})
    data = load_data(r)
    model = build_model(r, data)
    w0, w1 = model[1].weight.clone(), model[3].weight.clone()
    seen = {}

    def on_epoch(row):
        seen[row["epoch"]] = (torch.equal(model[1].weight, w0), torch.equal(model[3].weight, w1))

    result = fit(model, data, r.section("train"), batch_size=16, on_epoch=on_epoch)
    # epoch 1: both frozen; from epoch 2 layer 1 (the top frozen one) trains; from epoch 4 layer 0 as well
    assert seen[1] == (True, True)
    assert seen[2] == (True, False) and seen[3] == (True, False)
    assert seen[4] == (False, False)
    events = result.fine_tuning["unfrozen"]
    assert [(e["epoch"], e["layer"]) for e in events] == [(2, 1), (4, 0)]
    assert events[0]["lr"] == pytest.approx(0.05 * 0.1)


def test_freeze_by_module_name_and_bad_names():
    r = _mlp(**{"train.freeze": ["3"]})
    model = build_model(r, load_data(r))
    FineTuning.from_train(model, r.section("train"))
    assert not model[3].weight.requires_grad and model[1].weight.requires_grad
    with pytest.raises(RecipeError, match="names no layer"):
        FineTuning.from_train(model, {"freeze": ["nope"]})
    with pytest.raises(RecipeError, match="has 3 layers"):
        FineTuning.from_train(model, {"freeze": [7]})


def test_unfreeze_without_freeze_is_refused():
    with pytest.raises(RecipeError, match="train.freeze"):
        _mlp(**{"train.unfreeze": [3]})


def test_classes_only_relabels_and_max_train_subsamples_stratified():
    r = small_recipe(**{"data.classes_only": [2, 0], "data.max_train": 20})
    data = load_data(r)
    assert data.classes == ["virginica", "setosa"] and data.num_outputs == 2
    assert len(data.y_train) == 20 and torch.bincount(data.y_train).tolist() == [10, 10]
    assert set(data.y_val.tolist()) == {0, 1}
    assert data.x_unlabelled is not None and len(data.x_unlabelled) > 0  # the rest, for [pretrain]
    other = load_data(small_recipe(**{"data.classes_only": [2, 0], "data.max_train": 20, "seed": 1}))
    assert not torch.equal(other.x_train, data.x_train)  # drawn by seed


@pytest.mark.slow
def test_search_trials_load_and_freeze(tmp_path):
    from dlrecipe.search import search

    src = _mlp(**{"train.epochs": 1})
    (tmp_path / "src").mkdir()
    train_in(tmp_path / "src", src, load_data(src))
    r = _mlp(**{"model.pretrained": str(tmp_path / "src"), "train.freeze": [0], "search.trials": 2,
                "search.coarse_epochs": 1, "search.fine_trials": 0,
                "search.space": {"train.lr": {"log_uniform": [0.01, 0.1]}}})
    search(r, device="cpu", runs_dir=tmp_path / "runs", quiet=True)
    layers = sorted((tmp_path / "runs").rglob("layers.csv"))
    assert len(layers) >= 2
    for p in layers:
        table = pd.read_csv(p)
        assert table["pretrained"].iloc[0].startswith("loaded") and table["frozen"].iloc[0] == "yes"
