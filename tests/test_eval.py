"""eval.py end to end on a tiny trained model: every output file, shapes, dtypes, errors."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import ROOT

import config as cfg_lib
import eval as eval_lib
import train
from config import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps; returns its experiment folder."""
    tmp = tmp_path_factory.mktemp("run")
    args = [
        "--config",
        str(ROOT / "configs/tiny.yml"),
        "--datadir",
        str(tmp / "data"),
        "--logdir",
        str(tmp / "logs"),
        "--seed",
        "0",
        "--progress",
        "false",
        "--max_steps",
        "4",
    ]
    return train.train(cfg_lib.parse(args)).exp_dir


def run_eval(run_dir, *argv):
    config, run, target = cfg_lib.parse_saved(["--logdir", str(run_dir), "--progress", "false", *argv])
    return config, eval_lib.evaluate(config, run, target)


def test_eval_writes_every_output(trained):
    config, out = run_eval(trained, "--num_samples", "3", "--num_examples", "3")
    ctx, t = config.open_loop_ctx, config.eval_seq_len
    assert out.parent == trained and out.name.startswith("eval_step4_")
    examples = sorted(p.name for p in out.glob("example*"))
    assert examples == ["example0000", "example0001", "example0002"]
    names = ["gt_context", "gt_target", "random_sample", "best_ssim_sample", "best_psnr_sample", "random_sample_2"]
    for name in names:
        frames = np.load(out / "example0001" / f"{name}.npz")["frames"]
        assert frames.dtype == np.uint8
        assert frames.shape == ((ctx if name == "gt_context" else t - ctx), 64, 64, 1)
        grid = iio.imread(out / "example0001" / f"{name}.png")
        n = len(frames)
        assert grid.shape[:2] == (64, n * 65 - 1)  # one row of < 50 frames with 1-pixel gaps
    assert iio.imread(out / "example0000" / "prediction.gif").shape[1:3] == (64, 128)
    for metric in ("ssim", "psnr"):
        curves = np.load(out / f"{metric}.npz")
        assert curves["mean"].shape == curves["std"].shape == (t - ctx,)
        assert np.all(np.isfinite(curves["mean"]))
        assert iio.imread(out / f"{metric}.png").ndim == 3
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["num_examples"] == 3 and 0 < summary["ssim_mean"] <= 1
    assert summary["settings"]["ssim_data_range"] == 2.0


def test_eval_is_deterministic_and_one_sample_has_no_best_files(trained):
    _, a = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true")
    _, b = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true")
    assert not (a / "example0000" / "best_ssim_sample.npz").exists()
    assert not list(a.glob("example0000/*.png"))
    np.testing.assert_array_equal(np.load(a / "ssim.npz")["mean"], np.load(b / "ssim.npz")["mean"])


def test_eval_errors_are_one_line(trained, tmp_path):
    with pytest.raises(ConfigError, match="no config.yml"):
        cfg_lib.parse_saved(["--logdir", str(tmp_path)])
    with pytest.raises(ConfigError, match="must be greater than open_loop_ctx"):
        cfg_lib.parse_saved(["--logdir", str(trained), "--eval_seq_len", "8"])
    config, run, target = cfg_lib.parse_saved(["--logdir", str(trained), "--eval_seq_len", "5000"])
    out = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), "--logdir", str(trained), "--eval_seq_len", "5000"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2 and "fewer than seq_len = 5000" in out.stderr, out.stderr
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.yml").write_text((trained / "config.yml").read_text())
    with pytest.raises(ConfigError, match="no checkpoint"):
        eval_lib.evaluate(config, empty)


def test_eval_rejects_checkpoint_of_another_model(trained):
    config, run, target = cfg_lib.parse_saved(["--logdir", str(trained), "--cell_deter_size", "9"])
    with pytest.raises(ConfigError, match=r"parameter .* is \(8,\) in the checkpoint and \(9,\) in the model"):
        eval_lib.evaluate(config, run, target)
