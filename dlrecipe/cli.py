"""The `dlrecipe` command line: thin adapters that parse options, call the library, render the result.

Heavy imports (torch, pandas, matplotlib) live inside the command bodies so that `dlrecipe --help` is instant.
"""
from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .display import console, err, fmt, make_progress, plain
from .errors import UserError

app = typer.Typer(
    help="Babysit neural network training, step by step: check the setup (sanity), find a learning rate "
         "(lr-find), search hyperparameters (search), train, and read the curves.\n\n"
         "Every command takes a recipe (TOML) and writes a run folder under runs/ with CSV logs.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich",
)



def _flag_type(original):
    """Typer prints a type column beside every option; for a flag it said <bool>, which reads as "takes a value"."""
    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)
    return display_type_rich


typer.core.TyperOption.display_type_rich = _flag_type(typer.core.TyperOption.display_type_rich)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"dlrecipe {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the dlrecipe version and exit", show_default=False)]
          = False) -> None:
    """Babysit neural network training, step by step."""


RecipeArg = Annotated[Path, typer.Argument(help="recipe file (TOML), e.g. recipes/digits_mlp.toml",
                                           metavar="RECIPE", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="override a recipe key (value parsed as TOML), repeatable: "
    "--set train.lr=0.1 --set model.hidden=[64,64]")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")]
SeedOpt = Annotated[int | None, typer.Option(help="override the recipe's seed")]
RunsDirOpt = Annotated[Path, typer.Option(help="where run folders are created")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output, only the result")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show full tracebacks", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else there, also "
                                       "on error (schema: dlrecipe/schema/result.schema.json); progress goes to "
                                       "stderr", show_default=False)]
TensorboardOpt = Annotated[bool, typer.Option("--tensorboard", help="also write TensorBoard event files beside each "
                                              "metrics.csv (= --set train.tensorboard=true; needs the tensorboard "
                                              "package)", show_default=False)]


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}  # a full disk, a quota, read-only, I/O


