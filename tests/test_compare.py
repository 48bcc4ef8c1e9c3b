"""compare.py on fake run and evaluation folders (no training): the table's rows and values, the CSV,
the plots, the legend labels, which evaluation a run folder gives, and one-line errors."""

import csv
import io
import json
import pathlib
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import ROOT

import compare
import runs

CTX, EVAL_SEQ_LEN = 8, 24
FRAMES = EVAL_SEQ_LEN - CTX


def write_eval(run_dir, name, step, ssim, n=4, samples=2, ctx=CTX, ssim_range=2.0, lpips=False):
    """An evaluation folder as eval.py writes it: metrics.json and per-frame curves (ssim constant `ssim`)."""
    folder = run_dir / name
    folder.mkdir()
    frames = EVAL_SEQ_LEN - ctx
    curves = {"ssim": ssim, "psnr": 10 * ssim + 5, **({"lpips": 1 - ssim} if lpips else {})}
    for metric, level in curves.items():
        np.savez(folder / f"{metric}_mean.npz", np.linspace(level, level - 0.1, frames))
        np.savez(folder / f"{metric}_stddev.npz", np.full(frames, 0.05))
    summary = {
        "step": step,
        "num_examples": n,
        "num_samples": samples,
        **{f"{m}_mean": v - 0.05 for m, v in curves.items()},
        **{f"{m}_last_frame": v - 0.1 for m, v in curves.items()},
        "horizons": [],
        "settings": {
            "dataset": "mmnist",
            "open_loop_ctx": ctx,
            "eval_seq_len": EVAL_SEQ_LEN,
            "ssim_data_range": ssim_range,
        },
    }
    (folder / "metrics.json").write_text(json.dumps(summary))
    return folder


def write_run(root, name, losses, evals=()):
    """A run folder: config.yml, metrics.jsonl with train/loss `losses` at steps 5, 10, ... (and one
    val/loss, logged twice at its step: the later line counts), and evaluations (name, step, ssim)."""
    run_dir = root / "mmnist" / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yml").write_text("dataset: mmnist\n")
    lines = [{"step": 5 * (i + 1), "time": 1.0, "train/loss": loss} for i, loss in enumerate(losses)]
    lines += [{"step": 10, "val/loss": 999.0}, {"step": 10, "val/loss": losses[-1] + 1, "val/open_loop_ssim": 0.5}]
    lines.append({"step": 12, "eval/ssim_mean": 0.4})  # an evaluation of a later checkpoint: not a train step
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 30, "trai')
    for eval_name, step, ssim in evals:
        write_eval(run_dir, eval_name, step, ssim)
    return run_dir


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(
        tmp_path,
        "runA",
        [3900.0, 3850.5],
        [("eval_step10_20260101-120000", 10, 0.7), ("eval_step5_20260102-120000", 5, 0.1)],
    )
    b = write_run(
        tmp_path,
        "runB",
        [3800.0, 3700.25],
        [("eval_step10_20260101-120000", 10, 0.2), ("eval_step10_20260101-120000-2", 10, 0.6)],
    )
    (b / "incomplete_eval_step20_20260103-120000").mkdir()  # unfinished: never chosen
    return a, b


def test_table_has_one_row_per_run_with_its_final_values(two_runs, tmp_path):
    results, written = compare.compare(two_runs, tmp_path / "out")
    header, rows = compare.table(results)
    row = [dict(zip(header, r)) for r in rows]
    assert [r["run"] for r in row] == ["runA", "runB"]
    assert [r["train step"] for r in row] == [10, 10]  # the last train/ step, not the cut line or the eval's
    assert [r["train/loss"] for r in row] == [3850.5, 3700.25]
    assert [r["val/loss"] for r in row] == [3851.5, 3701.25]  # the later line for step 10
    # Run A: the evaluation of the largest step; run B: the newest of two at one step (-2).
    assert [r["ssim_mean"] for r in row] == pytest.approx([0.65, 0.55])
    assert [(r["eval step"], r["N"], r["ctx"], r["SSIM range"]) for r in row] == [(10, 4, CTX, 2.0)] * 2
    assert "lpips_mean" not in header and "val/neg_elbo" not in header  # columns no run has
    assert results[1].eval_dir.name == "eval_step10_20260101-120000-2"
    assert [p.name for p in written] == ["table.md", "table.csv", "ssim.png", "psnr.png", "training.png"]
    md = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert len(md) == 4 and md[-1].endswith("|") and md[2].startswith("| runA | 10 | 3850.50 |") and "0.6500" in md[2]


def test_csv_parses_back_to_the_table(two_runs, tmp_path):
    results, _ = compare.compare(two_runs, tmp_path / "out", labels=["a", "b"])
    header, rows = compare.table(results)
    parsed = list(csv.reader(io.StringIO((tmp_path / "out" / "table.csv").read_text())))
    assert parsed[0] == header and len(parsed) == 3
    assert [r[0] for r in parsed[1:]] == ["a", "b"]
    for got, want in zip(parsed[1:], rows):
        assert [float(g) for g in got[1:]] == pytest.approx([float(w) for w in want[1:]], rel=1e-12)


