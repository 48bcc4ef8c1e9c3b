"""One logger: the terminal shows each line once and never on the progress bar's line; metrics.jsonl
survives a run killed mid-line (the lines after it read, and the cut one is reported)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from conftest import ROOT, tiny_args

import compare
import logger
import runs

CUT = '{"step": 5, "time": 1.0, "train/loss": 3900.0}\n{"step": 10, "time": 2.0, "train/lo'  # killed mid-line


def test_a_line_appended_after_a_cut_line_reads_and_the_cut_one_is_reported(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(CUT)
    logger.JSONLOutput(path).write({"train/loss": 3850.5, "val/loss": np.float32(3851.5), "video": path}, 10)
    metrics = logger.read_metrics(path)
    assert {step: {k: v for k, v in values.items() if k != "time"} for step, values in metrics.steps.items()} == {
        5: {"train/loss": 3900.0},
        10: {"train/loss": 3850.5, "val/loss": 3851.5},
    }
    assert metrics.skipped == [2]
    assert metrics.skipped_note(path).startswith(f"skipped 1 unreadable line of {path} (line 2;")
    assert logger.read_metrics(tmp_path / "none.jsonl") == logger.LoggedMetrics({}, [])


def test_an_evaluation_adds_its_scalars_to_its_runs_log(tiny):
    config = runs.name_run(tiny(wandb_mode="disabled"))
    run = runs.RunFolder.of(config)
    run.path.mkdir(parents=True)
    run.metrics_file.write_text(CUT)
    with logger.training_run_log(run, config, step_metric="eval/step") as log:
        log.write({"eval/ssim_mean": 0.5, "eval/num_examples": 4}, 10)
    assert log.where == str(run.metrics_file)
    metrics = logger.read_metrics(run.metrics_file)
    assert metrics.steps[10]["eval/ssim_mean"] == 0.5 and metrics.skipped == [2]


def test_compare_says_in_one_line_which_lines_of_a_runs_log_it_skipped(tmp_path, capsys):
    run = tmp_path / "mmnist" / "run"
    run.mkdir(parents=True)
    (run / "config.yml").write_text("dataset: mmnist\n")
    later = json.dumps({"step": 15, "time": 3.0, "train/loss": 3800.0})
    (run / "metrics.jsonl").write_text(f"{CUT}\n{later}\n")  # a resumed run went on after the cut line
    compare.main([str(run), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    notes = [line for line in out.out.splitlines() if "unreadable" in line]
    assert len(notes) == 1 and "skipped 1 unreadable line" in notes[0] and "(line 2;" in notes[0], out.out
    assert "| run | 15 | 3800.00 |" in out.out and out.err == ""


BAR = re.compile(r"\s*\d+%\|.*\| \d+/\d+ \[[^\]]*\]\s*")  # tqdm's bar as drawn (then padded with spaces)


def test_the_terminal_never_puts_a_line_on_the_progress_bar_nor_prints_one_twice(tmp_path):
    """A tiny training with the bar on, as a user runs it: every line the run prints starts a line of its
    own (never after the bar's text), and none is printed twice. The last step (15) logs scalars but
    no videos, so the end of the run writes its videos once more, and not its validation line."""
    args = tiny_args(tmp_path, max_steps=15, save_scalars_every=5, save_gifs_every=10)
    args[args.index("--progress") + 1] = "true"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    pieces = [piece for line in out.stdout.split("\n") for piece in line.split("\r") if piece.strip()]
    bars = [p for p in pieces if BAR.fullmatch(p)]
    lines = [p for p in pieces if not BAR.fullmatch(p)]
    assert bars and lines[-1].startswith("done at step 15"), out.stdout
    assert [line for line in lines if "%|" in line] == [], out.stdout  # a line glued onto the bar
    assert len(lines) == len(set(lines)), out.stdout
    assert [line.split(":")[0] for line in lines if line.startswith("step 15")] == ["step 15"] * 2  # loss, val
