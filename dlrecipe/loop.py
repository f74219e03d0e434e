"""The one training loop every command uses.

Per epoch: minibatch updates on a shuffled permutation, a validation pass, then early stopping (keep the best
snapshot, lecture 003), LR halving on plateau (lecture 002) or the recipe's schedule. A NaN/Inf loss ends the run
with status "diverged" instead of crashing. Same seed on CPU -> same numbers.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import augment as A
from . import components as C
from .data.prepare import Data, epoch_batches, eval_batches
from .transfer import FineTuning


@dataclass
class FitResult:
    history: list[dict]                 # one row per epoch (the columns of metrics.csv)
    status: str                         # completed | early_stopped | diverged | stopped
    best_epoch: int | None = None
    best: dict = field(default_factory=dict)   # the best epoch's row
    reason: str = ""                    # why it ended, in words
    fine_tuning: dict = field(default_factory=dict)  # train.freeze / unfreeze: what was frozen, when unfrozen


def loss_function(task: str, tr: dict) -> nn.Module:
    name = tr.get("loss", "auto")
    return C.LOSSES[C.default_loss(task) if name == "auto" else name].build(tr)


def _outputs(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    out = model(x)
    return out.squeeze(-1) if task == "regression" else out  # regression: (B, 1) -> (B,)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, loss_fn: nn.Module,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for classification) of `model` in eval mode over (x, y)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device, dtype=torch.int64)
    for i, xb in zip(range(0, len(x), batch_size), eval_batches(x, batch_size)):
        yb = y[i:i + batch_size]
        out = _outputs(model, xb, task)
        loss_sum += loss_fn(out, yb) * len(xb)
        if task == "classification":
            correct += (out.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    result = {"loss": float(loss_sum) / n}
    if task == "classification":
        result["acc"] = float(correct) / n
    return result


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's raw outputs (N, C) in eval mode: logits, or standardised regression values."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(xb) for xb in eval_batches(x, batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities (N, C) in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(xb).softmax(dim=1) for xb in eval_batches(x, batch_size)])
    model.train(was_training)
    return out


def _train_accuracy(preds: list[torch.Tensor], targets: list[torch.Tensor], targets_b: list[torch.Tensor],
                    lams: list[float]) -> float:
    """Accuracy on the epoch's training batches, scored in one pass. Batch i counts lams[i] * hits(targets[i]) +
    (1 - lams[i]) * hits(targets_b[i]): a mixup batch is scored on the blend of labels it was trained on (as in the
    mixup paper's code); any other batch has lam 1."""
    if not preds:
        return 0.0
    guess = torch.cat(preds).argmax(dim=1)
    hits = (guess == torch.cat(targets)).float()
    if all(lam == 1.0 for lam in lams):
        return float(hits.mean())
    sizes = torch.tensor([len(t) for t in targets], device=guess.device)
    lam = torch.tensor(lams, device=guess.device).repeat_interleave(sizes)
    return float((lam * hits + (1 - lam) * (guess == torch.cat(targets_b)).float()).mean())


def _better(value: float, best: float, monitor: str) -> bool:
    return value > best if monitor == "val_acc" else value < best


def fit(model: nn.Module, data: Data, tr: dict, *, seed: int = 0, augment: list[str] | None = None,
        aug_cfg: dict | None = None, on_epoch: Callable[[dict], bool | None] | None = None,
        on_step: Callable[[int], None] | None = None, max_batches: int | None = None,
        batch_size: int = 64, interruptible: bool = False) -> FitResult:
    """Train `model` on `data` with the [train] table `tr`; restore the best snapshot at the end.

    on_epoch(row) is called after each epoch; returning True stops training (status "stopped", used by pruners).
    on_step(n) is called after each minibatch with the number of examples in it (progress bars).
    max_batches limits minibatches per epoch and examples evaluated (smoke runs).
    interruptible: Ctrl-C (KeyboardInterrupt) ends training like early stopping, status "interrupted", the
    unfinished epoch dropped and the best snapshot restored; otherwise it propagates (a search stops whole).
    """
    task, device = data.task, data.y_train.device
    torch.manual_seed(seed)  # dropout, DropConnect and RReLU draw from the global generator
    order_gen = torch.Generator().manual_seed(seed)  # batch order
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    augment, aug_cfg = augment or [], aug_cfg or {}
    model.train()
    loss_fn = loss_function(task, tr)
    # --- transfer learning: frozen layers (train.freeze) never reach the optimizer; train.unfreeze stages them in
    tune = FineTuning.from_train(model, tr)
    optimizer = C.build_optimizer(model, tr)
    scheduler = C.SCHEDULES[tr["schedule"]].build(optimizer, tr)
    if "pca_colour" in augment and "pca" not in aug_cfg:  # AlexNet lighting noise: PCA of the training split's RGB
        aug_cfg = {**aug_cfg, "pca": A.fit_pca_colour(data.x_train)}
    halving = tr.get("lr_halving", 0) if tr["schedule"] == "plateau" else 0
    monitor = tr.get("monitor", "val_loss")
    if task == "regression":
        monitor = "val_loss"
    l1, clip = tr.get("l1", 0.0), tr.get("grad_clip", 0.0)
    eval_bs = tr.get("eval_batch_size", 1024)
    limit = None if max_batches is None else max_batches * batch_size
    x_val, y_val = data.x_val[:limit], data.y_val[:limit]
    epochs = epoch_batches(data.x_train, batch_size, order_gen)  # in memory: indexing; streamed: a DataLoader

    history: list[dict] = []
    best_value = -math.inf if monitor == "val_acc" else math.inf
    best_state, best_epoch, best_row = None, None, {}
    bad_epochs = since_halving = 0
    status, reason = "completed", f"ran all {tr['epochs']} epochs"
    try:
        for epoch in range(1, tr["epochs"] + 1):
            t0 = time.perf_counter()
            tune.epoch_begin(epoch, optimizer, scheduler)  # transfer learning: unfreeze on schedule, frozen BN in eval
            lr = optimizer.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=device)
            preds: list[torch.Tensor] = []  # outputs kept per batch, scored once per epoch: fewer small ops per step
            targets: list[torch.Tensor] = []
            targets_b: list[torch.Tensor] = []  # mixup's second labels (the first ones for other batches)
            lams: list[float] = []
            seen = 0
            for step, (idx, xb) in enumerate(epochs):
                if max_batches is not None and step >= max_batches:
                    break
                yb = data.y_train[idx]
                yb_b, lam = None, 1.0
                if augment:
                    xb, yb, yb_b, lam = A.apply(xb, yb, augment, aug_gen, **aug_cfg)
                out = _outputs(model, xb, task)
                loss = loss_fn(out, yb)
                if yb_b is not None:  # mixup: the loss of the mixed targets
                    loss = lam * loss + (1 - lam) * loss_fn(out, yb_b)
                objective = loss + C.weight_penalty(model, l1) if l1 > 0 else loss
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                if clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                loss_sum += loss.detach() * len(idx)
                if task == "classification":
                    preds.append(out.detach())
                    targets.append(yb)
                    targets_b.append(yb if yb_b is None else yb_b)
                    lams.append(lam)
                seen += len(idx)
                if on_step is not None:
                    on_step(len(idx))
                if step % 16 == 15 and not math.isfinite(float(loss_sum)):
                    break  # no point finishing a diverged epoch
            train_loss = float(loss_sum) / max(seen, 1)
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
            if task == "classification":
                row["train_acc"] = _train_accuracy(preds, targets, targets_b, lams)
            if math.isfinite(train_loss):
                val = evaluate(model, x_val, y_val, task, loss_fn, eval_bs)
            else:
                val = {"loss": math.nan, "acc": math.nan} if task == "classification" else {"loss": math.nan}
            row["val_loss"] = val["loss"]
            if task == "classification":
                row["val_acc"] = val["acc"]
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            stop_requested = bool(on_epoch(row)) if on_epoch is not None else False

            if not (math.isfinite(train_loss) and math.isfinite(val["loss"])):
                which = "training" if not math.isfinite(train_loss) else "validation"
                status, reason = "diverged", f"{which} loss became NaN/Inf in epoch {epoch} (LR {lr:g}): lower the LR"
                break
            value = row[monitor]
            if _better(value, best_value, monitor):
                best_value, best_epoch, best_row = value, epoch, dict(row)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                bad_epochs = since_halving = 0
            else:
                bad_epochs += 1
                since_halving += 1
            if stop_requested:
                status, reason = "stopped", f"stopped by the caller after epoch {epoch}"
                break
            if tr.get("patience", 0) and bad_epochs >= tr["patience"]:
                status = "early_stopped"
                reason = f"no {monitor} improvement for {bad_epochs} epochs; best epoch {best_epoch}"
                break
            if halving and since_halving >= halving:
                for g in optimizer.param_groups:
                    g["lr"] *= 0.5
                since_halving = 0
            if scheduler is not None:
                scheduler.step()
    except KeyboardInterrupt:
        if not interruptible:
            raise
        status = "interrupted"
        reason = (f"interrupted (Ctrl-C) after {len(history)} epochs"
                  + (f"; kept the best snapshot, epoch {best_epoch}" if best_epoch is not None else ""))

    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(history, status, best_epoch, best_row, reason, tune.summary())