def _guard(debug: bool, body: Callable[[], object], *, json_out: bool = False, command: str | None = None) -> None:
    """Run a command body: a UserError, or an exception raised in the user's own code (a model factory, a forward
    pass), becomes one line on stderr and exit code 2 (traceback with --debug); a run folder it left running is
    recorded as failed with the reason. The body returns an exit code, or a contract Result (--json): printed as
    the one JSON object on stdout, while anything else the body prints goes to stderr."""
    from . import runs

    runs.STARTED.clear()
    stdout = sys.stdout
    text = None
    started: list[Path] = []  # the run folder an error or Ctrl-C left behind, for the --json object
    _PENDING.clear()
    try:
        with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
            code = body()
    except UserError as e:
        started = list(runs.STARTED)
        runs.mark_unfinished_failed(e)
        if debug:
            raise
        text = str(e)
        err.print(f"[bold red]error:[/] {plain(' '.join(str(e).split()))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception as e:
        started = list(runs.STARTED)
        runs.mark_unfinished_failed(e)
        from .sanity.preflight import exception_words, user_frame

        where = user_frame(e)
        if not debug and isinstance(e, OSError) and e.errno in _DISK_ERRNOS:  # the machine's state, not a bug
            text = f"cannot write {e.filename or 'a file'}: {e.strerror}; the files written before are intact"
            err.print(f"[bold red]error:[/] cannot write {plain(e.filename or 'a file')}: {plain(e.strerror)}; "
                      f"the files written before are intact", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        if debug or not where:  # not from the user's code: dlrecipe's own bug, keep the traceback
            raise
        text = f"your code raised {exception_words(e)} (at {where})"
        err.print(f"[bold red]error:[/] your code raised {plain(exception_words(e))} (at {plain(where)}); run with "
                  f"--debug for the traceback", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as e:  # an Interrupted carries what was kept and how to go on
        said = str(e) or "the run folder keeps every finished epoch"
        said = said if said.startswith("interrupted") else f"interrupted: {said}"
        err.print(plain(said), highlight=False, soft_wrap=True)
        if json_out:
            _emit(stdout, contract_error(command, said, status="interrupted", code=130, run_dir=runs.STARTED[:1]))
        raise typer.Exit(130) from None
    finally:
        if json_out and text is not None:
            _emit(stdout, contract_error(command, text, run_dir=started[:1]))
    from .contract import Result

    if isinstance(code, Result):
        _emit(stdout, code.to_dict())
        code = code.exit_code
    for message in _PENDING:  # after the result, and never beside a one-line error
        err.print(f"[yellow]warning:[/] {plain(message)}", highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)


def contract_error(command: str | None, message: str, status: str = "error", code: int = 2,
                   run_dir: list[Path] | None = None) -> dict:
    """The --json object of a command that ended without a result; run_dir: the folder it had started, if any."""
    from .contract import error_payload

    obj = error_payload(command, " ".join(str(message).split()), status=status, code=code)
    if run_dir:
        obj["run_dir"] = str(run_dir[0])
    return obj


def _emit(stream, obj: dict) -> None:
    """The --json object: one line of JSON on stdout."""
    import json

    stream.write(json.dumps(obj) + "\n")
    stream.flush()


def _result(command: str, lib_result, strict: bool = False):
    from .contract import result_of

    return result_of(command, lib_result, strict=strict)


def _load(recipe: Path, sets: list[str] | None, seed: int | None, tensorboard: bool = False):
    from .recipe import load

    overrides = list(sets or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    if tensorboard:
        overrides.append("train.tensorboard=true")
    r = load(recipe, overrides)
    from .threads import configure  # CPU threads that fit the model, and a warning on a busy machine (issue 15)

    configure(r, say=_PENDING.append)  # said when the command has run: an error stays one line
    return r


_PENDING: list[str] = []  # warnings said after the command's result (the busy-machine one)


@app.command()
def train(recipe: RecipeArg, sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
          runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
          smoke: Annotated[bool, typer.Option("--smoke", help="a few batches through training, validation, test and "
                                              "logging: for CI pipelines that only need to know it runs (exit code "
                                              "1 when it diverges)", show_default=False)] = False,
          json_out: JsonOpt = False, tensorboard: TensorboardOpt = False,
          ) -> None:
    """Train a recipe with early stopping (best snapshot kept) and LR halving; test the best model.

    Writes runs/<time>-<name>-train/: recipe.toml, env.json, metrics.csv (one row per epoch), summary.json,
    model.pt (state dict). Ctrl-C stops training early: the best snapshot so far is saved and tested, and the
    status is "interrupted" (exit code 130).

    Example: dlrecipe train recipes/digits_mlp.toml --set train.lr=0.1
    """
    def body():
        from rich.table import Table

        from .train import train as run_train

        r = _load(recipe, sets, seed, tensorboard)
        result = run_train(r, device=device, runs_dir=runs_dir, smoke=smoke, progress=make_progress(quiet))
        res = _result("train", result)
        if json_out:
            return res
        s = result.summary
        table = Table(title=f"{r.name}: {s['status']}", title_justify="left")
        cols = {"best epoch": "best_epoch", "epochs run": "epochs_run", "best val loss": "best_val_loss",
                "best val acc": "best_val_acc", "test loss": "test_loss", "test acc": "test_acc"}
        if "test_rmse" in s:  # regression: the error in the target's own units beside the standardised loss
            del cols["best val acc"], cols["test acc"]
            cols.update({"test RMSE": "test_rmse", "test MAE": "test_mae", "test R²": "test_r2"})
        if "test_averaging" in s:  # [test] mc_dropout / tta: the averaged metrics beside the plain ones
            cols[f"test acc ({s['test_averaging']})" if "test_acc_averaged" in s else
                 f"test loss ({s['test_averaging']})"] = "test_acc_averaged" if "test_acc_averaged" in s \
                else "test_loss_averaged"
        for col in cols:
            table.add_column(col, justify="right")
        table.add_row(*(fmt(s.get(k)) for k in cols.values()))
        console.print(table)
        for note in s.get("data_notes", []):
            err.print(f"note: {plain(note)}", highlight=False, soft_wrap=True)
        for warning in s.get("hidden_unit_warnings", []):
            err.print(f"warning: {plain(warning)}", highlight=False, soft_wrap=True)
        if "pretrained" in s or "fine_tuning" in s:  # transfer learning: what was loaded, frozen, unfrozen
            p, ft = s.get("pretrained", {}), s.get("fine_tuning", {})
            parts = [f"model.pretrained: {p['loaded']} layers loaded, {p['new']} new, {p['ignored']} ignored"] if p \
                else []
            parts += [f"layer {e['layer']} unfrozen at epoch {e['epoch']}" for e in ft.get("unfrozen", [])]
            if ft.get("frozen_at_end"):
                parts.append(f"frozen to the end: modules {', '.join(ft['frozen_at_end'])}")
            console.print(plain("; ".join(parts)) + " (layers.csv)", highlight=False, soft_wrap=True)
        console.print(f"{plain(s['reason'])}\nrun folder: {plain(result.run_dir)}", highlight=False, soft_wrap=True)
        return res.exit_code
    _guard(debug, body, json_out=json_out, command="train")


@app.command()
def pretrain(recipe: RecipeArg, sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
             runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
             json_out: JsonOpt = False) -> None:
    """Greedy layer-wise autoencoder pre-training of the recipe's MLP (lecture 002), [pretrain] table.

    Each hidden layer is trained in turn as a tied-weight autoencoder of the previous layer's codes. Writes
    runs/<time>-<name>-pretrain/: pretrain.csv (reconstruction loss per layer and epoch), pretrain.png,
    pretrain.pt (the hidden layers' weights: name the folder in model.pretrained to fine-tune from it).
    `train` and `run` pre-train by themselves when pretrain.epochs > 0.

    Example: dlrecipe pretrain recipes/digits_pretrain.toml
    """
    def body():
        from .pretrain import pretrain as run_pretrain

        r = _load(recipe, sets, seed)
        say = None if quiet else (lambda m: console.print(plain(m), highlight=False, soft_wrap=True))
        result = run_pretrain(r, device=device, runs_dir=runs_dir, say=say)
        if json_out:
            return _result("pretrain", result)
        console.print(f"{plain(result.summary['reason'])}\nrun folder: {plain(result.run_dir)}", highlight=False,
                      soft_wrap=True)
    _guard(debug, body, json_out=json_out, command="pretrain")


@app.command()
def search(recipe: Annotated[Path | None, typer.Argument(help="recipe file (TOML), e.g. recipes/digits_mlp.toml; "
                                                             "optional with --resume", metavar="RECIPE",
                                                             show_default=False)] = None,
           sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
           runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
           jobs: Annotated[str, typer.Option(
               metavar="N|auto", help="worker processes here at most, or auto: this process trains, and starts "
                                      "another only when the work left pays for its start-up; auto allows one per "
                                      "core (1 on a GPU)")] = "auto",
           prune: Annotated[str, typer.Option(help="stop hopeless coarse trials early: none, median or "
                                                   "successive-halving")] = "none",
           seeds: Annotated[int, typer.Option(help="rerun the selected configuration with N seeds (variance)")] = 1,
           ensemble: Annotated[int, typer.Option(help="also test the average of the top-K snapshots")] = 1,
           from_lr_find: Annotated[Path | None, typer.Option(
               help="lr-find run folder: its search_range becomes the LR range (replacing a space's train.lr)")] = None,
           storage: Annotated[str | None, typer.Option(help="Optuna storage shared by workers: postgresql://... "
                                                           "(several machines) or a journal file (default: "
                                                           "study.journal in the run folder)")] = None,
           study: Annotated[str | None, typer.Option(help="study name in --storage (default: the run folder's "
                                                         "name)")] = None,
           worker: Annotated[bool, typer.Option("--worker", help="join the existing study --study in --storage and "
                                                "run trials until none is left", show_default=False)] = False,
           resume: Annotated[Path | None, typer.Option(help="continue the killed search in this run folder")] = None,
           json_out: JsonOpt = False, tensorboard: TensorboardOpt = False,
           ) -> None:
    """Steps 4 and 5: coarse random search (trials x coarse_epochs), then fine trials narrowed around the top-k
    (fine_epochs, early stopping, LR halving); the best fine snapshot is tested once.

    The space is the recipe's \\[search] table (default: LR log-uniform over two decades, weight decay
    {0, 1e-5, 1e-4}). Writes runs/<time>-<name>-search/: trials.csv, trials/<n>/metrics.csv, summary.json,
    model.pt (selected), search_params.png, search_curves.png, study.journal. Ctrl-C keeps the finished trials,
    marks the run "interrupted" (exit code 130) and prints the --resume command that continues it.

    Examples: dlrecipe search recipes/digits_mlp.toml --jobs 2 --ensemble 3
              dlrecipe search --resume runs/<time>-digits_mlp-search
    """
    def body():
        from . import search as S

        if recipe is None and resume is None:
            raise UserError("search needs a RECIPE file, or --resume RUN to continue a killed search")
        if recipe is None and (sets or seed is not None or worker):
            raise UserError("--set, --seed and --worker need a RECIPE file (--resume continues with the search's "
                            "own recipe)")
        if recipe is None and tensorboard:
            raise UserError("--tensorboard needs a RECIPE file (--resume continues with the search's own recipe)")
        r = _load(recipe, sets, seed, tensorboard) if recipe is not None else None
        if worker:
            if not (storage and study):
                raise UserError("--worker needs --storage URL and --study NAME (the search to join)")
            run_dir, n = S.join(r, storage=storage, study=study, device=device, runs_dir=runs_dir, quiet=quiet)
            if json_out:
                from .contract import Result

                return Result("search", "completed", run_dir, {"command": "search", "study": study, "trials_run": n})
            console.print(f"ran {n} trials of study {study!r}\nrun folder: {run_dir}", highlight=False, soft_wrap=True)
            return 0
        if resume is not None:
            if storage or study:
                raise UserError("--resume takes the storage and study from the run folder: drop --storage/--study")
            result = S.resume(resume, recipe=r, device=device, jobs=jobs, quiet=quiet)
        else:
            result = S.search(r, device=device, runs_dir=runs_dir, jobs=jobs, prune=prune, seeds=seeds,
                              ensemble=ensemble, storage=storage, study=study, from_lr_find=from_lr_find,
                              quiet=quiet)
        res = _result("search", result)
        if json_out:
            return res
        s, monitor = result.summary, result.summary["monitor"]
        table = S.leaderboard(result, title=f"{s['name']}: leaderboard")
        console.print(table)
        for line in s.get("warnings", []):
            err.print(f"[yellow]warning:[/] {plain(line)}", highlight=False)
        if s["status"] != "completed":
            console.print(f"{plain(s['reason'])}\nrun folder: {plain(result.run_dir)}", highlight=False, soft_wrap=True)
            return res.exit_code
        lines = [f"selected: trial {s['selected_trial']} ({s['selected_stage']}) "
                 + " ".join(f"{k}={fmt(v)}" for k, v in s["best_params"].items()),
                 f"validation {monitor} {fmt(s.get('best_' + monitor))}   test loss {fmt(s.get('test_loss'))}"
                 + (f"   test acc {fmt(s.get('test_acc'))}" if "test_acc" in s else "")]
        if "ensemble" in s:
            e = s["ensemble"]
            lines.append(f"ensemble of {e['k']} (trials {', '.join(map(str, e['trials']))}): test loss "
                         f"{fmt(e.get('test_loss'))}" + (f"   test acc {fmt(e.get('test_acc'))}" if "test_acc" in e
                                                          else ""))
        if "seeds" in s:
            sd = s["seeds"]
            lines.append(f"{len(sd['runs'])} seeds: " + "   ".join(
                f"{k} {fmt(v['mean'])} ± {fmt(v['std'], 2)}" for k, v in sd.items() if k != "runs"))
        console.print("\n".join(lines) + f"\nrun folder: {result.run_dir}", highlight=False, soft_wrap=True)
        return 0
    _guard(debug, body, json_out=json_out, command="search")


def _lr_find_help() -> str:
    from . import lr_find as L

    return (
        "Find a learning rate that makes the loss go down (babysitting step 3), with evidence.\n\n"
        f"Probes: each LR (default {', '.join(f'{v:g}' for v in L.DEFAULT_LRS)}) trains a fresh copy of the model "
        f"from the same init for {L.PROBE_ITERATIONS} updates with a small weight decay ({L.PROBE_WEIGHT_DECAY:g} "
        f"when the recipe has none). On the smoothed loss (EMA {L.SMOOTHING:g}): diverged = NaN/Inf, above "
        f"{L.DIVERGED_FACTOR:g}x its start, or climbed back by more than {L.REBOUND_FRACTION:.0%} of its drop; "
        f"flat = fell less than {L.FLAT_FRACTION:.0%}; good otherwise. Then halve down from the smallest diverged "
        f"LR above the best one (lecture 002).\n\n"
        f"Range test: LR from --start-lr to --end-lr over {L.RANGE_ITERATIONS} updates, stopped when the smoothed "
        f"loss exceeds {L.RANGE_STOP_FACTOR:g}x its minimum; model and optimizer restored; rules steepest, valley, "
        f"min_over_10.\n\n"
        f"Recommended: the good probe with the lowest final loss; search range recommended/{L.SEARCH_BELOW:g} to "
        f"recommended x {L.SEARCH_ABOVE:g}, never above a diverged LR. At most {L.ITERATION_BUDGET} updates per "
        f"seed.\n\n"
        "Writes runs/<time>-<name>-lr-find/: probes.csv, range_test.csv, summary.json (recommended_lr, "
        "search_range, each rule's suggestion, per-probe verdicts), lr_find.png.\n\n"
        "Example: dlrecipe lr-find recipes/digits_mlp.toml --apply digits_lr.toml"
    )


@app.command("lr-find", help=_lr_find_help())
def lr_find(recipe: RecipeArg, sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
            runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
            seeds: Annotated[int, typer.Option(help="repeat with N seeds (seed, seed+1, ...): a verdict must hold "
                                                    "for every seed; shows the spread of the answer")] = 1,
            lrs: Annotated[str | None, typer.Option(metavar="LR,LR,...", help="candidate LRs to probe "
                                                    "(default 0.1,0.01,0.001,0.0001)")] = None,
            start_lr: Annotated[float, typer.Option(help="range test: first LR")] = 1e-7,
            end_lr: Annotated[float, typer.Option(help="range test: last LR")] = 10.0,
            apply: Annotated[Path | None, typer.Option(metavar="OUT.toml", help="write a copy of the recipe with "
                                                       "train.lr = the recommended LR (never the input file)")] = None,
            json_out: JsonOpt = False,
            ) -> None:
    def body():
        from rich.table import Table

        from . import lr_find as L

        if seeds < 1:
            raise UserError(f"--seeds {seeds}: at least 1")
        candidates = None if lrs is None else L.parse_lrs(lrs)
        L.check_range_bounds(start_lr, end_lr)
        if apply is not None:
            L.check_apply_path(apply, recipe)
        r = _load(recipe, sets, seed)
        log = None if quiet else (lambda message: err.print(message, highlight=False, soft_wrap=True))
        res = L.lr_find(r, device=device, runs_dir=runs_dir, seeds=seeds, lrs=candidates, start_lr=start_lr,
                        end_lr=end_lr, log=log)
        res_ = _result("lr-find", res)
        if json_out:
            if apply is not None:
                L.apply_lr(r, res.recommended_lr, apply, note=f"run {res.run_dir}")
            return res_
        several = seeds > 1
        table = Table(title=f"{r.name}: {L.PROBE_ITERATIONS}-update probes from one init, start loss "
                      f"{fmt(res.probes[0]['start_loss'])}", title_justify="left")
        for col in ("lr", "stage", "verdict", "final loss", "drop", "updates", *(["seeds"] if several else [])):
            table.add_column(col, justify="right" if col in ("lr", "final loss", "drop", "updates") else "left")
        colour = {"good": "green", "flat": "yellow", "diverged": "red"}
        for p in res.probes:
            drop = "-" if p["verdict"] == "diverged" else f"{p['drop']:.0%}"
            counts = ", ".join(f"{p['seed_verdicts'].count(v)} {v}" for v in L.VERDICTS if v in p["seed_verdicts"])
            table.add_row(f"{p['lr']:g}", p["stage"], f"[{colour[p['verdict']]}]{p['verdict']}[/]",
                          fmt(p["final_loss"]), drop, str(p["iterations"]), *([counts] if several else []))
        console.print(table)
        rules = Table(title="suggestions", title_justify="left")
        rules.add_column("rule")
        rules.add_column("lr", justify="right")
        for name, value in res.rules.items():
            rules.add_row(name, fmt(value, 3))
        console.print(rules)
        status = "" if res.status == "ok" else f" [yellow]({res.status})[/]"
        console.print(f"[bold]recommended lr: {res.recommended_lr:.3g}[/]{status}   search range: "
                      f"{res.search_range[0]:.3g} .. {res.search_range[1]:.3g}", highlight=False, soft_wrap=True)
        console.print(res.evidence, highlight=False, soft_wrap=True)
        if several:
            per = ", ".join(f"seed {p['seed']}: {p['recommended_lr']:.3g}" for p in res.per_seed)
            console.print(f"spread over {seeds} seeds: {per} (max/min {res.summary['spread']['ratio']:.3g})",
                          highlight=False, soft_wrap=True)
        console.print(f"run folder: {res.run_dir}", highlight=False, soft_wrap=True)
        if apply is not None:
            out = L.apply_lr(r, res.recommended_lr, apply, note=f"run {res.run_dir}")
            console.print(f"wrote {out} (train.lr = {res.recommended_lr:.4g}); {recipe} is unchanged",
                          highlight=False, soft_wrap=True)
        return res_.exit_code
    _guard(debug, body, json_out=json_out, command="lr-find")


SANITY_STATUS = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]",
                 "skip": "[dim]skip[/]"}
SANITY_HELP = (  # the thresholds are dlrecipe/sanity/*.py constants (tests/test_sanity.py keeps the two in step)
    "Steps 1 and 2 of the recipe: is the setup broken? Checks of the data and of the model at initialisation, each "
    "pass, warn or fail with the likely cause and what to try (skip: the check could not run on this model, and "
    "says why). First, as every command does, one forward pass and one loss on a real batch: a shape mismatch or "
    "an exception in your own module is one line naming the layer (exit code 2).\n\n"
    "[bold]labels[/]: a split with one class, classes only in validation/test, labels outside [0, C), a target "
    "that looks continuous. [bold]unregistered[/]: layers in a plain list/dict, tensors that are not parameters. "
    "[bold]nan_forward[/]: the first module that outputs NaN/Inf. [bold]logits[/]: softmax/sigmoid probabilities "
    "or a clamp (ReLU) after the last layer (log_softmax is fine). [bold]uses_input[/]: outputs identical for "
    "every example. [bold]batch_independence[/]: in eval mode, an example's output has a gradient on other "
    "examples' inputs (the layer where the batch gets mixed is named). [bold]eval_deterministic[/]: two eval "
    "passes differ. [bold]gradient_flow[/]: parameters no gradient reaches (.detach(), no_grad, unused layer); "
    "frozen ones warn.\n\n"
    "[bold]init_loss[/]: weight decay and dropout off, the mean loss of 4 batches against log C (regression: "
    "predicting the target mean); warn 1.5 above it, fail 4 above it, warn below half of it.\n\n"
    "[bold]gradient_check[/]: float64 copy, central differences (eps 1e-6, 1e-4, 1e-8, the best kept) on 16 "
    "examples for 6 entries of every parameter; probes across a ReLU or max-pool kink are skipped; warn above a "
    "relative error of 1e-5, fail above 1e-3.\n\n"
    "[bold]layer_health[/]: on 256 examples, per layer: saturated tanh/sigmoid units (warn 10%, fail 50%), dead "
    "ReLUs (warn 10%, fail 50%), identical units or all-equal weights (fail), activation std of the last hidden "
    "layer over the first (warn below 0.2 or above 5, fail below 0.01 or above 100), relative gradient "
    "||dW||/||W|| of the first layer over the last (warn below 1e-2 or above 1e2, fail below 1e-3 or above 1e3)."
    "\n\n"
    "[bold]update_ratio[/]: ||update||/||W|| after one step, about 1e-3 is healthy; warn when the geometric mean "
    "over layers is outside 1e-5..0.1, fail when a layer is above 1.\n\n"
    "[bold]input_independent[/]: 100 steps on the real inputs and on zeroed inputs; the real ones must end with "
    "a validation loss at least 2% lower.\n\n"
    "[bold]overfit_small[/]: 8 minibatches (at most 1000 examples), regularisation, dropout and augmentation off, "
    "up to 3000 iterations: pass at 99% training accuracy (regression: loss below 10% of predicting the mean), "
    "warn at 90% (30%); on failure the loss curve names the cause and LRs 10x, 100x, ... away are retried.\n\n"
    "Writes runs/<time>-<name>-sanity/: sanity.csv, layers.csv, overfit.csv, summary.json, overfit.png, "
    "layers.png, batch.png and batch.csv (the first training batch as the model receives it).\n\n"
    "Exit code 0: every check passed (warnings allowed unless --strict); 1: a check failed; 2: usage or recipe "
    "error.\n\n"
    "Example: dlrecipe sanity recipes/digits_mlp.toml --set model.init=normal --json"
)


@app.command(help=SANITY_HELP)
def sanity(recipe: RecipeArg, sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
           runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
           strict: Annotated[bool, typer.Option("--strict", help="warnings fail too (exit code 1, verdict FAIL)",
                                                show_default=False)] = False,
           json_out: JsonOpt = False,
           only: Annotated[str | None, typer.Option(metavar="CHECK,...", help="run a subset: labels, unregistered, "
                                                    "nan_forward, logits, uses_input, batch_independence, "
                                                    "eval_deterministic, gradient_flow, init_loss, gradient_check, "
                                                    "layer_health, update_ratio, input_independent, "
                                                    "overfit_small")] = None,
           overfit_batches: Annotated[int, typer.Option(min=1, help="overfit_small: minibatches in the sample "
                                                        "(at most 1000 examples)")] = 8,
           overfit_steps: Annotated[int, typer.Option(min=1, help="overfit_small: iteration budget per LR "
                                                      "tried")] = 3000,
           ) -> None:
    def body():
        from rich.table import Table

        from .sanity import parse_only, run_sanity

        names = parse_only(only)  # a bad --only is a usage error before any work
        r = _load(recipe, sets, seed)
        say = None if quiet else (lambda message: err.print(message, highlight=False, soft_wrap=True))
        result = run_sanity(r, device=device, runs_dir=runs_dir, only=names, overfit_batches=overfit_batches,
                            overfit_steps=overfit_steps, progress=say, debug=debug)
        res = _result("sanity", result, strict)
        if json_out:
            return res
        table = Table(title=f"{r.name}: sanity", title_justify="left", show_lines=True)
        for col in ("check", "status", "observed", "expected", "advice"):
            table.add_column(col, overflow="fold")
        for c in result.checks:
            table.add_row(c.check, SANITY_STATUS[c.status], plain(c.observed), plain(c.expected), plain(c.advice))
        console.print(table)
        colour = {"pass": "green", "warn": "yellow", "fail": "bold red"}[result.status]
        colour = "bold red" if res.exit_code else colour  # --strict: a warning is a failure, in words too
        console.print(f"[{colour}]{plain(res.verdict)}[/]", highlight=False, soft_wrap=True)
        console.print(f"run folder: {result.run_dir} ({result.seconds:.1f} s)", highlight=False, soft_wrap=True)
        return res.exit_code
    _guard(debug, body, json_out=json_out, command="sanity")


@app.command()
def validate(recipe: RecipeArg, sets: SetOpt = None, debug: DebugOpt = False, json_out: JsonOpt = False) -> None:
    """Check a recipe without training: keys, types, ranges, component names, the \\[search] space, then load the
    data (file, columns, target), build the model and run one forward pass and loss on a real batch, as every
    command does first.

    Prints the split sizes, input shape, classes and parameter count (and a warning for layers kept outside the
    module's registry). Exit code 0 when valid, 2 with one line naming the key, the value and what is allowed, or
    the layer where the forward pass fails and the shapes it got and expects.

    Example: dlrecipe validate recipes/digits_mlp.toml --set model.activation=tanh
    """
    def body():
        from .data import load_data
        from .models import build_model, count_parameters
        from .search import parse_space

        r = _load(recipe, sets, None)
        if json_out:
            from .api import validate as api_validate

            return api_validate(r)
        space = parse_space(r) if r["search.space"] else {}  # the same checks `dlrecipe search` makes at start
        data = load_data(r, "cpu")  # a missing file, column or target fails here, not an hour into a run
        model = build_model(r, data)  # one forward pass and loss on a real batch: shapes checked here
        from .transfer import FineTuning

        FineTuning.from_train(model, r.section("train"))  # train.freeze names layers the model has
        params = count_parameters(model)
        searched = f", searches {', '.join(space)}" if space else ""
        shape = "x".join(map(str, data.x_train.shape[1:]))
        outputs = f"{data.num_outputs} classes" if r["task"] == "classification" else "regression"
        if data.columns:
            from rich.table import Table

            table = Table(title="columns (encoder fitted on the training split)", title_justify="left")
            for col in ("column", "dtype", "encoding"):
                table.add_column(col)
            for c in data.columns:
                table.add_row(plain(c["column"]), plain(c["dtype"]), plain(c["encoding"]))
            table.add_row(plain(r["data.target"]), "target", "class labels" if r["task"] == "classification"
                          else "standardised with the training mean and std")
            console.print(table)
        for note in data.notes:
            console.print(f"note: {plain(note)}", highlight=False, soft_wrap=True)
        from .usercode import code_it_runs

        code = code_it_runs(r)  # a recipe is data; these keys name Python code that runs with your rights
        if code:
            console.print(f"[yellow]note:[/] this recipe imports and runs {plain(', '.join(code))}",
                          highlight=False, soft_wrap=True)
        console.print(f"[green]ok[/]: {plain(recipe)} ({r.name}: {r['task']}, data {plain(r['data.source'])}, "
                      f"model {r['model.kind']}, optimizer {r['train.optimizer']}{searched})\n"
                      f"data: {len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test examples "
                      f"of shape {shape}, {outputs}; model: {params:,} parameters", highlight=False, soft_wrap=True)
        from .sanity.preflight import unregistered

        loose = [f"{where} ({what})" for where, what, trainable in unregistered(model) if trainable]
        if loose:  # not counted above and never trained: `dlrecipe sanity` fails its unregistered check
            err.print(f"[yellow]warning:[/] not registered with the module, so not trained: {plain(', '.join(loose))}; "
                      f"use nn.ModuleList / nn.ModuleDict / nn.Parameter", highlight=False, soft_wrap=True)
        if hasattr(model, "pretrained_report"):  # model.pretrained: what the load did, per layer
            loads = ", ".join(f"{row['name']} {row['status']}" + (f" ({row['detail']})" if row["status"] == "new" else "")
                              for row in model.pretrained_report)
            console.print(f"model.pretrained: {plain(loads)}", highlight=False, soft_wrap=True)
    _guard(debug, body, json_out=json_out, command="validate")


@app.command()
def predict(run_dir: Annotated[Path, typer.Argument(help="a run folder with a saved model (train, search, run)",
                                                   metavar="RUN_DIR", show_default=False)],
            input_path: Annotated[Path, typer.Argument(help="new data: a .csv / .parquet table (the training "
                                                       "columns; the target column optional), an .npz with x, or "
                                                       "an image folder", metavar="INPUT", show_default=False)],
            output: Annotated[Path | None, typer.Option("--output", "-o", help="write the predictions to this CSV "
                                                        "file instead of a new run folder")] = None,
            runs_dir: RunsDirOpt = Path("runs"), debug: DebugOpt = False, json_out: JsonOpt = False) -> None:
    """Use a trained model on new data: the training-time transform (table encoder, layout, preprocessing
    statistics) is applied exactly, and one row per example is written.

    Columns of predictions.csv: row (the input's row number, or the image file), prediction (a class name, or a
    value in the target's own units), prob_<class> for each class, and target when the input has the labels (then
    accuracy, or RMSE / MAE / R², is printed). Writes runs/<time>-<name>-predict/ (predictions.csv,
    summary.json) unless --output is given. The model is loaded with weights_only=True and a table's encoder
    from its skops file, checked against its SHA-256.

    Examples: dlrecipe predict runs/<time>-penguins-train new_penguins.csv
              dlrecipe predict runs/<time>-shapes-run new_images/ -o predictions.csv
    """
    def body():
        from .predict import predict as run_predict

        res = run_predict(run_dir, input_path, output=output, runs_dir=runs_dir)
        if json_out:
            return _result("predict", res)
        s = res.summary
        names = {"input_acc": "accuracy", "input_rmse": "RMSE", "input_mae": "MAE", "input_r2": "R²"}
        scores = ", ".join(f"{names[k]} {fmt(v)}" for k, v in s.items() if k in names)
        where = res.run_dir / "predictions.csv" if res.run_dir is not None else output
        console.print(f"{s['rows']} predictions by {plain(s['model'])}" + (f"; against the input's labels: "
                      f"{scores}" if scores else "") + f"\npredictions: {plain(where)}", highlight=False,
                      soft_wrap=True)
    _guard(debug, body, json_out=json_out, command="predict")


@app.command()
def keys(section: Annotated[str | None, typer.Argument(help="only this table: top (name, seed, task, description), "
                                                       "data, model, train or search", metavar="[SECTION]",
                                                       show_default=False)] = None) -> None:
    """Every recipe key with its type, default and meaning (what the README's recipe reference lists).

    Example: dlrecipe keys train
    """
    from rich import box
    from rich.table import Table

    from .recipe import SCHEMA, SECTIONS, reference_row

    def body():
        if section is not None and section not in (*SECTIONS, "top"):
            raise UserError(f"keys {section!r}: unknown table; allowed: top, {', '.join(SECTIONS)}")
        chosen = [k for k in SCHEMA
                  if section is None or (k.split(".")[0] == section if "." in k else section == "top")]
        where = {None: "", "top": " outside any table"}.get(section, f" in [{section}]")
        table = Table(title=plain(f"recipe keys{where}"),
                      title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
        for col in ("key", "type", "default", "meaning (allowed)"):
            table.add_column(col, overflow="fold", no_wrap=col == "key")
        for k in chosen:
            cells = [c.strip().strip("`") for c in reference_row(k).strip("|").split(" | ")]
            table.add_row(*(plain(c) for c in cells))
        console.print(table)
    _guard(False, body)


@app.command()
def components() -> None:
    """List every model kind, activation, init, norm, regulariser, optimizer, schedule, loss, preprocessing,
    augmentation, file format and dataset, with a one-line description and the lecture it comes from."""
    from rich.table import Table

    from .catalog import catalog

    for group, entries in catalog().items():
        table = Table(title=group, title_justify="left", show_header=True, expand=False)
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("lecture")
        for name, summary, lecture in entries:
            table.add_row(name, summary, lecture)
        console.print(table)


@app.command()
def runs(runs_dir: RunsDirOpt = Path("runs"), limit: Annotated[int, typer.Option(help="newest N runs")] = 20) -> None:
    """List past runs, newest first: run folder (<time>-<name>-<command>), status, best validation metric, test
    metric."""
    from rich import box
    from rich.table import Table

    from .runs import list_runs

    rows = []

    def body():
        if limit < 1:
            raise UserError(f"--limit {limit} is not allowed: at least 1 (the newest N runs)")
        rows.extend(list_runs(runs_dir)[:limit])
    _guard(False, body)
    if not rows:
        console.print(f"no runs under {plain(runs_dir)}", soft_wrap=True)
        return
    table = Table(title=f"runs in {plain(runs_dir)}, newest first", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("run", no_wrap=True)
    table.add_column("status")
    table.add_column("best val", justify="right")
    table.add_column("test", justify="right")
    for r in rows:  # accuracy where the run has one, else loss (regression), named in each cell
        table.add_row(*(fmt(r[k]) for k in ("run", "status")),
                      *(f"{r['metric']} {fmt(r[k], 3)}" if r[k] is not None else "-" for k in ("best_val", "test")))
    console.print(table)


RUN_HELP = (
    "The whole recipe, each step feeding the next: [bold]sanity[/] (stop on a failed check), [bold]lr-find[/] "
    "(recommended LR and range), [bold]search[/] (coarse random trials, then refined longer ones, LR from "
    "lr-find's range), then back to the search (step 7) with the change the selected trial's diagnosis calls "
    "for (overfitting: more regularisation, mixup; underfitting or LR too low: less, a higher LR range, longer; "
    "train longer: more fine epochs; LR too high or noisy validation: a lower LR range, a larger batch), pass "
    "after pass, until no actionable alarm remains, a pass does not improve validation, the budget is spent or "
    "--passes N are done; then the best model on validation (an ensemble of the best few when it is better) is "
    "tested once on the test split, and the [bold]report[/].\n\n"
    "Writes runs/<time>-<name>-run/ with 1-sanity/, 2-lr-find/, 3-search/ (and 3-search-pass2/, ...; each as its "
    "own command writes it), 4-seeds/ (with --budget), steps.csv (one row per step and pass), summary.json, "
    "report.md and report.html.\n\n"
    "--budget MINUTES plans each pass from the time left (half of it while more passes may follow), from "
    "lr-find's measured seconds per update and then the previous pass's trials: trial counts and epochs shrink "
    "to fit, or the trial counts grow (up to 25x); what the passes leave trains the selected configuration from "
    "more seeds. Without --budget each pass uses the recipe's \\[search] settings.\n\n"
    "Exit code 0: completed; 1: stopped by a failed sanity check (without --force) or the search found no "
    "model; 2: usage or recipe error; 130: interrupted (Ctrl-C: the step it was in is marked interrupted in "
    "steps.csv). --resume RUN continues an interrupted or killed run: finished steps and passes are kept, an "
    "interrupted search keeps its finished trials, an unfinished sanity or lr-find runs again.\n\n"
    "Examples: dlrecipe run recipes/mnist1d_mlp.toml --budget 8\n"
    "          dlrecipe run --resume runs/<time>-mnist1d_mlp-run"
)


@app.command("run", help=RUN_HELP)
def run_all(recipe: Annotated[Path | None, typer.Argument(help="recipe file (TOML), e.g. recipes/digits_mlp.toml; "
                                                              "optional with --resume", metavar="RECIPE",
                                                              show_default=False)] = None,
            sets: SetOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = None,
            runs_dir: RunsDirOpt = Path("runs"), quiet: QuietOpt = False, debug: DebugOpt = False,
            budget: Annotated[float | None, typer.Option(metavar="MINUTES", help="fit the whole run in about this "
                                                         "many minutes (scales the search)")] = None,
            force: Annotated[bool, typer.Option("--force", help="go on after a failed sanity check",
                                                show_default=False)] = False,
            jobs: Annotated[str, typer.Option(metavar="N|auto", help="search worker processes at most, or auto "
                                                                     "(see dlrecipe search --help)")] = "auto",
            resume: Annotated[Path | None, typer.Option(help="continue the interrupted or killed run in this run "
                                                             "folder: finished steps and trials are kept")] = None,
            passes: Annotated[int, typer.Option(min=1, help="search passes at most: after each, go back to the "
                                                "search with the change its diagnosis calls for (1: one search)")]
            = 3,
            json_out: JsonOpt = False, tensorboard: TensorboardOpt = False,
            ) -> None:
    def body():
        from rich import box
        from rich.table import Table

        from .pipeline import resume_run, run_recipe
        from .report import sparkline

        say = None if quiet else (lambda message: err.print(message, highlight=False, soft_wrap=True, markup=False))
        if resume is not None:
            if recipe is not None or sets or seed is not None or budget is not None or force or tensorboard:
                raise UserError("--resume continues the run with its own recipe, budget and --force: drop RECIPE, "
                                "--set, --seed, --budget and --force")
            res = resume_run(resume, device=device, jobs=jobs, say=say, quiet=quiet)
        elif recipe is None:
            raise UserError("run needs a RECIPE file, or --resume RUN to continue an interrupted run")
        else:
            res = run_recipe(_load(recipe, sets, seed, tensorboard), device=device, runs_dir=runs_dir,
                             budget_minutes=budget, force=force, jobs=jobs, say=say, quiet=quiet, passes=passes)
        if json_out:
            return _result("run", res)
        minutes = res.summary.get("budget_minutes")
        table = Table(title=f"{res.summary['name']}: dlrecipe run", title_justify="left", box=box.SIMPLE_HEAD,
                      show_lines=False)
        for col, justify in (("step", "left"), ("status", "left"), ("result", "left"), ("s", "right")):
            table.add_column(col, justify=justify, overflow="fold")
        for row in res.steps:
            table.add_row(plain(row["step"]), plain(row["status"]), plain(row["result"]), f"{row['seconds']:.1f}")
        console.print(table)
        if res.report is not None:
            for c in res.report.curves:
                console.print(f"[bold]{plain(c.label)}[/] val_loss {sparkline(c.metrics['val_loss'], 40)}",
                              highlight=False, soft_wrap=True)
                for f in c.findings:
                    console.print(f"  [yellow]{f.code}[/]: {plain(f.message)}\n    next: {plain(f.advice)}",
                                  highlight=False, soft_wrap=True)
        s = res.summary
        for line in s["warnings"] + ((s.get("search") or {}).get("warnings") or []):
            err.print(f"[yellow]warning:[/] {plain(line)}", highlight=False, soft_wrap=True)
        colour = "green" if s["status"] == "completed" else "bold red"
        console.print(f"[{colour}]{s['status']}[/]: {plain(s['reason'])}", highlight=False, soft_wrap=True)
        spent = f"{s['seconds']:.0f} s" + (f" of a {minutes:g}-minute budget" if minutes else "")
        console.print(f"run folder: {plain(res.run_dir)} ({spent}); report: {plain(res.run_dir / 'report.html')}",
                      highlight=False, soft_wrap=True)
        return _result("run", res).exit_code
    _guard(debug, body, json_out=json_out, command="run")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder (train, search, sanity, lr-find, ...)",
                                                  metavar="RUN_DIR", show_default=False)],
           debug: DebugOpt = False, json_out: JsonOpt = False) -> None:
    """Read a run's curves: plots (scatter + moving average) and a written diagnosis with the next step.

    Diagnoses overfitting, underfitting, LR too high (diverging or bouncing loss), LR too low (a steady crawl),
    still improving (train longer), best epoch too early, noisy validation. Writes report.md, report.html (figures embedded),
    report.json and report_*.png into the run folder.

    Example: dlrecipe report runs/20261123-191735-digits_mlp-train
    """
    def body():
        from .report import NO_CURVES, build_report, sparkline

        rep = build_report(run_dir)
        if json_out:
            return _result("report", rep)
        if rep.headline:
            console.print(plain(rep.headline.replace("**", "")), highlight=False, soft_wrap=True)
        if not rep.curves:
            console.print(NO_CURVES, highlight=False, soft_wrap=True)
        for c in rep.curves:
            console.print(f"[bold]{plain(c.label)}[/]\n  val_loss per epoch {sparkline(c.metrics['val_loss'])}",
                          highlight=False, soft_wrap=True)
            if not c.findings:
                console.print("  [green]no alarm[/]: the curves look healthy", soft_wrap=True)
            for f in c.findings:
                console.print(f"  [yellow]{f.code}[/]: {plain(f.message)}\n    next: {plain(f.advice)}",
                              highlight=False, soft_wrap=True)
        console.print(f"report: {rep.run_dir / 'report.html'}", highlight=False, soft_wrap=True)
    _guard(debug, body, json_out=json_out, command="report")


@app.command()
def compare(run_dirs: Annotated[list[Path], typer.Argument(help="two or more run folders", metavar="RUN_DIR",
                                                            show_default=False)],
            runs_dir: RunsDirOpt = Path("runs"), debug: DebugOpt = False) -> None:
    """One table and one plot across runs (validation curves on shared axes).

    Writes runs/<time>-compare-compare/compare.csv and compare.png.

    Example: dlrecipe compare runs/*digits_mlp-train
    """
    def body():
        from rich import box
        from rich.table import Table

        from .report import compare as run_compare

        table, out = run_compare(run_dirs, runs_dir)
        shown = {"run": "run", "status": "status", "best_val_loss": "val\nloss", "best_val_acc": "val\nacc",
                 "test_loss": "test\nloss", "test_acc": "test\nacc"}  # compare.csv has every column
        if (table["status"].isin(["completed", "early_stopped"])).all():
            del shown["status"]  # shown only when it tells runs apart
        t = Table(title=f"{len(table)} runs: best validation and test metrics", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True)
        missing = table.astype(object).where(table.notna(), None)  # a metric a run does not have: "-", not "nan"
        rows = [[fmt(row[c], 3) for c in shown] for row in missing.to_dict("records")]
        for i, (col, header) in enumerate(shown.items()):  # each column as wide as its widest cell
            width = max(len(part) for text in [header, *(r[i] for r in rows)] for part in text.split("\n"))
            t.add_column(header, no_wrap=True, min_width=width, justify="left" if col in ("run", "status") else "right")
        for cells in rows:
            t.add_row(*cells)
        console.print(t)
        console.print(f"table (every column, and the curve plotted) and plot: {plain(out)}",
                      highlight=False, soft_wrap=True)
    _guard(debug, body)


def _reflow(doc: str) -> str:
    """A docstring as help text: lines of a paragraph joined (rich help keeps every newline, so lines wrapped for
    the source came out ragged at 80 columns); an indented line (an example's continuation) keeps its own line."""
    import inspect

    paragraphs = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines = para.split("\n")
        out = lines[0]
        for line in lines[1:]:
            out += ("\n" + line) if line[:1].isspace() else (" " + line)
        paragraphs.append(out)
    return "\n\n".join(paragraphs)


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _reflow(_info.callback.__doc__)

# `dlrecipe --help` lists the main command first, then the steps in the recipe's order, then the tools
ORDER = ("run", "sanity", "lr-find", "search", "train", "pretrain", "report", "predict", "validate", "keys",
         "components", "runs", "compare")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__)
                             if (c.name or c.callback.__name__) in ORDER else len(ORDER))


def main() -> None:
    """The console script. With --json, a command line that does not parse is also one JSON object on stdout."""
    argv = sys.argv[1:]
    if "--json" not in argv:
        app(prog_name="dlrecipe")
        return
    try:
        code = app(prog_name="dlrecipe", standalone_mode=False)
    except Exception as e:  # a usage error (unknown option, missing argument, bad value) from Typer's parser
        if not (hasattr(e, "format_message") and hasattr(e, "show")):
            raise
        e.show()
        command = next((a for a in argv if not a.startswith("-")), None)
        _emit(sys.stdout, contract_error(command if command in ORDER else None, e.format_message()))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
