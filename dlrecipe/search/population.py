"""Population training: K search trials that share an architecture and a batch size trained as one fused model.

Why: a small model uses a fraction of a core (or a tiny fraction of a GPU); per-step Python and kernel-launch costs
dominate. K members fused into one program (dlrecipe.search.fused; a python factory's own module through
torch.func.vmap, dlrecipe.search.vmapped) pay those costs once per step for all K.

What stays per member, exactly as dlrecipe.loop.fit does it for one model: its hyperparameters (LR, weight decay,
momentum, betas, eps, rho, L1, gradient clipping, dropout, schedule, patience, LR halving), its early stopping, LR
halving, NaN/Inf detection (a diverged member is recorded "diverged" and dropped; the others go on), its best
snapshot, and its own trials/<n>/metrics.csv, model.pt and summary.json, so trials.csv and everything downstream
look as with one trial at a time. What members share, because a search's trials already share them (every trial
trains with the recipe's seed): the batch order, the batch size, the augmentation draws, the initial weights
(each member is built by build_model, as alone) and the epochs.

Equality with training alone (tests/test_population.py): on CPU, the same dropout masks (each member draws from
its own generator seeded as fit seeds the global one) and the same updates up to float rounding: the fused
kernels (batched matmul, grouped convolution, vectorised optimizer) round in another order, about 1e-6 relative
per step, so metrics agree to about 1e-4 after a few epochs (more for chaotic high-LR runs). On CUDA, dropout masks
are drawn differently from nn.Dropout's fused kernel: the same distribution, not the same masks.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..atomic import replace as replace_file
from .fused import FusedNet, FusedOptimizer, NotFusable
from .vmapped import PROBE_ROWS, VmapNet

# [train] / [model] keys that may differ between the members of one population; every other key must be equal
PER_MEMBER = ("train.lr", "train.weight_decay", "train.momentum", "train.beta1", "train.beta2", "train.eps",
              "train.rho", "train.l1", "train.grad_clip", "train.patience", "train.lr_halving", "train.schedule",
              "train.step_size", "train.gamma", "train.decay_factor", "model.dropout")
MAX_AUTO = 32            # auto population size: at most this many members (diminishing returns past it on CPU)
MAX_AUTO_CUDA = 128      # ... on a GPU, where a small model fills a tiny fraction of the device (HFTA fuses 10s-100s)
MEMORY_SHARE = 0.25      # ... their tensors within this share of the device's free memory
# ... and on CPU the members' weights, gradients and optimizer states within CACHE_SHARE of the cache one torch
# thread may count on: its core's L2 plus half its share of the L3 (the other half for activations and other
# processes), per thread. A fused step sweeps every member's tensors once forward, once backward and once in the
# update, so past the cache each member's weights come from DRAM (per member-step, at 1 thread on 2 EPYC cores with
# a 1 MB L2 and 32 MB L3: the 512-wide digits MLP 0.75 ms at K = 2-3, 0.91 ms at K = 1, 1.26 ms at K = 8; the
# 256-wide one, batch 64, 0.58 ms at K = 4, 0.78 at K = 1; the 64-wide one keeps gaining up to K = 32).
CACHE_SHARE = 0.5
FALLBACK_CACHE = 4 << 20  # bytes per thread where /sys does not say (not Linux): L2 plus half an L3 share, typical
OPTIMIZER_STATES = {"sgd": 1, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 2, "adam": 2, "adamw": 2,
                    "nadam": 2}  # tensors of the parameters' size each optimizer keeps (sgd: its momentum buffer)
PER_STEP_CHECK = 16      # a member's NaN/Inf loss is looked for every this many steps (as loop.fit does)


def group_key(recipe) -> str:
    """Trials with the same key can be one population: everything but the per-member settings is equal."""
    return repr(sorted((k, repr(v)) for k, v in recipe.values.items() if k not in PER_MEMBER))


def fusable_kind(recipe) -> str | None:
    """Why this recipe's model cannot be fused at all (None: it may be)."""
    python = recipe["model.kind"] == "python"  # the factory's own module: vmapped (vmapped.py), its keys unused
    if recipe["model.kind"] not in ("mlp", "cnn", "python"):
        return (f"model.kind = {recipe['model.kind']!r}: populations fuse the built-in mlp and cnn kinds and "
                f"python factories; these trials train one at a time")
    if not python and (recipe["model.dropconnect"] > 0 or recipe["model.activation"] in ("rrelu", "prelu")):
        return "DropConnect and the rrelu / prelu activations have no fused form; these trials train one at a time"
    unfused = [k for k, on in (
        ("model.residual", not python and recipe["model.residual"]),
        ("model.stochastic_depth", not python and recipe["model.stochastic_depth"] > 0),
        ("model.pool = 'fractional'", not python and recipe["model.pool"] == "fractional"),
        ("train.freeze", bool(recipe["train.freeze"])), ("train.unfreeze", bool(recipe["train.unfreeze"])),
        ("pretrain.epochs", recipe["pretrain.epochs"] > 0),
        ("data.augment pca_colour / resized_crop", bool({"pca_colour", "resized_crop"} & set(recipe["data.augment"]))),
        ("test.mc_dropout / test.tta", recipe["test.mc_dropout"] > 0 or bool(recipe["test.tta"]))) if on]
    if unfused:
        return f"{', '.join(unfused)} have no fused form; these trials train one at a time"
    return None


