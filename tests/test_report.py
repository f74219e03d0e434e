"""Step 6: the written diagnosis on crafted curves, and the report files (real, non-empty PNGs)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlrecipe.diagnose import diagnose, moving_average
from dlrecipe.errors import UserError
from dlrecipe.report import build_report, compare, sparkline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curves(train_loss, val_loss, train_acc=None, val_acc=None, lr=0.1) -> pd.DataFrame:
    n = len(train_loss)
    df = pd.DataFrame({"epoch": np.arange(1, n + 1), "lr": lr, "train_loss": train_loss, "val_loss": val_loss})
    if train_acc is not None:
        df.insert(3, "train_acc", train_acc)
        df["val_acc"] = val_acc
    return df


E = np.arange(30)
HEALTHY = curves(1.0 * np.exp(-E / 8) + 0.10, 1.0 * np.exp(-E / 8) + 0.15,
                 0.95 - 0.6 * np.exp(-E / 8), 0.93 - 0.6 * np.exp(-E / 8))
HEALTHY = HEALTHY.iloc[:30]
HEALTHY.loc[:, "val_loss"] = np.r_[HEALTHY["val_loss"].to_numpy()[:20], np.full(10, HEALTHY["val_loss"].iloc[19])]
OVERFIT = curves(np.exp(-E / 5), np.r_[np.exp(-np.arange(10) / 5), np.exp(-2) + 0.04 * np.arange(1, 21)],
                 1 - 0.5 * np.exp(-E / 5), np.r_[0.5 + 0.04 * np.arange(10), np.full(20, 0.86)])
UNDERFIT = curves(np.full(30, 2.2) - 0.001 * E, np.full(30, 2.25) - 0.001 * E, np.full(30, 0.15), np.full(30, 0.14))
DIVERGING = curves([2.3, 2.5, 3.9, 8.0, np.nan], [2.3, 2.6, 4.0, 9.0, np.nan], [0.1] * 5, [0.1] * 5, lr=1.0)
RISING = curves(np.linspace(2.3, 6.0, 10), np.linspace(2.3, 6.5, 10), np.full(10, 0.1), np.full(10, 0.1))
STILL_FALLING = curves(np.linspace(2.0, 0.5, 12), np.linspace(2.1, 0.6, 12), np.linspace(0.3, 0.85, 12),
                       np.linspace(0.3, 0.8, 12))
TRIALS = [OVERFIT, UNDERFIT, STILL_FALLING]


def codes(df):
    return {f.code for f in diagnose(df)}


def test_overfitting_curve_is_diagnosed_as_overfitting():
    found = diagnose(OVERFIT)
    assert "overfitting" in {f.code for f in found}
    f = next(f for f in found if f.code == "overfitting")
    assert "epoch 10" in f.message and "regularisation" in f.advice


def test_flat_curve_is_underfitting():
    assert "underfitting" in codes(UNDERFIT)


def test_diverging_curve_means_lr_too_high():
    (f,) = diagnose(DIVERGING)
    assert f.code == "diverged" and "epoch 5" in f.message and "LR" in f.advice
    assert "lr_too_high" in codes(RISING)


def test_still_falling_means_train_longer():
    found = diagnose(STILL_FALLING)
    assert "train_longer" in {f.code for f in found}
    assert "overfitting" not in {f.code for f in found}


def test_a_steady_crawl_means_lr_too_low_not_just_train_longer():
    """Lecture 002: loss not going down -> LR too low. A val loss falling 15% in 20 epochs at an even pace."""
    crawl = 3.4 - 0.026 * np.arange(20)
    found = {f.code: f for f in diagnose(curves(crawl + 0.3, crawl, np.full(20, 0.1), np.full(20, 0.1), lr=1e-5))}
    assert "lr_too_low" in found and "train_longer" not in found
    assert "fell only 15% in 20 epochs" in found["lr_too_low"].message and "raise the LR" in found["lr_too_low"].advice
    decelerating = 0.42 + 0.08 * np.exp(-np.arange(20) / 4)  # a small total drop that slows down: a good LR, long
    assert {f.code for f in diagnose(curves(decelerating, decelerating, None, None))} == {"train_longer"}
    noisy = crawl * (1 + 0.03 * np.tile([1, -1], 10))  # zig-zags down: not a steady crawl
    assert "lr_too_low" not in {f.code for f in diagnose(curves(noisy, noisy, None, None))}


def test_healthy_curve_gets_no_alarm():
    assert diagnose(HEALTHY) == []


def test_moving_average_and_sparkline():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 3), [1.5, 2, 3, 3.5])
    assert sparkline([0, 1, 2]) == "▁▄█" and sparkline([1, float("nan")]) == "▁×"


@pytest.mark.parametrize("df", [OVERFIT, UNDERFIT])
def test_report_writes_markdown_html_and_real_pngs(tmp_path, df):
    df.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "summary.json").write_text('{"status": "completed", "test_acc": 0.9}')
    rep = build_report(tmp_path)
    for f in rep.files:
        assert f.is_file() and f.stat().st_size > 0
    pngs = [f for f in rep.files if f.suffix == ".png"]
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000 for p in pngs)
    md = (tmp_path / "report.md").read_text()
    assert "Diagnosis" in md and "test_acc" in md and "report_curves.png" in md
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page


def test_report_of_a_search_plots_every_trial(tmp_path):
    (tmp_path / "recipe.toml").write_text('name = "s"\n')  # a search killed before its summary: recipe.toml only
    for i, df in enumerate(TRIALS):
        (tmp_path / "trials" / str(i)).mkdir(parents=True)
        df.to_csv(tmp_path / "trials" / str(i) / "metrics.csv", index=False)
    rep = build_report(tmp_path)
    assert (tmp_path / "report_trials.png").read_bytes()[:8] == PNG_MAGIC
    (curve,) = rep.curves  # no selection recorded: the trial with the lowest validation loss is diagnosed
    assert curve.label == f"trials/{min(range(3), key=lambda i: TRIALS[i].val_loss.min())} (best val_loss)"
    (tmp_path / "summary.json").write_text('{"status": "completed", "selected_trial": 2}')
    (curve,) = build_report(tmp_path).curves  # the search's selected trial, whatever its validation loss
    assert curve.label == "trials/2 (selected)" and "train_longer" in {f.code for f in curve.findings}
    longer = next(f for f in curve.findings if f.code == "train_longer")
    assert "search.fine_epochs" in longer.advice  # a trial's epochs are the search's, not train.epochs


def test_report_of_a_sanity_folder_without_curves_still_has_its_tables_and_figures(tmp_path):
    (tmp_path / "summary.json").write_text('{"status": "fail", "command": "sanity"}')
    pd.DataFrame({"check": ["init_loss"], "status": ["fail"]}).to_csv(tmp_path / "sanity.csv", index=False)
    rep = build_report(tmp_path)
    assert rep.curves == []
    md = (tmp_path / "report.md").read_text()
    assert "<summary>Table: Sanity checks (sanity.csv)</summary>" in md and "init_loss" in md
    assert "no training curves to diagnose" in md and "no alarm" not in md  # nothing trained: no all-clear
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a dlrecipe run folder"):
        build_report(tmp_path / "empty")


def test_summaries_read_as_key_value_rows_not_json(tmp_path):
    """Nested tables become dotted keys, number lists a comma list, per-check rows point to the CSV that holds
    them; a | inside a value stays inside its cell in the HTML."""
    summary = {"command": "sanity", "status": "pass", "checks": [{"check": "init_loss", "details": {"loss": 2.3}}],
               "rules": {"probes": 0.01, "steepest": 0.0148496}, "search_range": [0.001, 0.03],
               "probes": [{"lr": 0.1, "verdict": "good", "seeds": ["good", "flat"]}, {"lr": 0.0123456}],
               "warnings": [], "reason": "a | b"}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    for row in ["| checks | 1 row: see sanity.csv |", "| rules.probes | 0.01 |", "| rules.steepest | 0.01485 |",
                "| search_range | 0.001, 0.03 |", "| probes | 2 rows: the table below |", "| warnings | none |",
                "| reason | a \\| b |", "<summary>Summary: " + tmp_path.name + " (summary.json", "**probes**",
                "| lr | verdict | seeds |", "| 0.1 | good | good, flat |", "| 0.01235 |  |  |"]:
        assert row in md
    assert "{" not in md.split("<summary>Summary")[1]
    html = (tmp_path / "report.html").read_text()
    assert "<td>reason</td>\n<td>a | b</td>" in html and "<th>key</th>\n<th>value</th>" in html  # markdown-it's


def test_the_report_opens_with_the_status_and_shows_csv_cells_as_written(tmp_path):
    """An interrupted run says so before its diagnosis; an empty CSV cell stays empty while a NaN loss reads nan;
    a long table is sampled evenly, first and last rows included."""
    STILL_FALLING.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps({"command": "train", "status": "interrupted",
                                                       "reason": "interrupted (Ctrl-C) after 12 epochs",
                                                       "test_acc": 0.81234}))
    rows = ["1,nan,"] + [f"{i},0.5," for i in range(2, 100)] + ["100,0.5,last"]  # as dlrecipe's CSV logs write
    (tmp_path / "probes.csv").write_text("iteration,loss,note\n" + "\n".join(rows) + "\n")
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    first = md.split("## Contents")[0]  # the header card
    assert ("**Status: interrupted**: interrupted (Ctrl-C) after 12 epochs. Selected model: test accuracy 0.8123"
            in first)
    assert "did not finish" in first
    probes = md.split("<summary>Table: Learning-rate probes (probes.csv)</summary>")[1].split("</details>")[0]
    assert probes.strip().startswith("(40 of 100 rows, evenly spaced")
    body = [line for line in probes.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(body) == 40 and body[0] == "| 1 | nan |  |" and body[-1] == "| 100 | 0.5 | last |"
    from typer.testing import CliRunner

    from dlrecipe.cli import app

    res = CliRunner().invoke(app, ["report", str(tmp_path)])  # the terminal says it first too
    assert res.exit_code == 0 and res.output.startswith("Status: interrupted: interrupted (Ctrl-C) after 12 epochs")


def test_a_folder_of_runs_is_refused_before_anything_is_written(tmp_path):
    for name in ("20261202-100000-a-train", "20261202-100001-b-train"):
        (tmp_path / name).mkdir()
        HEALTHY.to_csv(tmp_path / name / "metrics.csv", index=False)
    with pytest.raises(UserError, match="holds 2 run folders, not one run.*dlrecipe compare"):
        build_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261202-100000-a-train", "20261202-100001-b-train"]


def test_a_run_stopped_before_its_first_epoch_says_so(tmp_path):
    (tmp_path / "recipe.toml").write_text('name = "a"\n')
    (tmp_path / "env.json").write_text("{}")
    with pytest.raises(UserError, match="nothing to report yet.*before its first epoch"):
        build_report(tmp_path)


@pytest.mark.parametrize("text, reason", [("", "No columns to parse"), ('epoch,val_loss\n1,"0.5\n', "EOF inside")])
def test_an_unreadable_metrics_csv_is_a_one_line_error_naming_it(tmp_path, text, reason):
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(UserError, match=f"metrics.csv: cannot read it as CSV.*{reason}"):
        build_report(tmp_path)
    from typer.testing import CliRunner

    from dlrecipe.cli import app

    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "Traceback" not in res.output


def test_an_unreadable_side_table_is_noted_and_the_report_goes_on(tmp_path):
    HEALTHY.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "notes.csv").write_text("")  # a user's file, not one dlrecipe wrote
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "<summary>Table: Notes (notes.csv)</summary>" in md and "not shown:" in md and "## Diagnosis" in md


def test_compare_writes_one_table_and_one_plot(tmp_path):
    runs = []
    for name, df in [("a", OVERFIT), ("b", HEALTHY)]:
        d = tmp_path / name
        d.mkdir()
        df.to_csv(d / "metrics.csv", index=False)
        (d / "summary.json").write_text(f'{{"name": "{name}", "best_val_acc": 0.9}}')
        runs.append(d)
    run = tmp_path / "c-run" / "3-search"  # a chained run: its curve is the selected trial's
    for n, df in ((0, UNDERFIT), (4, HEALTHY)):
        (run / "trials" / str(n)).mkdir(parents=True)
        df.to_csv(run / "trials" / str(n) / "metrics.csv", index=False)
    (run / "summary.json").write_text('{"selected_trial": 4}')
    (run.parent / "summary.json").write_text('{"name": "c", "command": "run", "test_acc": 0.9, "best_epoch": 23}')
    runs.append(run.parent)
    table, out = compare(runs, runs_dir=tmp_path / "runs")
    assert list(table["name"]) == ["a", "b", "c"]
    assert pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False)["best_epoch"].tolist() == ["", "", "23"]
    assert list(table["curve"]) == ["metrics.csv", "metrics.csv", "3-search/trials/4/metrics.csv"]
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC and (out / "compare.csv").is_file()
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"  # `dlrecipe runs`: not "killed"
    (runs[0] / "summary.json").unlink()  # killed: metrics but no summary
    table, _ = compare(runs[:1], runs_dir=tmp_path / "runs")
    assert table["status"].tolist() == ["running or killed"]  # what `dlrecipe runs` says, not a blank


def test_mixup_training_curves_do_not_raise_train_based_alarms():
    """Mixup's training loss bounces with each batch's mixing weight and its accuracy stays low: not a fault."""
    rng = np.random.default_rng(0)
    val = np.r_[1.0 * np.exp(-np.arange(20) / 4) + 0.13, np.full(10, 0.14)]
    mixup = curves(0.4 + 0.15 * rng.standard_normal(30), val, 0.6 + 0.1 * rng.standard_normal(30),
                   np.r_[np.linspace(0.9, 0.97, 20), np.full(10, 0.97)])
    assert {"lr_too_high", "underfitting"} & codes(mixup)  # read as clean training curves: false alarms
    assert {f.code for f in diagnose(mixup, mixed_train=True)} == set()


def test_converged_train_loss_noise_is_not_bouncing():
    tl = np.r_[np.exp(-np.arange(15) / 3) + 0.1, 0.1 + 0.0005 * np.tile([1, -1], 8)[:15]]  # +-0.5% wiggles
    df = curves(tl, tl + 0.05, np.full(30, 0.97), np.full(30, 0.95))
    assert "lr_too_high" not in codes(df)
    bounce = 0.3 + 0.1 * np.tile([0, 1], 15)  # a plateau with 33% jumps every other epoch: bouncing
    assert "lr_too_high" in codes(curves(bounce, tl + 0.05, np.full(30, 0.97), np.full(30, 0.95)))


def test_noisy_validation_is_scatter_around_the_trend_not_the_trend():
    fast = np.exp(-E / 3) + 0.1  # falls 10x in 30 epochs, smoothly: no noise
    assert "noisy_val" not in codes(curves(fast, fast + 0.02, np.full(30, 0.97), np.full(30, 0.95)))
    jumpy = (fast + 0.02) * (1 + 0.3 * np.tile([1, -1], 15))  # +-30% around the same trend every epoch
    found = [f for f in diagnose(curves(fast, jumpy, np.full(30, 0.97), np.full(30, 0.95))) if f.code == "noisy_val"]
    assert found and "around its 5-epoch moving average" in found[0].message


def test_noisy_validation_of_a_batch_norm_model_names_its_running_average_rate(tmp_path):
    fast = np.exp(-E / 3) + 0.1
    jumpy = curves(fast, (fast + 0.02) * (1 + 0.3 * np.tile([1, -1], 15)), np.full(30, 0.97), np.full(30, 0.95))
    (plain,) = [f for f in diagnose(jumpy) if f.code == "noisy_val"]
    (bn,) = [f for f in diagnose(jumpy, bn_momentum=0.01) if f.code == "noisy_val"]
    assert "batch norm" not in plain.advice
    assert "over about 100 updates (model.bn_momentum = 0.01)" in bn.advice  # 1 / 0.01
    jumpy.to_csv(tmp_path / "metrics.csv", index=False)  # the report reads the rate from the run's recipe.toml
    (tmp_path / "summary.json").write_text('{"command": "train", "status": "completed"}')
    for norm, named in (("batch", True), ("none", False)):
        (tmp_path / "recipe.toml").write_text(f'name = "t"\n[model]\nnorm = "{norm}"\nbn_momentum = 0.05\n')
        (finding,) = [f for c in build_report(tmp_path).curves for f in c.findings if f.code == "noisy_val"]
        assert ("over about 20 updates (model.bn_momentum = 0.05)" in finding.advice) == named


def test_a_steep_first_epoch_is_not_noise():
    smooth = np.r_[20.0, 4.0, 1.2, np.exp(-np.arange(27) / 10) * 0.5 + 0.1]  # batch-norm-like start, then smooth
    assert "noisy_val" not in codes(curves(smooth * 0.5, smooth, np.full(30, 0.97), np.full(30, 0.95)))


def test_compare_command_prints_each_runs_metrics_in_80_columns(tmp_path, console_80):
    from typer.testing import CliRunner

    from dlrecipe.cli import app

    runs = []
    for name, status, acc in [("20261123-231943-mnist1d_mlp-run", "completed", 0.668),
                              ("20261123-231959-mnist1d_cnn-run", "diverged", 0.961)]:
        d = tmp_path / name
        d.mkdir()
        HEALTHY.to_csv(d / "metrics.csv", index=False)
        loss = ', "best_val_loss": 0.133' if status == "completed" else ""  # the other run has none
        (d / "summary.json").write_text(f'{{"status": "{status}", "test_acc": {acc}{loss}}}')
        runs.append(str(d))
    res = CliRunner().invoke(app, ["compare", *runs, "--runs-dir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    row = next(line for line in lines if "mnist1d_mlp-run" in line)  # the whole name on one line, with its numbers
    assert "20261123-231943-mnist1d_mlp-run" in row and "0.668" in row and "0.133" in row
    other = next(line for line in lines if "mnist1d_cnn-run" in line)
    assert "diverged" in other and "nan" not in other and " - " in other  # status shown; a missing metric is "-"
    table = [line for line in lines if not line.startswith("table (")]  # the path line is printed whole, unwrapped
    assert len(table) < len(lines) and max(len(line) for line in table) <= 80


def test_a_loss_spike_puts_the_loss_axis_on_a_log_scale():
    from dlrecipe.report import Curve, loss_scale

    spike = np.r_[70.0, 10.0, np.exp(-np.arange(13) / 5) * 0.5 + 0.12]  # batch norm's first epochs, then ~0.1
    assert loss_scale([Curve("cnn", None, curves(spike, spike))]) == "log"
    assert loss_scale([Curve("healthy", None, HEALTHY)]) == "linear"  # 1.15 .. 0.25: linear is readable
    assert loss_scale([Curve("nan", None, DIVERGING)]) == "linear"  # 2.3 .. 9 and a NaN


# ---------------------------------------------------------------------------------------------------- a page to read

MEASURE = """<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });  // measure what they hide too
  var width = document.documentElement.clientWidth, over = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.right <= width + 1) return;
    for (var p = el.parentElement; p; p = p.parentElement) {  // inside a box that scrolls and fits: fine
      var s = getComputedStyle(p);
      if ((s.overflowX === "auto" || s.overflowX === "scroll") && p.getBoundingClientRect().right <= width + 1) return;
    }
    over.push(el.tagName + (el.id ? "#" + el.id : "") + " right " + Math.round(r.right));
  });
  var imgs = Array.from(document.images);
  var out = document.createElement("pre");
  out.id = "measurements";
  out.textContent = JSON.stringify({width: width, scroll_width: document.documentElement.scrollWidth,
    overflowing: over.slice(0, 10), images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    anchors: Array.from(document.querySelectorAll("nav a, a[href^='#']")).filter(function (a) {
      return !document.getElementById(decodeURIComponent(a.getAttribute("href").slice(1))); }).length});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A real `dlrecipe run` of two passes (mixup and dropout in its recipe, so the report has both notes)."""
    import torch

    from dlrecipe.pipeline import run_recipe

    from .conftest import small_recipe

    torch.set_num_threads(1)
    recipe = small_recipe(**{"search.trials": 4, "search.coarse_epochs": 1, "search.fine_trials": 2,
                             "search.fine_epochs": 4, "data.augment": ["mixup"], "model.dropout": 0.2})
    return run_recipe(recipe, device="cpu", runs_dir=tmp_path_factory.mktemp("runs"), passes=2).run_dir


def test_a_runs_report_opens_with_its_card_then_contents_then_the_story_in_words(run_folder):
    md = (run_folder / "report.md").read_text()
    card, rest = md.split("## Contents", 1)
    for line in ("**Status: completed** after", "**Selected model:**", "**Test:** accuracy", "**Diagnosis**",
                 "**Next step:**", "**Time:**"):
        assert line in card, line
    headings = [line for line in rest.splitlines() if line.startswith("#")]
    assert headings[:5] == ["## The recipe, step by step", "### 1. Sanity checks", "### 2. Learning-rate finder",
                            "### 3. Search, pass 1", "### 3. Search, pass 2"]
    assert not [h for h in headings if ".png" in h or ".csv" in h or "/" in h]  # words, not file names
    toc = rest.split("## The recipe", 1)[0]
    assert "[3. Search, pass 2](#3-search-pass-2)" in toc
    assert "<details><summary>Table: Search trials (3-search/trials.csv)</summary>" in md  # raw tables fold away
    assert "measured on mixup blends" in md and "computed with dropout on" in md
    page = (run_folder / "report.html").read_text()
    assert "**" not in page and 'id="3-search-pass-2"' in page and "<strong>Status: completed</strong>" in page
    assert page.count("data:image/png;base64,") == md.count("![") and "src=\"" not in page.replace(
        'src="data:image/png;base64,', "")  # every figure embedded: one self-contained file


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_the_report_renders_in_a_real_browser_within_the_page_and_with_every_image(run_folder, tmp_path):
    import subprocess

    page = (run_folder / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body></html>", MEASURE + "</body></html>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
             "--window-size=1280,900"]
    out = subprocess.run([_chromium(), *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    found = __import__("re").search(r'<pre id="measurements">(.*?)</pre>', out)
    assert found, out[-500:]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["scroll_width"] <= m["width"] and m["overflowing"] == [], m  # wide tables scroll inside their box
    assert m["images"] == page.count("data:image/png;base64,") and m["broken"] == 0, m
    assert m["anchors"] == 0, m  # every contents link has its heading
    shot = tmp_path / "shot.png"  # and it paints: a real screenshot of the top of the page
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", (run_folder / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 10_000
