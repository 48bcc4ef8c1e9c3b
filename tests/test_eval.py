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
    video = iio.imread(out / "sample0" / "prediction.mp4")
    assert len(video) == t and video.shape[2] > 3 * 64  # the context, then truth | prediction | error
    picture = iio.imread(out / "sample0" / "comparison.png")  # 8 of its frames, in 2 rows of 4
    assert picture.shape[:2] == (2 * video.shape[1] + 6, 4 * video.shape[2] + 18)
    for name in OFFICIAL_SUMMARY_FILES:
        assert (out / name).is_file(), name
    for metric in ("ssim", "psnr"):
        mean, std = (np.load(out / f"{metric}_{kind}.npz")["arr_0"] for kind in ("mean", "stddev"))
        assert mean.shape == std.shape == (t - ctx,) and np.all(np.isfinite(mean))
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["num_examples"] == 3 and 0 < summary["ssim_mean"] <= 1
    assert summary["settings"]["ssim_data_range"] == 2.0
    seconds = summary["seconds"]  # the evaluation's stopwatch: 2 batches (eval_batch_size 2), files behind them
    phases = {"data", "rollout (first batch, with compiling)", "rollout", "metrics", "files (background)", "files"}
    assert phases <= set(seconds) and all(seconds[k] >= 0 for k in phases)
    assert seconds["frames_per_second"] == pytest.approx(3 * 3 * (t - ctx) / seconds["total"], rel=0.01)


def test_background_writer_keeps_order_raises_a_failed_write_and_stops_submitting():
    written = []

    def write(i):
        if i == 2:
            raise OSError(28, "No space left on device")
        written.append(i)

    writer = eval_lib.BackgroundWriter(eval_lib.Stopwatch(), depth=1)
    submitted = []
    with pytest.raises(OSError, match="No space"):
        try:
            for i in range(6):
                writer.submit(write, i)
                submitted.append(i)
            writer.finish()
        finally:
            writer.close()
    assert written[:2] == [0, 1] and 2 not in written  # in order
    assert submitted == [0, 1, 2, 3]  # one batch waits behind the one being written; the failure stops the loop


def test_eval_is_deterministic_and_one_sample_has_no_best_files(trained):
    _, a = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true", "--eval_videos", "1")
    _, b = run_eval(trained, "--num_examples", "2", "--no_save_grid", "true")
    assert (a / "sample0" / "random_sample_1.npz").exists()
    assert not (a / "sample0" / "best_ssim_sample.npz").exists()
    assert not list(a.glob("sample0*/*.png"))
    assert (a / "sample0" / "prediction.mp4").is_file() and not (a / "sample1" / "prediction.mp4").exists()
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


# --- the paper's protocol -------------------------------------------------------------------------


def test_paper_protocol_presets_the_official_settings_and_given_keys_win(trained):
    config, _, _ = runs.load_run_config(["--logdir", str(trained), "--protocol", "paper"])
    assert (config.num_examples, config.num_samples, config.open_loop_ctx) == (100, 1, 36)
    assert (config.eval_seq_len, config.ssim_data_range, config.use_obs) == (1000, 2.0, None)  # mmnist's test videos
    config, _, _ = runs.load_run_config(["--logdir", str(trained), "--protocol", "paper", "--num_examples", "2"])
    assert (config.num_examples, config.eval_seq_len, config.protocol) == (2, 1000, "paper")
    with pytest.raises(ConfigError, match="key 'protocol' got 'papr'; valid: paper or null"):
        runs.load_run_config(["--logdir", str(trained), "--protocol", "papr"])


