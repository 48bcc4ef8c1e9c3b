"""eval.py end to end on a tiny trained model: every output file, shapes, dtypes, errors."""

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import ROOT, tiny_args

import config as cfg_lib
import eval as eval_lib
import runs
import train
from errors import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps; returns its experiment folder."""
    tmp = tmp_path_factory.mktemp("run")
    return train.train(cfg_lib.parse(tiny_args(tmp, max_steps=4))).exp_dir


def run_eval(run_dir, *argv):
    config, run, step = runs.load_run_config(["--logdir", str(run_dir), "--progress", "false", *argv])
    return config, eval_lib.evaluate(config, run, step)


OFFICIAL_EXAMPLE_FILES = [
    "sample{i}_gt/gt_ctx",
    "sample{i}_gt/gt_pred",
    "sample{i}/random_sample_1",
    "sample{i}/best_ssim_sample",
    "sample{i}/best_psnr_sample",
    "sample{i}/random_sample_2",
]
OFFICIAL_SUMMARY_FILES = [f"{m}_{kind}" for m in ("ssim", "psnr") for kind in ("mean.npz", "stddev.npz", "range.png")]


def test_eval_writes_every_official_file(trained):
    config, out = run_eval(trained, "--num_samples", "3", "--num_examples", "3")
    ctx, t = config.open_loop_ctx, config.eval_seq_len
    assert out.parent == trained and out.name.startswith("eval_step4_")
    assert sorted(p.name for p in out.glob("sample*")) == [f"sample{i}{g}" for i in range(3) for g in ("", "_gt")]
    for i in range(3):
        for name in OFFICIAL_EXAMPLE_FILES:
            path = out / name.format(i=i)
            frames = np.load(f"{path}.npz")["arr_0"]  # np.savez's key, as the official files
            assert frames.dtype == np.uint8
            assert frames.shape == ((ctx if name.endswith("gt_ctx") else t - ctx), 64, 64, 1)
            assert iio.imread(f"{path}.png").shape[:2] == (64, len(frames) * 65 - 1)  # one row, 1-pixel gaps
    assert iio.imread(out / "sample0" / "prediction.gif").shape[1:3] == (64, 128)
    for name in OFFICIAL_SUMMARY_FILES:
        assert (out / name).is_file(), name
    for metric in ("ssim", "psnr"):
        mean, std = (np.load(out / f"{metric}_{kind}.npz")["arr_0"] for kind in ("mean", "stddev"))
        assert mean.shape == std.shape == (t - ctx,) and np.all(np.isfinite(mean))
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["num_examples"] == 3 and 0 < summary["ssim_mean"] <= 1
    assert summary["settings"]["ssim_data_range"] == 2.0


def test_eval_is_deterministic_and_one_sample_has_no_best_files(trained):
    _, a = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true")
    _, b = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true")
    assert (a / "sample0" / "random_sample_1.npz").exists()
    assert not (a / "sample0" / "best_ssim_sample.npz").exists()
    assert not list(a.glob("sample0*/*.png"))
    np.testing.assert_array_equal(np.load(a / "ssim_mean.npz")["arr_0"], np.load(b / "ssim_mean.npz")["arr_0"])


def test_eval_errors_are_one_line(trained, tmp_path):
    with pytest.raises(ConfigError, match="no config.yml"):
        runs.load_run_config(["--logdir", str(tmp_path)])
    with pytest.raises(ConfigError, match="must be greater than open_loop_ctx"):
        runs.load_run_config(["--logdir", str(trained), "--eval_seq_len", "8"])
    config, run, step = runs.load_run_config(["--logdir", str(trained), "--eval_seq_len", "5000"])
    out = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), "--logdir", str(trained), "--eval_seq_len", "5000"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 2 and "key 'eval_seq_len' got 5000; the mmnist test videos have" in out.stderr, out.stderr
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.yml").write_text((trained / "config.yml").read_text())
    with pytest.raises(ConfigError, match="no checkpoint"):
        eval_lib.evaluate(config, runs.RunFolder(empty))


def test_eval_rejects_checkpoint_of_another_model(trained):
    config, run, step = runs.load_run_config(["--logdir", str(trained), "--cell_deter_size", "9"])
    mismatch = r"parameter cells/0/\S+ is \(\d+,\) in the checkpoint and \(\d+,\) in the model"
    with pytest.raises(ConfigError, match=mismatch):
        eval_lib.evaluate(config, run, step)