def cache_per_thread(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Bytes of cache one thread may count on (see CACHE_SHARE): its core's L2 plus CACHE_SHARE of its share of
    the L3, read from Linux's cache description (index*/level, size, shared_cpu_list); FALLBACK_CACHE without it."""
    from pathlib import Path

    sizes = {}
    for d in Path(root).glob("index*"):
        try:
            level, kind = int((d / "level").read_text()), (d / "type").read_text().strip()
            text = (d / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
            shared = sum(int(b) - int(a) + 1 for a, _, b in (r.partition("-") if "-" in r else (r, "", r)
                         for r in (d / "shared_cpu_list").read_text().strip().split(",")))
        except (OSError, ValueError):
            continue
        if kind in ("Unified", "Data") and level in (2, 3):
            sizes[level] = size / max(shared, 1)
    if 2 not in sizes and 3 not in sizes:
        return FALLBACK_CACHE
    return int(sizes.get(2, 0) + CACHE_SHARE * sizes.get(3, 0))


def auto_size(recipe, data, device: str, *, threads: int | None = None, cache: int | None = None) -> int:
    """Members per population from the model size and the device's free memory, and on CPU its cache
    (search.population = 0): on CPU as many members as keep their weights, gradients and optimizer states within
    the cache of the torch threads that run them (CACHE_SHARE), a multiple of the threads (bmm gives each thread
    whole members), at least 1."""
    from ..models import build_model, count_parameters
    from .fused import member_hyperparameters

    model = build_model(recipe, data, seed=recipe["seed"])
    params = count_parameters(model)
    acts = [0]
    leaves = [m for m in model.modules() if next(m.children(), None) is None]  # a python factory's module too
    hooks = [m.register_forward_hook(lambda m, i, o: acts.__setitem__(0, acts[0] + getattr(o, "numel", int)()))
             for m in leaves]
    with torch.no_grad():
        model.eval()(data.x_train[torch.arange(1)].float().cpu())  # an index: streamed data reads one row
    for h in hooks:
        h.remove()
    batch = max(recipe["data.batch_size"], min(recipe["train.eval_batch_size"], len(data.x_val)))
    per_member = 4 * (6 * params + 3 * batch * acts[0])  # float32: weights, grads, 2 states, best, spare; acts
    if str(device).startswith("cuda"):
        free = torch.cuda.mem_get_info()[0]
        return max(1, min(MAX_AUTO_CUDA, int(MEMORY_SHARE * free // max(per_member, 1))))
    import os

    tr = recipe.section("train")
    states = OPTIMIZER_STATES.get(tr["optimizer"], 2)
    if tr["optimizer"] == "sgd" and member_hyperparameters(tr)["momentum"] == 0:
        states = 0
    threads = threads or torch.get_num_threads()
    swept = 4 * params * (2 + states)  # float32 bytes a step sweeps per member: weights, gradients, states
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fits = min(int(MEMORY_SHARE * free // max(per_member, 1)),
               int(threads * (cache or cache_per_thread()) // max(swept, 1)))
    if fits > threads:
        fits -= fits % threads
    return max(1, min(MAX_AUTO, fits))


def _member_losses(out: torch.Tensor, y: torch.Tensor, task: str, tr: dict) -> torch.Tensor:
    """[K, B, n_out] outputs, [B] targets -> [K] mean losses, as loop.loss_function's for each member."""
    K, B = out.shape[:2]
    name = tr.get("loss", "auto")
    if task == "classification":
        return F.cross_entropy(out.reshape(K * B, -1), y.repeat(K), reduction="none").view(K, B).mean(1)
    pred = out.squeeze(-1)
    target = y.to(pred.dtype).expand(K, B)
    if name == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=tr.get("huber_delta", 1.0)).mean(1)
    return F.mse_loss(pred, target, reduction="none").mean(1)


@torch.no_grad()
def _evaluate(net: FusedNet, x, y, task: str, tr: dict, batch_size: int) -> tuple[list[float], list[float]]:
    """Each member's mean validation loss (and accuracy) in eval mode: [K] lists, one read from the device."""
    net.eval()
    loss_sum = torch.zeros(net.K, device=x.device)
    correct = torch.zeros(net.K, device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        out = net(xb)
        loss_sum += _member_losses(out, yb, task, tr) * len(xb)
        if task == "classification":
            correct += (out.argmax(dim=2) == yb).sum(1)
    net.train()
    n = max(len(x), 1)
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()


def _train_accuracy(preds: list[torch.Tensor], targets: list, targets_b: list, lams: list[float],
                    batches: list[int]) -> list[float]:
    """loop._train_accuracy for each member, over the first batches[k] batches of the epoch (fewer for a member
    that diverged, whose epoch ended early as it would alone)."""
    if not preds:
        return [0.0] * len(batches)
    guess = torch.cat(preds, dim=1).argmax(dim=2)                     # [K, N]
    hits = (guess == torch.cat(targets)).float()
    sizes = [len(t) for t in targets]
    if any(lam != 1.0 for lam in lams):
        lam = torch.tensor(lams, device=guess.device).repeat_interleave(torch.tensor(sizes, device=guess.device))
        hits = lam * hits + (1 - lam) * (guess == torch.cat(targets_b)).float()
    full = len(sizes)
    out = hits.mean(1).tolist()
    for k, nb in enumerate(batches):
        if nb < full:
            out[k] = float(hits[k, :sum(sizes[:nb])].mean()) if nb else 0.0
    return out


def train_population(folders: list[Path], recipes: list, data, *,
                     on_epoch: list[Callable[[dict], bool | None] | None] | None = None,
                     on_done: Callable[[int, object], None] | None = None) -> list:
    """Train recipes[k] into folders[k] for every k as one fused model; TrainResult per member, as train_in gives.

    on_epoch[k](row) is member k's loop.fit callback (True stops it: "stopped", used by pruners); on_done(k, result)
    is called as soon as member k has finished (its files written), while the others may still train.
    Raises NotFusable before anything is written when the members cannot be fused."""
    from .. import augment as A
    from .. import components as C
    from ..augment import config as augment_config
    from ..data import batches
    from ..models import build_model, count_parameters
    from ..runs import CsvLog, write_json
    from ..tensorboard import event_log
    from ..train import TrainResult, metric_columns

    from ..allocator import configure as configure_allocator

    configure_allocator()  # a fused step's activations are megabytes: reused, not page-faulted in (allocator.py)
    K0 = len(recipes)
    base = recipes[0]
    if len({group_key(r) for r in recipes}) != 1:
        raise NotFusable("the members differ in more than their per-member settings")
    why = fusable_kind(base)
    if why:
        raise NotFusable(why)
    if data.streamed:
        raise NotFusable("streamed data (a Dataset) is read batch by batch for each trial")
    trs = [dict(r.section("train")) for r in recipes]
    tr0, d = trs[0], base.section("data")
    seed, task, device = base["seed"], data.task, data.x_train.device
    # members whose [model] tables match get the same initial weights (the same seed): build each model once
    # (build_model initialises and runs a first forward: ~10 ms for a small MLP, a third of a GPU population's
    # time when every member built its own); FusedNet and VmapNet copy the tensors, so sharing one module is safe
    built: dict[str, torch.nn.Module] = {}
    models = []
    for r in recipes:
        key = repr(sorted(r.section("model").items()))
        if key not in built:
            built[key] = build_model(r, data, seed=seed).to(device)
        models.append(built[key])
    if base["model.kind"] == "python":  # the user's module: torch.func.vmap, or NotFusable saying why not
        net = VmapNet(models, data.x_train[:PROBE_ROWS])
    else:
        net = FusedNet(models)
    opt = FusedOptimizer(net, tr0["optimizer"], [_hyper(tr) for tr in trs])
    # each member's LR schedule on a one-number optimizer: the LRs torch's schedulers give, halving included
    clocks = []
    for tr in trs:
        dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=tr["lr"])
        clocks.append((dummy, C.SCHEDULES[tr["schedule"]].build(dummy, tr)))
    gens = [torch.Generator(device=device).manual_seed(seed) for _ in range(K0)]  # each member's dropout draws
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    augment, aug_cfg = d["augment"], augment_config(d)
    monitor = "val_loss" if task == "regression" else tr0.get("monitor", "val_loss")
    batch_size, epochs, eval_bs = d["batch_size"], tr0["epochs"], tr0.get("eval_batch_size", 1024)
    l1 = [tr.get("l1", 0.0) for tr in trs]
    clip = [tr.get("grad_clip", 0.0) for tr in trs]
    logs = [CsvLog(Path(f) / "metrics.csv", metric_columns(task)) for f in folders]
    events = [event_log(Path(f), r) for f, r in zip(folders, recipes)]  # TensorBoard beside each (train.tensorboard)
    on_epoch = on_epoch or [None] * K0

    # per-member bookkeeping, indexed by the member's original position; `alive` maps fused slot -> member
    alive = list(range(K0))
    history: list[list[dict]] = [[] for _ in range(K0)]
    best_value = [-math.inf if monitor == "val_acc" else math.inf] * K0
    best_state: list[dict | None] = [None] * K0
    best_epoch: list[int | None] = [None] * K0
    best_row: list[dict] = [{} for _ in range(K0)]
    bad = [0] * K0
    since = [0] * K0
    results: list = [None] * K0
    t_start = time.perf_counter()

    def finish(m: int, slot: int, status: str, reason: str) -> None:
        state = best_state[m] if best_state[m] is not None else net.member_state(slot)
        replace_file(Path(folders[m]) / "model.pt", lambda tmp: torch.save(state, tmp))  # atomic, synced
        logs[m].close()
        summary = {
            "name": recipes[m].name, "command": "train", "status": status, "reason": reason,
            "best_epoch": best_epoch[m], "epochs_run": len(history[m]),
            **{f"best_{k}": v for k, v in best_row[m].items() if k.startswith("val_")},
            "parameters": count_parameters(models[m]), "seconds": time.perf_counter() - t_start, "smoke": False,
            "seed": seed, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "population": K0}
        write_json(Path(folders[m]) / "summary.json", summary)
        results[m] = TrainResult(Path(folders[m]), summary, history[m])
        if on_done is not None:
            on_done(m, results[m])

    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            lrs = [clocks[m][0].param_groups[0]["lr"] for m in alive]
            opt.set_lrs(lrs)
            l1_t = torch.tensor([l1[m] for m in alive], device=device) if any(l1[m] for m in alive) else None
            clip_k = [clip[m] for m in alive]
            K = len(alive)
            loss_sum = torch.zeros(K, device=device)
            preds, targets, targets_b, lams = [], [], [], []
            n_batches = [None] * K      # a member whose loss went NaN/Inf: the batches its epoch lasted
            seen_at = [0] * K
            seen = 0
            live_gens = [gens[m] for m in alive]
            for step, idx in enumerate(batches(len(data.x_train), batch_size, order_gen, device)):
                xb, yb = data.x_train[idx], data.y_train[idx]
                yb_b, lam = None, 1.0
                if augment:
                    xb, yb, yb_b, lam = A.apply(xb, yb, augment, aug_gen, **aug_cfg)
                out = net(xb, live_gens)                                 # [K, B, n_out]
                net.step_forward_count()
                loss = _member_losses(out, yb, task, tr0)
                if yb_b is not None:  # mixup: the loss of the mixed targets
                    loss = lam * loss + (1 - lam) * _member_losses(out, yb_b, task, tr0)
                objective = loss
                if l1_t is not None:
                    penalty = sum(p.abs().flatten(1).sum(1) for n, p in net.params.items() if n in net.decay)
                    objective = loss + l1_t * penalty
                opt.zero_grad()
                objective.sum().backward()  # members are independent: each gets its own gradient
                opt.clip_grad_norm(clip_k)
                opt.step()
                loss_sum += loss.detach() * len(idx)
                if task == "classification":
                    preds.append(out.detach())
                    targets.append(yb)
                    targets_b.append(yb if yb_b is None else yb_b)
                    lams.append(lam)
                seen += len(idx)
                if step % PER_STEP_CHECK == PER_STEP_CHECK - 1:
                    finite = torch.isfinite(loss_sum).tolist()  # one read per 16 steps, as loop.fit
                    for s, ok in enumerate(finite):
                        if not ok and n_batches[s] is None:
                            n_batches[s], seen_at[s] = step + 1, seen
                    if all(n is not None for n in n_batches):
                        break
            total = len(preds) if task == "classification" else step + 1
            batches_k = [total if n is None else n for n in n_batches]
            seen_k = [seen if n is None else seen_at[s] for s, n in enumerate(n_batches)]
            sums = loss_sum.tolist()
            # a member whose epoch ended early saw fewer batches: its loss sum is NaN/Inf either way
            train_loss = [sums[s] / max(seen_k[s], 1) for s in range(K)]
            train_acc = _train_accuracy(preds, targets, targets_b, lams, batches_k) \
                if task == "classification" else None
            val_loss, val_acc = _evaluate(net, data.x_val, data.y_val, task, tr0, eval_bs)
            seconds = time.perf_counter() - t0
            done: list[tuple[int, str, str]] = []
            for s, m in enumerate(alive):
                row = {"epoch": epoch, "lr": lrs[s], "train_loss": train_loss[s]}
                if task == "classification":
                    row["train_acc"] = train_acc[s]
                finite_train = math.isfinite(train_loss[s])
                row["val_loss"] = val_loss[s] if finite_train else math.nan
                if task == "classification":
                    row["val_acc"] = val_acc[s] if finite_train else math.nan
                row["seconds"] = seconds
                history[m].append(row)
                logs[m].write(row)
                events[m].write(row)
                stop = bool(on_epoch[m](row)) if on_epoch[m] is not None else False
                tr = trs[m]
                if not (finite_train and math.isfinite(row["val_loss"])):
                    which = "training" if not finite_train else "validation"
                    done.append((s, "diverged", f"{which} loss became NaN/Inf in epoch {epoch} (LR {lrs[s]:g}): "
                                                f"lower the LR"))
                    continue
                value = row[monitor]
                if value > best_value[m] if monitor == "val_acc" else value < best_value[m]:
                    best_value[m], best_epoch[m], best_row[m] = value, epoch, dict(row)
                    best_state[m] = net.member_state(s)
                    bad[m] = since[m] = 0
                else:
                    bad[m] += 1
                    since[m] += 1
                if stop:
                    done.append((s, "stopped", f"stopped by the caller after epoch {epoch}"))
                    continue
                if tr.get("patience", 0) and bad[m] >= tr["patience"]:
                    done.append((s, "early_stopped", f"no {monitor} improvement for {bad[m]} epochs; best epoch "
                                                     f"{best_epoch[m]}"))
                    continue
                halving = tr.get("lr_halving", 0) if tr["schedule"] == "plateau" else 0
                dummy, scheduler = clocks[m]
                if halving and since[m] >= halving:
                    dummy.param_groups[0]["lr"] *= 0.5
                    since[m] = 0
                if scheduler is not None:
                    dummy.step()  # (no gradient: nothing moves) so that torch does not warn about the order
                    scheduler.step()
            for s, status, reason in done:
                finish(alive[s], s, status, reason)
            if epoch == epochs:
                for s, m in enumerate(alive):
                    if results[m] is None:
                        finish(m, s, "completed", f"ran all {epochs} epochs")
                break
            keep = [s for s in range(len(alive)) if results[alive[s]] is None]
            if not keep:
                break
            if len(keep) < len(alive):  # finished members leave the fused model: they stop costing
                opt.keep(keep)
                alive = [alive[s] for s in keep]
    finally:
        for log in logs:
            log.close()
        for ev in events:
            ev.close()
    return results


def _hyper(tr: dict) -> dict:
    from .fused import member_hyperparameters

    return member_hyperparameters(tr)
