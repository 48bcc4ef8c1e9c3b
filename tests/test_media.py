"""Tests of media.py: frame conversion, grids, the PNG/NPZ/video writers, labelled videos, plots,
markdown tables; and that the train step loads none of the plotting or video code."""

import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
from conftest import ROOT

import benchmarks
import media


def test_to_uint8_clips_and_rounds():
    out = media.to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0]))
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])
    assert out.dtype == np.uint8


@pytest.mark.parametrize("num_frames,rows", [(120, 3), (100, 2), (7, 1)])
def test_video_grid_keeps_last_partial_row(num_frames, rows):
    frames = np.full((num_frames, 4, 5, 1), 100, np.uint8)
    grid = media.video_grid(frames, per_row=50, gap=1, fill=255)
    per_row = min(50, num_frames)
    assert grid.shape == (rows * 5 - 1, per_row * 6 - 1, 1)
    assert np.sum(grid == 100) == num_frames * 4 * 5  # every frame, the last row's included
    assert np.all(grid[4, :] == 255) if rows > 1 else True  # gap row
    assert np.all(grid[:4, 5] == 255)  # gap column


def test_save_png_writes_grid_of_right_size(tmp_path):
    frames = media.to_uint8(benchmarks.blob_frames(60, (16, 16, 1)))
    grid = media.video_grid(frames)
    path = str(tmp_path / "grid.png")
    media.save_png(path, grid)
    read = imageio.imread(path)
    assert read.shape == grid.shape[:2]
    np.testing.assert_array_equal(read, grid[..., 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary left


def test_save_npz_round_trips(tmp_path):
    path = str(tmp_path / "out.npz")
    arrays = {
        "gt": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "ssim": np.linspace(0, 1, 5),
    }
    media.save_npz(path, **arrays)
    with np.load(path) as data:
        for key, value in arrays.items():
            np.testing.assert_array_equal(data[key], value)


@pytest.mark.parametrize("name,shape", [("v.mp4", (5, 24, 30, 1)), ("v.gif", (5, 24, 30, 3))])
def test_save_video_writes_readable_frames(tmp_path, name, shape):
    frames = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    path = str(tmp_path / name)
    media.save_video(path, frames, fps=10)
    read = imageio.mimread(path)
    assert len(read) == shape[0]
    assert read[0].shape[:2] == shape[1:3]


def test_plot_metric_writes_png_with_and_without_labels(tmp_path):
    mean, std = np.linspace(20, 12, 964), np.full(964, 1.5)
    media.plot_metric(str(tmp_path / "plain.png"), mean, std, "PSNR", first_frame=37)
    labels = dict(n=100, run="mmnist/demo", step=6000, ylabel="PSNR (dB)", context_end=36.5)
    media.plot_metric(str(tmp_path / "psnr.png"), mean, std, "PSNR", first_frame=37, **labels)
    plain, labelled = imageio.imread(tmp_path / "plain.png"), imageio.imread(tmp_path / "psnr.png")
    assert plain.shape[:2] == labelled.shape[:2] == (400, 700)
    assert not np.array_equal(plain, labelled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.png", "psnr.png"]


def _panels(video: np.ndarray, h: int, w: int, scale: int) -> list[np.ndarray]:
    """The truth, prediction and error panels of labelled_video frames: three equal panels at the
    bottom, one at each side and one in the middle."""
    ph, pw = scale * h, scale * w
    middle = (video.shape[2] - pw) // 2
    return [video[:, -ph:, left : left + pw] for left in (0, middle, video.shape[2] - pw)]


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


@pytest.mark.parametrize("channels", [1, 3])
def test_labelled_video_shows_context_truth_prediction_and_error(channels):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 64, 64, channels), dtype=np.uint8)
    context, gt = video[:4], video[4:]
    pred = rng.uniform(-0.2, 1.2, gt.shape).astype(np.float32)  # unclipped
    out = media.labelled_video(gt, pred, first_frame=5, context=context)
    assert out.dtype == np.uint8 and out.shape[0] == 9 and out.shape[-1] == 3
    assert out.shape[1] > 128 and out.shape[2] >= 3 * 128  # 64 px frames upscaled 2x, plus text rows
    truth, prediction, error = _panels(out, 64, 64, scale=2)
    np.testing.assert_array_equal(truth, _upscale(video, 2))
    np.testing.assert_array_equal(prediction[4:], _upscale(media.to_uint8(pred), 2))
    want_error = media.to_uint8(np.abs(media.to_unit(gt) - np.clip(pred, 0, 1)))
    np.testing.assert_allclose(error[4:], _upscale(want_error, 2), atol=1)
    assert np.ptp(prediction[:4, :40]) == 0 and np.ptp(error[:4, :40]) == 0  # blank for context frames
    titles = out[:, : (out.shape[1] - 128) // 2]  # the title row, above the panel labels
    assert all(not np.array_equal(titles[t], titles[t + 1]) for t in range(8))  # each frame's own number


def test_labelled_video_without_context_takes_floats_and_small_frames():
    gt = np.zeros((3, 16, 24, 1), np.float32)
    pred = np.ones((3, 16, 24, 1), np.float32)
    out = media.labelled_video(gt, pred, first_frame=1)
    scale = -(-128 // 24)
    truth, prediction, error = _panels(out, 16, 24, scale)
    assert out.shape[0] == 3 and out.dtype == np.uint8
    assert np.all(truth == 0) and np.all(prediction == 255) and np.all(error == 255)


def test_markdown_table():
    table = media.markdown_table(["metric", "frames"], [["ssim", "1-100"], [0.5, "a|b"]])
    assert table == "| metric | frames |\n|---|---|\n| ssim | 1-100 |\n| 0.5 | a\\|b |"


def test_importing_the_train_step_loads_no_plotting_or_video_code():
    # A fresh process (this one has loaded everything), with the repository's root on its path.
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import steps, train; print(*sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert "steps" in loaded and not loaded & {"matplotlib", "imageio"}, sorted(loaded & {"matplotlib", "imageio"})