def has_colour(image: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool(np.any(np.all(image[..., :3] == rgb, axis=-1)))


BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # the first two runs' lines (matplotlib's C0, C1)


def test_plots_overlay_every_run(two_runs, tmp_path):
    write_eval(two_runs[1], "eval_step10_20260101-130000", 10, 0.7, lpips=True)  # only run B has LPIPS
    _, written = compare.compare(two_runs, tmp_path / "out")
    assert [p.name for p in written][2:] == ["ssim.png", "psnr.png", "lpips.png", "training.png"]
    image = iio.imread(tmp_path / "out" / "ssim.png")
    assert image.shape[:2] == (506, 880)  # 8 x (4.2 + 0.2 per run) inches at 110 dpi
    assert has_colour(image, BLUE) and has_colour(image, ORANGE)
    tinted = np.ptp(image[..., :3].astype(int), axis=-1) > 10  # coloured pixels: the lines and their bands
    assert tinted.mean() > 0.1, f"{tinted.mean():.3f} of the plot is coloured: no ±1 std bands?"
    lpips = iio.imread(tmp_path / "out" / "lpips.png")
    assert has_colour(lpips, ORANGE) and not has_colour(lpips, BLUE)  # run B keeps its colour


def test_newest_evaluation_is_the_largest_step_then_the_latest_name():
    names = [
        "eval_step10_20260101-120000-2",
        "eval_step9_20270101-000000",
        "eval_step10_20260101-120000-10",
        "eval_step10_20260101-120000",
        "eval_step10_20251231-235959-3",
    ]
    for order in (names, names[::-1]):
        assert max(map(pathlib.Path, order), key=runs.eval_order).name == "eval_step10_20260101-120000-10"


def test_legend_labels_name_the_run_step_and_videos(two_runs):
    run = compare.load(two_runs[0])
    assert compare.legend_label(run) == "runA (step 10, N=4 videos, best of 2)"
    run.summary["num_samples"] = 1
    assert compare.legend_label(run) == "runA (step 10, N=4 videos)"


def test_eval_folders_and_runs_without_evaluations(two_runs, tmp_path):
    bare = write_run(tmp_path, "bare", [4000.0])
    eval_a = two_runs[0] / "eval_step5_20260102-120000"
    results, written = compare.compare([eval_a, bare, two_runs[1] / "eval_step10_20260101-120000"], tmp_path / "o")
    header, rows = compare.table(results)
    assert [r[0] for r in rows] == ["runA", "bare", "runB"]
    assert rows[0][header.index("eval step")] == 5 and rows[0][header.index("train/loss")] == 3850.5
    assert rows[1][header.index("eval step")] is None and rows[1][header.index("train/loss")] == 4000.0
    assert compare.default_labels([eval_a, two_runs[0]]) == ["runA/eval_step5_20260102-120000", "mmnist/runA"]
    assert "- |" in (tmp_path / "o" / "table.md").read_text()  # the bare run's empty evaluation cells


def test_different_settings_are_compared_and_named(two_runs, tmp_path):
    other = write_run(tmp_path, "ctx4", [3000.0])
    write_eval(other, "eval_step10_20260101-120000", 10, 0.5, ctx=4, ssim_range=1.0)
    results, _ = compare.compare([two_runs[0], other], tmp_path / "out")
    notes = compare.differences(results)
    assert any("open_loop_ctx (runA 8, ctx4 4)" in n for n in notes)
    assert any("ssim_data_range (runA 2.0, ctx4 1.0)" in n for n in notes)
    assert "Note: the evaluations differ in open_loop_ctx" in (tmp_path / "out" / "table.md").read_text()


def bad_folders(tmp_path, two_runs):
    """(folders, what the one-line error must say) for each kind of bad input."""
    eval_b = two_runs[1] / "eval_step10_20260101-120000"
    (eval_b / "psnr_stddev.npz").unlink()
    plain = tmp_path / "plain"
    plain.mkdir()
    return [
        ([tmp_path / "nowhere"], "does not exist"),
        ([plain], "neither a run folder"),
        ([two_runs[1] / "incomplete_eval_step20_20260103-120000"], "unfinished evaluation"),
        ([eval_b], "psnr_stddev.npz' is missing"),
        ([two_runs[0], "--labels", "x,y,z"], "--labels got 3 labels for 1 folders"),
        (["--out"], "usage: python compare.py"),
    ]


def test_bad_input_is_one_line_and_exit_code_2(two_runs, tmp_path, capsys):
    for argv, message in bad_folders(tmp_path, two_runs):
        with pytest.raises(SystemExit) as exit_info:
            compare.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_script_prints_the_table_and_what_it_wrote(two_runs, tmp_path):
    out = tmp_path / "cmp"
    argv = [sys.executable, str(ROOT / "compare.py"), *map(str, two_runs), "--out", str(out), "--labels", "A,B"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| A | 10 | 3850.50 |" in done.stdout and str(out / "ssim.png") in done.stdout


def test_the_plots_draw_the_trivial_predictors_of_the_first_evaluation_as_labelled_lines(tmp_path):
    import matplotlib.pyplot as plt

    run = write_run(tmp_path, "a", [3.0], evals=[("eval_step20_20260101-000000", 20, 0.6)])
    folder = run / "eval_step20_20260101-000000"
    header = "frame,ssim_mean,ssim_std,last_context_ssim_mean,last_context_ssim_std,black_ssim_mean,black_ssim_std\n"
    rows = "".join(f"{CTX + 1 + t},0.6,0.05,{0.7 - t / 100},0,0.8,0\n" for t in range(FRAMES))
    (folder / "curves.csv").write_text(header + rows)
    result = compare.load(run)
    _, ax = plt.subplots()
    lines = compare._draw_references(ax, "ssim", [result])
    assert [line.get_label() for line in lines] == ["reference: last context frame held", "reference: all-black frame"]
    assert list(lines[0].get_xdata()) == list(range(CTX + 1, EVAL_SEQ_LEN + 1))
    assert lines[0].get_ydata()[1] == pytest.approx(0.69)
    assert compare._draw_references(ax, "psnr", [result]) == []  # no reference columns for psnr
    plt.close("all")


def test_training_curves_come_from_metrics_jsonl_against_step_or_hours(tmp_path, monkeypatch):
    run = write_run(tmp_path, "a", [3.0, 2.5, 2.0])  # no evaluation: the training curves still come
    drawn = []
    monkeypatch.setattr(compare.Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    for x_axis in ("step", "hours"):
        _, written = compare.compare([run], tmp_path / f"out-{x_axis}", x_axis=x_axis)
        assert written[-1].name == "training.png"
    loss_step, loss_hours = (fig.axes[0].get_lines() for fig in drawn)
    assert [line.get_label() for line in loss_step] == ["a: train/loss", "a: val/loss"]
    assert list(loss_step[0].get_xdata()) == [5, 10, 15] and list(loss_step[0].get_ydata()) == [3.0, 2.5, 2.0]
    assert list(loss_hours[0].get_xdata()) == [0.0, 0.0, 0.0]  # every line was written at time 1.0
    assert drawn[0].axes[1].get_lines()[0].get_ydata()[0] == 0.5  # val/open_loop_ssim at step 10
    assert drawn[0].axes[1].get_lines()[0].get_marker() == "o"  # its only point: a line alone would not show
    assert loss_step[0].get_marker() in ("None", None, "")  # three points: a plain line


def test_a_run_evaluated_at_several_checkpoints_gets_its_learning_curve(tmp_path):
    def horizons(ssim):
        return [{"metric": "ssim", "frames": "1-8", "mean": ssim}, {"metric": "psnr", "frames": "1-8", "mean": 9.0}]

    run = write_run(tmp_path, "a", [3.0])
    evals = [  # (name, step, ssim, N): step 10 twice (the newer counts); step 3 with other N (left out)
        ("eval_step5_20260101-000000", 5, 0.5, 4),
        ("eval_step10_20260101-000000", 10, 0.7, 4),
        ("eval_step10_20260102-000000", 10, 0.8, 4),
        ("eval_step3_20260101-000000", 3, 0.9, 8),
    ]
    for name, step, ssim, n in evals:
        folder = write_eval(run, name, step, ssim, n=n)
        summary = json.loads((folder / "metrics.json").read_text())
        summary["horizons"] = horizons(ssim)
        summary["references"] = {"black": {"title": "all-black frame", "horizons": horizons(0.75)}}
        (folder / "metrics.json").write_text(json.dumps(summary))
    results, written = compare.compare([run], tmp_path / "out")
    assert list(results[0].checkpoints) == [5, 10]
    assert [p.name for p in written[-2:]] == ["checkpoints.md", "checkpoints.png"]
    table = (tmp_path / "out" / "checkpoints.md").read_text()
    assert "| a | 5 | 0.5000 | 9.0000 |" in table and "| a | 10 | **0.8000** | 9.0000 |" in table
    assert "| reference: all-black frame | | 0.7500 | 9.0000 |" in table
    assert iio.imread(written[-1]).shape[0] > 100
    results, _ = compare.compare([run / "eval_step10_20260101-000000"], tmp_path / "older")  # this one at 10
    assert results[0].checkpoints[10]["horizons"][0]["mean"] == 0.7 and list(results[0].checkpoints) == [5, 10]
    results, written = compare.compare([run / "eval_step3_20260101-000000"], tmp_path / "one")  # alone with N=8
    assert list(results[0].checkpoints) == [3] and "checkpoints.png" not in [p.name for p in written]
