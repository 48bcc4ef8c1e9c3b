"""Evaluate a trained Clockwork VAE by open-loop prediction, as in the paper.

    python eval.py --logdir <experiment folder or checkpoint folder> [--key value ...]

Reads the run's config.yml, restores its latest checkpoint (or the one named), observes
open_loop_ctx frames of each test video and predicts the rest up to eval_seq_len, num_samples
times. `--use_obs TTF` (one letter per level) chooses which levels observe the context, as in the
official code. Writes, in a new folder eval_step<N>_<time> inside the experiment folder, the
official code's files (same names and layout, arrays under the key arr_0):

    sample<i>_gt/gt_ctx.{npz,png}, gt_pred.{npz,png}       the context and the true future
    sample<i>/random_sample_1.{npz,png}                     a random sample; with num_samples > 1 also
    sample<i>/best_ssim_sample, best_psnr_sample, random_sample_2 (.npz, .png)
    ssim_mean.npz, ssim_stddev.npz, ssim_range.png          per frame, over examples, of the best
    psnr_mean.npz, psnr_stddev.npz, psnr_range.png          sample's score

and, beyond the official ones, sample<i>/prediction.gif (truth | prediction) and metrics.json.
The folder is written as incomplete_eval_step<N>_<time> and renamed when every file is in it, so
a folder named eval_step* is always a complete result; a stopped or failed evaluation removes it.
"""

from __future__ import annotations

import cli  # light (the standard library), for the line below

if __name__ == "__main__":  # a Ctrl-C while the libraries below load: one line and exit 0
    cli.stop_at_once_on_signal()

import contextlib
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import data
import distributed
import hugepages
import runs
import steps
import tools
from config import Config
from errors import ConfigError, DataError
from steps import Stream

INCOMPLETE = "incomplete_"  # name prefix of an evaluation folder still being written


def _names(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """`path`, then `path-2`, `path-3`, ... (for evaluations started in the same second)."""
    yield path
    for i in range(2, 1000):
        yield path.with_name(f"{path.name}-{i}")


def _reserve(path: pathlib.Path) -> pathlib.Path:
    """The first free name of `path`, `path-2`, ... whose incomplete_ folder this call made. A name
    is free while neither it nor its incomplete_ folder exists; the check after the mkdir sees an
    evaluation that renamed its folder to that name just before, so no two take one name."""
    for final in _names(path):
        partial = final.with_name(INCOMPLETE + final.name)
        try:
            partial.mkdir(parents=True)
        except FileExistsError:
            continue
        if not final.exists():
            return final
        partial.rmdir()
    raise runs.RunError(f"cannot make a new evaluation folder next to {path}")


@contextlib.contextmanager
def new_folder(path: pathlib.Path) -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """(folder to write, final folder): the files go into incomplete_<name>, renamed to <name> (or
    <name>-2, ... when an evaluation in the same second took it) when the block ends; a block that
    stops or fails removes it. A process killed outright leaves it under its incomplete_ name, so
    a folder named eval_step* is never a partial result."""
    final = _reserve(path)
    partial = final.with_name(INCOMPLETE + final.name)
    try:
        with cli.undone_on_stop(lambda: shutil.rmtree(partial, ignore_errors=True)):
            yield partial, final
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(final)


def evaluate(config: Config, run: runs.RunFolder, step: int | None = None) -> pathlib.Path:
    """Evaluate checkpoint `step` of the run (None: the newest that restores); returns the folder the
    outputs were written to."""
    data.check_source(config)
    graphdef, params, step = runs.load_params(run, config, step)
    loader = data.make_eval_loader(
        config, config.eval_seq_len, min(config.eval_batch_size, config.num_examples), config.num_examples
    )
    with new_folder(run.eval_dir(step)) as (out_dir, final):
        print(f"evaluating {run.checkpoint(step)} on {data.describe_source(config)} -> {final}")
        summary = write_results(out_dir, graphdef, params, loader, config, step)
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    return final


def write_results(out_dir: pathlib.Path, graphdef, params, loader, config: Config, step: int) -> dict[str, Any]:
    """Every example's files and the summary, in `out_dir`; returns the summary. Each batch is
    split over the devices, the parameters replicated."""
    mesh = steps.make_mesh()
    params = jax.device_put(params, NamedSharding(mesh, P()))
    rollout = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range, tuple(config.use_obs_per_level()))
    best_ssim, best_psnr, fvd_real, fvd_fake = [], [], [], []
    bar = tools.progress_bar(config.progress, config.num_examples, "video", "eval")
    for batch in loader:
        batch, first = np.asarray(batch), len(best_ssim)
        preds, ssim, psnr = run_batch(rollout, params, batch, config, first, NamedSharding(mesh, P("data")))
        for i in range(len(batch)):
            scores = write_example(out_dir, first + i, batch[i], preds[i], ssim[i], psnr[i], config)
            best_ssim.append(scores[0])
            best_psnr.append(scores[1])
        if config.fvd:
            fvd_real.append(batch[:, config.open_loop_ctx :])
            fvd_fake.append(tools.to_uint8(preds[:, 0]))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not best_ssim:
        raise DataError(f"{config.dataset} test: no videos to evaluate")
    fvd = tools.fvd(np.concatenate(fvd_real), np.concatenate(fvd_fake)) if config.fvd else None
    return write_summary(out_dir, np.stack(best_ssim), np.stack(best_psnr), config, step, fvd)


