"""dlrecipe's training loop against a plain hand-written PyTorch loop: seconds per epoch and their ratio.

Run with: python bench/train_overhead.py [--repeats N] [--epochs E] [--threads T]

Both loops get the same model (same layers, same initial weights), the same data tensors, the same batch size,
batch order and optimizer (weight decay on weights only, as dlrecipe does), and the same validation pass every
epoch. dlrecipe runs without early stopping or LR changes (patience 0, lr_halving 0). The two are interleaved
in one process (ABBA order, so neither always runs on a warmer cache) and the medians are compared.
Before timing, both loops are checked to produce the same validation losses: they do the same arithmetic.

Target: ratio <= 1.05 (issue 2). What the plain loop does NOT do, and dlrecipe does every epoch: training
accuracy, an on-device NaN check every 16 batches, the best-snapshot copy when validation improves, the
per-epoch metrics row.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from dlrecipe import recipe as R
from dlrecipe.data import load_data
from dlrecipe.loop import fit
from dlrecipe.models import build_model

ROOT = Path(__file__).resolve().parents[1]

CASES = {  # name -> (recipe file, overrides): the shipped recipes, no early stopping, constant LR
    "digits_mlp": (ROOT / "recipes" / "digits_mlp.toml", ["data.augment=[]"]),  # the plain loop has no mixup
    "mnist1d_mlp": (ROOT / "recipes" / "mnist1d_mlp.toml", []),
}
NO_STOPPING = ["train.patience=0", "train.lr_halving=0", "train.schedule='plateau'"]


# ---------------------------------------------------------------------------------------------------------------
# The plain loop: what a careful user writes by hand.


def plain_mlp(n_in: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    """The recipe's MLP written out by hand (same layer order, so dlrecipe's state dict loads into it)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def plain_optimizer(model: nn.Module, tr: dict) -> torch.optim.Optimizer:
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": tr["weight_decay"]}, {"params": others, "weight_decay": 0.0}]
    if tr["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=tr["lr"], momentum=tr["momentum"] or 0.0)
    if tr["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
    raise SystemExit(f"the plain loop knows sgd and adam, not {tr['optimizer']!r}")


def plain_fit(model: nn.Module, data, tr: dict, *, seed: int, batch_size: int, eval_bs: int = 1024) -> list[float]:
    """Minibatch training with a validation pass per epoch; returns the validation losses."""
    torch.manual_seed(seed)  # dropout masks: the same stream as dlrecipe's loop
    order = torch.Generator().manual_seed(seed)
    opt = plain_optimizer(model, tr)
    loss_fn = nn.CrossEntropyLoss()
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    val_losses = []
    for _ in range(tr["epochs"]):
        model.train()
        train_loss = torch.zeros(())
        for idx in torch.randperm(n, generator=order).split(batch_size):
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_loss += loss.detach() * len(idx)
        model.eval()
        with torch.no_grad():
            loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
            for i in range(0, len(data.x_val), eval_bs):
                xb, yb = data.x_val[i:i + eval_bs], data.y_val[i:i + eval_bs]
                out = model(xb)
                loss_sum += loss_fn(out, yb) * len(xb)
                correct += (out.argmax(1) == yb).sum()
        val_losses.append(float(loss_sum) / len(data.x_val))
        _ = (float(train_loss) / n, float(correct) / len(data.x_val))  # the numbers one would log
    return val_losses


# ---------------------------------------------------------------------------------------------------------------


def setup(name: str, epochs: int):
    path, overrides = CASES[name]
    recipe = R.load(path, [*overrides, *NO_STOPPING, f"train.epochs={epochs}"])
    cfg, tr = recipe.section("model"), recipe.section("train")
    if cfg["kind"] != "mlp" or cfg["activation"] != "relu" or cfg["norm"] != "none" or cfg["dropconnect"]:
        raise SystemExit(f"{name}: the plain loop only writes out relu MLPs without batch norm or DropConnect")
    data = load_data(recipe, "cpu")
    model = build_model(recipe, data)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}

    def ours() -> tuple[float, list[float]]:
        model.load_state_dict(init_state)
        t0 = time.perf_counter()
        result = fit(model, data, tr, seed=recipe["seed"], batch_size=recipe["data.batch_size"])
        seconds = time.perf_counter() - t0
        assert len(result.history) == epochs and result.status == "completed", result.reason
        return seconds / epochs, [row["val_loss"] for row in result.history]

    plain_model = plain_mlp(int(torch.tensor(data.input_shape).prod()), cfg["hidden"], data.num_outputs,
                            cfg["dropout"])

    def plain() -> tuple[float, list[float]]:
        plain_model.load_state_dict(init_state)  # same initial weights (and it checks the layers match)
        t0 = time.perf_counter()
        losses = plain_fit(plain_model, data, tr, seed=recipe["seed"], batch_size=recipe["data.batch_size"],
                           eval_bs=tr["eval_batch_size"])
        return (time.perf_counter() - t0) / epochs, losses

    info = (f"{name}: {len(data.x_train)} train / {len(data.x_val)} val examples, batch {recipe['data.batch_size']}, "
            f"hidden {cfg['hidden']}, {tr['optimizer']}, {epochs} epochs per run")
    return ours, plain, info


def measure(name: str, repeats: int, epochs: int) -> dict:
    ours, plain, info = setup(name, epochs)
    print(info, flush=True)
    (_, a), (_, b) = ours(), plain()  # warm-up, and the check that both loops do the same arithmetic
    if not torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-7):
        raise SystemExit(f"{name}: the loops disagree, so the comparison is not like for like:\n"
                         f"  dlrecipe val_loss {a}\n  plain    val_loss {b}")
    t_ours, t_plain = [], []
    for r in range(repeats):
        first, second = (ours, plain) if r % 2 == 0 else (plain, ours)  # ABBA: no fixed order
        for f in (first, second):
            (t_ours if f is ours else t_plain).append(f()[0])
    m_ours, m_plain = statistics.median(t_ours), statistics.median(t_plain)
    ratios = [o / p for o, p in zip(t_ours, t_plain, strict=True)]
    return {"case": name, "ours": m_ours, "plain": m_plain, "ratio": m_ours / m_plain,
            "paired": statistics.median(ratios), "pair_lo": min(ratios), "pair_hi": max(ratios),
            "best": min(t_ours) / min(t_plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each loop per case (median)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0 = torch's default. "
                        "1 (default): these small models gain little from threads, and on a busy machine "
                        "spinning intra-op threads make the timings swing by 10x")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats x "
          f"{args.epochs} epochs, interleaved; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)
    rows = [measure(name, args.repeats, args.epochs) for name in args.cases]
    print()
    print("dlrecipe, plain: median seconds per epoch. ratio: dlrecipe / plain (target <= 1.05). paired: median "
          "and range of the ratios of runs made back to back. fastest: ratio of the fastest runs (least disturbed "
          "by other processes).")
    print(f"{'case':<14}{'dlrecipe':>10}{'plain':>10}{'ratio':>8}{'paired':>8}{'fastest':>9}  {'paired range':<16}")
    for r in rows:
        flag = "" if r["ratio"] <= 1.05 else "above the 1.05 target"
        print(f"{r['case']:<14}{r['ours']:>10.5f}{r['plain']:>10.5f}{r['ratio']:>8.3f}{r['paired']:>8.3f}"
              f"{r['best']:>9.3f}  {r['pair_lo']:.3f} .. {r['pair_hi']:.3f}  {flag}")
    load = os.getloadavg()[0]
    if load > os.cpu_count() * 0.75:
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs: other processes disturb these timings")


if __name__ == "__main__":
    main()