def official_eval_loop(videos: np.ndarray, preds: np.ndarray, ctx: int) -> dict[str, np.ndarray]:
    """A numpy transcription of the official eval.py's loop and tools.compute_metrics/plot_metrics:
    per sample and frame, scikit-image SSIM and PSNR of each channel of the float frames (unclipped
    predictions; its old scikit-image guessed data ranges 2.0 and 1.0 for float images), averaged over
    channels; per video the sample with the best mean over frames (argsort, last); then the mean and
    std over videos per frame."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    best = {"ssim": [], "psnr": []}
    for video, samples in zip(videos, preds):
        gts = video[ctx:].astype(np.float64) / 255.0
        scores = {name: np.zeros(samples.shape[:2]) for name in best}
        for s, sample in enumerate(samples.astype(np.float64)):
            for t in range(len(gts)):
                for c in range(gts.shape[-1]):
                    scores["ssim"][s, t] += structural_similarity(gts[t, ..., c], sample[t, ..., c], data_range=2.0)
                    scores["psnr"][s, t] += peak_signal_noise_ratio(gts[t, ..., c], sample[t, ..., c], data_range=1.0)
                scores["ssim"][s, t] /= gts.shape[-1]
                scores["psnr"][s, t] /= gts.shape[-1]
        for name in best:
            best[name].append(scores[name][np.argsort(scores[name].mean(-1))[-1]])
    return {
        f"{name}_{stat}": fn(np.stack(v), 0)
        for name, v in best.items()
        for stat, fn in (("mean", np.mean), ("stddev", np.std))
    }


def test_eval_reduction_matches_the_official_eval_loop(tiny, tmp_path, monkeypatch):
    """Fixed predictions through eval.py's scoring, best-sample choice and reduction give the official
    loop's per-frame curves (the rollout itself is replaced: this checks what is done with its output)."""
    import media
    import tools

    # 3 channels; the trivial predictors (scored by another test) would read the dataset's 64x64 frames
    config = tiny(num_samples=3, num_examples=5, eval_seq_len=16, eval_batch_size=2, dataset="mazes", references=False)
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (5, 16, 32, 32, 3), dtype=np.uint8)
    noise = rng.normal(0, 1, (5, 3, 8, 32, 32, 3)) * np.array([0.05, 0.2, 0.4])[None, :, None, None, None, None]
    preds = (videos[:, None, 8:] / 255.0 + noise).astype(np.float32)  # unclipped, as the model's

    def fake_run_batch(rollout, params, batch, config, first, sharding):
        pred = preds[first : first + len(batch)]
        target = np.broadcast_to(media.to_unit(batch[:, None, 8:]), pred.shape)
        ssim, psnr = tools.frame_metrics(pred, target, config.ssim_data_range, tools.PSNR_DATA_RANGE)
        return pred, np.asarray(ssim), np.asarray(psnr)

    monkeypatch.setattr(eval_lib, "run_batch", fake_run_batch)
    batches = [videos[:2], videos[2:4], videos[4:]]
    summary = eval_lib.write_results(tmp_path, None, None, batches, config, step=7, run_name="fixed")
    want = official_eval_loop(videos, preds, ctx=8)
    for name, value in want.items():
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}.npz")["arr_0"], value, rtol=2e-4, atol=2e-5, err_msg=name
        )
    assert summary["ssim_mean"] == pytest.approx(float(want["ssim_mean"].mean()), rel=1e-4)
    for i in range(5):  # the best-SSIM file holds the sample the official loop picked
        best = int(
            np.argmax(
                [
                    np.mean(official_eval_loop(videos[i : i + 1], preds[i : i + 1, [s]], 8)["ssim_mean"])
                    for s in range(3)
                ]
            )
        )
        np.testing.assert_array_equal(
            np.load(tmp_path / f"sample{i}" / "best_ssim_sample.npz")["arr_0"], media.to_uint8(preds[i, best])
        )
    table = (tmp_path / "metrics.md").read_text()
    assert "5 test videos" in table and "3 sample(s)" in table and "| ssim | 1-8 |" in table
    assert "ssim_range1_mean" in summary and summary["ssim_range1_mean"] != summary["ssim_mean"]


def test_paper_protocol_on_a_tiny_run_writes_the_official_files_and_a_table(trained):
    config, out = run_eval(trained, "--protocol", "paper", "--num_examples", "2", "--no_save_grid", "true", "--lpips")
    assert config.eval_seq_len == 1000 and config.open_loop_ctx == 36
    assert np.load(out / "sample1" / "random_sample_1.npz")["arr_0"].shape == (964, 64, 64, 1)
    for name in OFFICIAL_SUMMARY_FILES:
        assert (out / name).is_file(), name
    table = (out / "metrics.md").read_text()
    assert "protocol: paper" in table and "frames 37-1000 predicted" in table
    assert "| ssim | 1-100 |" in table and "| psnr | 501-964 |" in table and "| lpips | all |" in table
    lpips = np.load(out / "lpips_mean.npz")["arr_0"]
    assert lpips.shape == (964,) and np.all((lpips > 0) & (lpips < 1))  # LPIPS, offline, per predicted frame
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["settings"]["protocol"] == "paper" and summary["num_examples"] == 2
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    assert any('"eval/ssim_mean"' in line for line in lines)  # the results reach the training run's log


def test_a_saved_relative_datadir_is_read_from_where_the_run_was_trained(tmp_path, monkeypatch):
    """A run saved with relative paths (as older runs were) is evaluated from any folder against the
    data next to its logdir, not a new copy under the current folder."""
    folder = tmp_path / "there" / "logs" / "mmnist" / "old"
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text("dataset: mmnist\ndatadir: data\nlogdir: logs\n")
    monkeypatch.chdir(tmp_path)
    config, run, _ = runs.load_run_config(["--logdir", str(folder)])
    assert config.datadir == str(tmp_path / "there" / "data")
    config, _, _ = runs.load_run_config(["--logdir", str(folder), "--datadir", "elsewhere"])
    assert config.datadir == "elsewhere"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--num_examples", "1"], "key 'fvd': FVD fits a Gaussian to the videos' features and needs at least 2 videos"),
        (["--eval_seq_len", "20"], "key 'fvd': FVD scores 16-frame clips and this evaluation predicts 12 frames"),
    ],
)
def test_an_fvd_that_cannot_be_computed_is_refused_before_any_rollout(trained, monkeypatch, argv, words):
    monkeypatch.setattr(eval_lib, "write_results", lambda *a, **k: pytest.fail("rolled out before refusing"))
    with pytest.raises(ConfigError, match=words):
        run_eval(trained, "--fvd", "true", *argv)
    assert not any(p.name.startswith("incomplete_") for p in trained.iterdir())