def run_batch(rollout, params, batch: np.ndarray, config: Config, first: int, sharding: NamedSharding):
    """Predictions (b, S, T', H, W, C) and per-frame scores (b, S, T') for num_samples samples
    of each video. The b * S rollouts are split over the devices of `sharding`, padded with blank
    videos only to a multiple of their count (a smaller last batch compiles once more)."""
    b, s = len(batch), config.num_samples
    videos = np.repeat(batch, s, axis=0)
    rows = -(-len(videos) // sharding.mesh.size) * sharding.mesh.size
    if rows > len(videos):
        videos = np.concatenate([videos, np.zeros((rows - len(videos), *videos.shape[1:]), videos.dtype)])
    base = steps.stream_key(config.seed or 0, Stream.EVAL)  # video i's sample j: key (base, i * S + j)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(first * s, first * s + rows))
    pred, ssim, psnr = jax.device_get(rollout(params, *jax.device_put((videos, keys), sharding)))
    shape = (b, s)
    return (
        pred[: b * s].reshape(*shape, *pred.shape[1:]),
        ssim[: b * s].reshape(*shape, -1),
        psnr[: b * s].reshape(*shape, -1),
    )


def _save_frames(folder: pathlib.Path, name: str, frames: np.ndarray, grid: bool) -> None:
    """uint8 frames as <name>.npz (under arr_0, as the official np.savez) and a PNG grid."""
    tools.save_npz(str(folder / f"{name}.npz"), frames)
    if grid:
        tools.save_png(str(folder / f"{name}.png"), tools.video_grid(frames))


def write_example(out_dir, index, video, preds, ssim, psnr, config) -> tuple[np.ndarray, np.ndarray]:
    """Files of one test video; returns the per-frame SSIM and PSNR of its best samples."""
    ctx, grid = config.open_loop_ctx, not config.no_save_grid
    gt_dir, sample_dir = out_dir / f"sample{index}_gt", out_dir / f"sample{index}"
    gt_dir.mkdir()
    sample_dir.mkdir()
    _save_frames(gt_dir, "gt_ctx", video[:ctx], grid)
    _save_frames(gt_dir, "gt_pred", video[ctx:], grid)
    order = np.random.default_rng([config.seed or 0, index]).permutation(len(preds))
    best_s, best_p = int(np.argmax(ssim.mean(-1))), int(np.argmax(psnr.mean(-1)))
    samples = {"random_sample_1": order[0]}
    if len(preds) > 1:
        samples |= {"best_ssim_sample": best_s, "best_psnr_sample": best_p, "random_sample_2": order[1]}
    for name, i in samples.items():
        _save_frames(sample_dir, name, tools.to_uint8(preds[i]), grid)
    gif = tools.side_by_side(tools.to_unit(video[ctx:]), np.clip(preds[order[0]], 0, 1))
    tools.save_video(str(sample_dir / "prediction.gif"), gif)
    return ssim[best_s], psnr[best_p]


def write_summary(out_dir, ssim, psnr, config: Config, step: int, fvd: float | None) -> dict[str, Any]:
    """Per-frame mean and std over examples of the best samples' SSIM and PSNR (the official
    <metric>_mean.npz, <metric>_stddev.npz and <metric>_range.png) and metrics.json."""
    psnr_capped = np.asarray(tools.cap_psnr(psnr))
    first = config.open_loop_ctx
    for name, values in (("ssim", ssim), ("psnr", psnr_capped)):
        mean, std = values.mean(0), values.std(0)
        tools.save_npz(str(out_dir / f"{name}_mean.npz"), mean)
        tools.save_npz(str(out_dir / f"{name}_stddev.npz"), std)
        tools.plot_metric(str(out_dir / f"{name}_range.png"), mean, std, name.upper(), first_frame=first)
    summary = {
        "step": step,
        "num_examples": int(len(ssim)),
        "num_samples": config.num_samples,
        "ssim_mean": float(ssim.mean()),
        "psnr_mean": float(psnr_capped.mean()),
        "ssim_last_frame": float(ssim[:, -1].mean()),
        "psnr_last_frame": float(psnr_capped[:, -1].mean()),
        **({"fvd": fvd} if fvd is not None else {}),
        "settings": {
            "dataset": config.dataset,
            "data_source": config.data_source,
            "open_loop_ctx": config.open_loop_ctx,
            "eval_seq_len": config.eval_seq_len,
            "use_obs": config.use_obs or "T" * config.levels,
            "ssim_data_range": config.ssim_data_range,
            "psnr_data_range": tools.PSNR_DATA_RANGE,
            "psnr_cap_db": tools.PSNR_CAP_DB,
            "best_sample_by": "mean over frames, per video",
            "seed": config.seed,
        },
    }
    tools.write_json(out_dir / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        if distributed.explicit_params(os.environ) or distributed.cluster_detected():
            raise ConfigError(
                "eval.py runs as one process (a checkpoint of any number of processes restores in one); "
                f"launch it without {', '.join(distributed.ENV_VARS)}"
            )
        # No device count: evaluation pads its batches for the devices itself (training's batch_size is not used).
        config, run, step = runs.load_run_config(argv)
        also = f" or --num_samples ({config.num_samples}): a rollout runs eval_batch_size x num_samples videos"
        try:
            with cli.memory_bound_by("eval_batch_size", config.eval_batch_size, also):
                evaluate(config, run, step)
        except OSError as e:  # a full disk or a read-only run folder: one line, exit 2
            raise runs.RunError(runs.fs_message(e, f"write the evaluation in {run.path}")) from None

    cli.main_guard(run, stopped="stopped by a signal; the unfinished evaluation was removed, rerun to evaluate")


if __name__ == "__main__":
    hugepages.reexec()
    main()