def test_eval_says_in_one_line_when_the_test_split_has_fewer_videos_than_asked(trained, capsys):
    _, out = run_eval(trained, "--num_examples", "50", "--eval_videos", "0", "--no_save_grid", "true")
    lines = capsys.readouterr().out.splitlines()
    assert "note: evaluating 4 test videos, all that mmnist's test split has (--num_examples asked 50)" in lines
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 4


def test_the_table_says_an_fvd_of_few_videos_is_comparable_only_at_equal_n():
    summary = {"step": 1, "num_examples": 4, "num_samples": 1, "fvd": 556.51, "horizons": []}
    summary["settings"] = {
        "dataset": "mmnist",
        "data_source": "generated",
        "open_loop_ctx": 36,
        "eval_seq_len": 1000,
        "protocol": None,
        "ssim_data_range": 2.0,
        "psnr_data_range": 1.0,
        "psnr_cap_db": 100.0,
    }
    row = next(line for line in eval_lib.metrics_table(summary).splitlines() if line.startswith("| fvd"))
    assert "556.51 (from 4 videos: FVD grows as N shrinks, compare only at equal N" in row


def test_the_held_last_frame_reference_scores_as_scikit_image_does(trained):
    """Every evaluation scores the trivial predictors beside the model (references.py): metrics.md has
    their rows and curves.csv their curves; the held last context frame's SSIM and PSNR per frame are
    scikit-image's on the same frames (SSIM at the run's data range 2.0, PSNR at 1.0)."""
    import csv

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    import data

    config, out = run_eval(trained, "--num_examples", "3", "--eval_videos", "0", "--no_save_grid", "true")
    rows = list(csv.DictReader((out / "curves.csv").open()))
    ctx = config.open_loop_ctx
    videos = next(iter(data.make_eval_loader(config, config.eval_seq_len, 3, 3))).astype(np.float64) / 255
    for t in range(3):  # the first predicted frames
        truth, held = videos[:, ctx + t], videos[:, ctx - 1]
        ssim = [structural_similarity(a[..., 0], b[..., 0], data_range=2.0) for a, b in zip(held, truth)]
        psnr = [peak_signal_noise_ratio(b, a, data_range=1.0) for a, b in zip(held, truth)]
        assert int(rows[t]["frame"]) == ctx + 1 + t
        assert float(rows[t]["last_context_ssim_mean"]) == pytest.approx(np.mean(ssim), rel=1e-4)
        assert float(rows[t]["last_context_psnr_mean"]) == pytest.approx(np.mean(psnr), rel=1e-4)
    assert {"mean_frame_ssim_mean", "mean_frame_psnr_mean", "last_context_ssim_range1_mean"} <= rows[0].keys()
    table = (out / "metrics.md").read_text()
    assert "| model | last context frame held | training mean frame | all-black frame | model beats |" in table
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["references"]) == {"last_context", "mean_frame", "black"}
    _, off = run_eval(trained, "--num_examples", "1", "--eval_videos", "0", "--references", "false")
    assert "references" not in json.loads((off / "metrics.json").read_text())
    assert "last_context" not in (off / "curves.csv").read_text()


def test_the_progress_bar_counts_the_videos_evaluated_and_the_frames_left(tiny, tmp_path, monkeypatch):
    """Asked for more videos than the test split has, the bar counts the videos evaluated and shows the
    videos and predicted frames (every sample's) left after each batch."""
    import logger

    config = tiny(num_examples=5, num_samples=2, progress=True, references=False, no_save_grid=True, eval_videos=0)
    config = cfg_lib.apply(config, {"ssim_data_range": 1.0}, "test")  # only the rollout's SSIM: no extra compile
    frames = config.eval_seq_len - config.open_loop_ctx

    def fake_run_batch(rollout, params, batch, config, first, sharding):
        shape = (len(batch), 2, frames)
        return np.zeros((*shape, 64, 64, 1), np.float32), np.ones(shape), np.full(shape, 20.0)

    class Bar:
        def __init__(self, total):
            self.total, self.n, self.shown = total, 0, []

        def set_postfix_str(self, text, refresh=True):
            self.shown.append((self.n, text))

        def update(self, n):
            self.n += n

        def close(self):
            pass

    bars, log = [], logger.Logger()
    log.progress = lambda show, total, *args, **kw: bars.append(Bar(total)) or bars[-1]
    monkeypatch.setattr(eval_lib, "run_batch", fake_run_batch)
    videos = np.zeros((3, config.eval_seq_len, 64, 64, 1), np.uint8)
    eval_lib.write_results(tmp_path, None, None, [videos[:2], videos[2:]], config, 1, log=log, videos=3)
    assert bars[0].total == 3 and bars[0].n == 3
    left = [(0, f"3 videos, {3 * 2 * frames:,} frames left"), (0, f"1 video, {2 * frames} frames left")]
    assert bars[0].shown == [*left, (2, "0 videos, 0 frames left")]
