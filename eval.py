"""Evaluate a trained Clockwork VAE by open-loop prediction, as in the paper.

    python eval.py --logdir <experiment folder or checkpoint folder> [--key value ...]

Reads the run's config.yml, restores its latest checkpoint (or the one named), observes
open_loop_ctx frames of each test video and predicts the rest up to eval_seq_len, num_samples
times. `--use_obs TTF` (one letter per level) chooses which levels observe the context, as in the
official code. A run trained with actions (use_actions) predicts given the test videos' actions,
or given none (all zeros) with `--eval_actions zero`. Writes, in a new folder eval_step<N>_<time>
inside the experiment folder, the official code's files (same names and layout, arrays under the key arr_0):

    sample<i>_gt/gt_ctx.{npz,png}, gt_pred.{npz,png}       the context and the true future
    sample<i>/random_sample_1.{npz,png}                     a random sample; with num_samples > 1 also
    sample<i>/best_ssim_sample, best_psnr_sample, random_sample_2 (.npz, .png)
    ssim_mean.npz, ssim_stddev.npz, ssim_range.png          per frame, over examples, of the best
    psnr_mean.npz, psnr_stddev.npz, psnr_range.png          sample's score

and, beyond the official ones: sample<i>/prediction.mp4 for the first eval_videos videos (the context,
then truth | prediction | error, numbered) and comparison.png (8 of those frames, up to the last),
per-frame curves of the extra metrics (ssim_range1_*, lpips_*), curves.csv, metrics.json and
metrics.md (the results per horizon).
The folder is written as incomplete_eval_step<N>_<time> and renamed when every file is in it, so
a folder named eval_step* is always a complete result; a stopped or failed evaluation removes it.
"""

from __future__ import annotations

import cli  # light (the standard library), for the line below

if __name__ == "__main__":  # a Ctrl-C while the libraries below load: one line and exit 0
    cli.stop_at_once_on_signal()

import collections
import contextlib
import functools
import pathlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import checkpoints
import data
import distributed
import hugepages
import logger
import media
import references
import runs
import steps
import tools
from config import Config
from errors import ConfigError, DataError
from steps import Stream


def evaluate(config: Config, run: runs.RunFolder, step: int | None = None) -> pathlib.Path | None:
    """Evaluate checkpoint `step` of the run (None: the newest that restores); returns the folder the
    outputs were written to (None in processes other than 0, which only compute). Every process
    runs the same rollouts, each on its devices' share of every batch; process 0 writes."""
    steps.check_model_keys(config)  # before loading anything: cell_type, conv_impl
    data.check_source(config)
    videos = min(config.num_examples, len(data.open_videos(config, "test")))
    check_fvd(config, videos)  # before any rollout: FVD needs several videos of whole clips
    graphdef, params, step = checkpoints.load_params(run, config, step)
    loader = data.make_eval_loader(
        config, config.eval_seq_len, min(config.eval_batch_size, config.num_examples), config.num_examples
    )
    if not distributed.is_main():
        write_results(None, graphdef, params, loader, config, step)
        return None
    log = logger.Logger(logger.Terminal())
    if videos < config.num_examples:
        asked = f"--num_examples asked {config.num_examples}"
        log.print(f"note: evaluating {videos} test videos, all that {config.dataset}'s test split has ({asked})")
    with runs.EvalFolder.new(run, step) as (out, final):
        log.print(f"evaluating {run.checkpoint(step)} on {data.describe_source(config)} -> {final.path}")
        log.print("compiling the open-loop rollout (the first batch takes a while) ...")
        summary = write_results(
            out.path, graphdef, params, loader, config, step, run_name=run.path.name, log=log, videos=videos
        )
    print(final.table.read_text())  # the results, as a table
    log.print(speed_line(summary["seconds"]))
    with logger.training_run_log(run, config, step_metric="eval/step") as run_log:  # beside the training curves
        run_log.write({f"eval/{k}": v for k, v in _scalars(summary).items()}, step)
    log.print(f"results in {final.path}; the scalars also in {run_log.where}")
    return final.path


# What an action-conditioned run's prediction was given (key eval_actions), for metrics.md.
ACTIONS_GIVEN = {
    "given": "Predicted given the videos' true actions (eval_actions given).",
    "zero": "Predicted given no actions: all zeros (eval_actions zero).",
}

FVD_MIN_VIDEOS = 2  # a Gaussian fit to the videos' I3D features needs a covariance
FVD_STABLE_VIDEOS = 256  # below this FVD depends strongly on the number of videos (usual: 256 to 2048)


def check_fvd(config: Config, videos: int) -> None:
    """Refuse, in one line and before any rollout, an FVD that cannot be computed: it compares
    tools.FVD_CLIP_LEN-frame clips of at least FVD_MIN_VIDEOS videos."""
    if not config.fvd:
        return
    predicted, clip = config.eval_seq_len - config.open_loop_ctx, tools.FVD_CLIP_LEN
    if predicted < clip:
        raise ConfigError(
            f"key 'fvd': FVD scores {clip}-frame clips and this evaluation predicts {predicted} frames (eval_seq_len "
            f"{config.eval_seq_len} - open_loop_ctx {config.open_loop_ctx}); pass --eval_seq_len "
            f"{config.open_loop_ctx + clip} or more, or drop --fvd"
        )
    if videos < FVD_MIN_VIDEOS:
        raise ConfigError(
            f"key 'fvd': FVD fits a Gaussian to the videos' features and needs at least {FVD_MIN_VIDEOS} videos; this "
            f"evaluation has {videos}; pass --num_examples {FVD_MIN_VIDEOS} or more (with as many test videos), "
            "or drop --fvd"
        )


def fvd_note(videos: int) -> str:
    """What an FVD of `videos` videos can be compared with."""
    if videos >= FVD_STABLE_VIDEOS:
        return ""
    return f"from {videos} videos: FVD grows as N shrinks, compare only at equal N (usual: {FVD_STABLE_VIDEOS} or more)"


def speed_line(seconds: dict[str, float]) -> str:
    """'speed: 812.3 frames predicted per second (124.1 s: rollout 100.2 s, files 20.1 s, ...)'."""
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k not in ("total", "frames_per_second"))
    return f"speed: {seconds['frames_per_second']:.1f} frames predicted per second ({seconds['total']:.1f} s: {phases})"


def _scalars(summary: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "step"}


class Stopwatch:
    """Seconds spent in each phase of an evaluation (data, rollout, metrics, files), for its speed line."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - begin

    def report(self, frames: int) -> dict[str, float]:
        """Each phase's seconds, the total, and predicted `frames` per second of the total."""
        total = time.perf_counter() - self.start
        return {
            **{k: round(v, 3) for k, v in self.seconds.items()},
            "total": round(total, 3),
            "frames_per_second": round(frames / total, 1),
        }


class BackgroundWriter:
    """Writes each batch's files on one thread while the next batch rolls out (PNG, NPZ and MP4
    encoding release the GIL: in the paper's mmnist evaluation on 2 cores, 8-10 s of 54 s of writing
    was waited for). Batches are written in order; at most `depth` wait behind the one being written,
    so memory stays bounded. An error of a write is raised by the next `submit` or by `finish`;
    `close` cancels what has not started."""

    def __init__(self, clock: Stopwatch, depth: int = 1):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="eval-files")
        self.pending: collections.deque = collections.deque()
        self.clock, self.depth = clock, depth

    def submit(self, write: Callable[..., None], *args) -> None:
        while len(self.pending) > self.depth:
            with self.clock("waiting for files"):
                self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._timed, write, *args))

    def _timed(self, write: Callable[..., None], *args) -> None:
        with self.clock("files (background)"):
            write(*args)

    def finish(self) -> None:
        with self.clock("waiting for files"):
            while self.pending:
                self.pending.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Scores:
    """Per video, the per-frame scores of its best sample (by mean over frames) for each metric."""

    def __init__(self):
        self.best: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, values: np.ndarray) -> int:
        """`values` (S, T') of one video's samples; keeps the best one's curve, returns its index."""
        means = values.mean(-1)
        higher = tools.METRICS[name].higher_is_better
        best = int(np.argmax(means) if higher else np.argmin(means))
        self.best.setdefault(name, []).append(values[best])
        return best

    def stacked(self) -> dict[str, np.ndarray]:
        return {name: np.stack(curves) for name, curves in self.best.items()}


def write_results(
    out_dir: pathlib.Path | None,
    graphdef,
    params,
    loader,
    config: Config,
    step: int,
    run_name: str = "",
    log: logger.Logger | None = None,
    videos: int | None = None,
) -> dict[str, Any] | None:
    """Every example's files and the summary, in the evaluation folder `out_dir` (None: compute only,
    in a process other than 0); returns the summary. Each batch is split over all devices of all
    processes, the parameters replicated. `log`: the progress bar's terminal, which counts `videos`
    (the loader's; None: num_examples) and shows the videos and predicted frames left."""
    folder = runs.EvalFolder(pathlib.Path(out_dir)) if out_dir is not None else None
    log = log or logger.Logger()
    mesh = steps.make_mesh()
    params = jax.device_put(jax.device_get(params), NamedSharding(mesh, P()))  # from the host: every process's devices
    rollout = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range, tuple(config.use_obs_per_level()))
    scores, fvd_real, fvd_fake, count = Scores(), [], [], 0
    mean, reference_curves = None, collections.defaultdict(list)  # the trivial predictors' scores, per batch
    if config.references and folder is not None:
        mean = data.mean_frame(config)
    videos = config.num_examples if videos is None else videos
    bar = log.progress(config.progress and folder is not None, videos, "video", "eval")
    if bar is not None:
        bar.set_postfix_str(left_to_predict(videos, config), refresh=False)
    clock, batches = Stopwatch(), iter(loader)
    writer = BackgroundWriter(clock) if folder is not None else None
    try:
        while True:
            with clock("data"):
                batch = next(batches, None)
            if batch is None:
                break
            batch, given = given_actions(jax.tree.map(np.array, batch), config)  # copies: the writer thread reads
            with clock("rollout (first batch, with compiling)" if count == 0 else "rollout"):  # with SSIM, PSNR
                preds, ssim, psnr = run_batch(rollout, params, given, config, count, NamedSharding(mesh, P("data")))
            if writer is not None:
                with clock("metrics"):
                    extra = extra_metrics(batch, preds, config)
                    for name, values in (reference_scores(batch, config, mean) if mean is not None else {}).items():
                        reference_curves[name].append(values)
                curves = {"ssim": ssim, "psnr": psnr, **extra}
                writer.submit(write_batch, folder, count, batch, preds, curves, scores, config)
                if config.fvd:
                    fvd_real.append(batch[:, config.open_loop_ctx :])
                    fvd_fake.append(media.to_uint8(preds[:, 0]))
            count += len(batch)
            if bar is not None:
                bar.set_postfix_str(left_to_predict(videos - count, config), refresh=False)
                bar.update(len(batch))
        if writer is not None:
            writer.finish()
    finally:
        if writer is not None:
            writer.close()
    if bar is not None:
        bar.close()
    if not count:
        raise DataError(f"{config.dataset} test: no videos to evaluate")
    if folder is None:
        return None
    with clock("metrics"):
        fvd = tools.fvd(np.concatenate(fvd_real), np.concatenate(fvd_fake)) if config.fvd else None
    predicted = count * config.num_samples * (config.eval_seq_len - config.open_loop_ctx)
    reference_curves = {name: np.concatenate(values) for name, values in reference_curves.items()}
    return write_summary(folder, scores.stacked(), config, step, fvd, run_name, clock, predicted, reference_curves)


def left_to_predict(videos: int, config: Config) -> str:
    """'3 videos, 8,676 frames left': the frames still to predict, num_samples per video."""
    frames = videos * config.num_samples * (config.eval_seq_len - config.open_loop_ctx)
    return f"{videos} video{'s' if videos != 1 else ''}, {frames:,} frames left"


def given_actions(batch, config: Config) -> tuple[np.ndarray, Any]:
    """A loader's batch as (its frames, what the rollout is given: steps.batch_parts): the frames alone,
    or for a run with actions the frames and their true actions (eval_actions given) or zeros in their
    place (zero: none given)."""
    frames, actions = steps.batch_parts(batch)
    if actions is None:
        return frames, frames
    return frames, (frames, actions if config.eval_actions == "given" else np.zeros_like(actions))


def run_batch(rollout, params, batch, config: Config, first: int, sharding: NamedSharding):
    """Predictions (b, S, T', H, W, C) and per-frame SSIM and PSNR (b, S, T') for num_samples samples
    of each video of `batch` (frames, or frames and actions: steps.batch_parts). The b * S rollouts are
    split over the devices of `sharding` (of every process: each process holds the whole batch and hands
    its devices their rows), padded with blank videos only to a multiple of their count (a smaller last
    batch compiles once more); every process gets the whole result back."""
    b, s = len(steps.batch_parts(batch)[0]), config.num_samples
    rows = -(-(b * s) // sharding.mesh.size) * sharding.mesh.size

    def repeated(x: np.ndarray) -> np.ndarray:  # each video s times, then blank ones up to `rows`
        x = np.repeat(x, s, axis=0)
        return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)]) if rows > len(x) else x

    videos = jax.tree.map(repeated, batch)
    base = steps.stream_key(config.seed or 0, Stream.EVAL)  # video i's sample j: key (base, i * S + j)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(first * s, first * s + rows))
    videos = jax.tree.map(lambda x: _global(x, sharding), videos)
    keys = _global(np.asarray(jax.random.key_data(keys)), sharding)
    out = rollout(params, videos, jax.random.wrap_key_data(keys, impl=jax.random.key_impl(base)))
    out = multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1 else jax.device_get(out)
    pred, ssim, psnr = out
    shape = (b, s)
    return (
        np.asarray(pred[: b * s]).reshape(*shape, *pred.shape[1:]),
        np.asarray(ssim[: b * s]).reshape(*shape, -1),
        np.asarray(psnr[: b * s]).reshape(*shape, -1),
    )


def _global(rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array every process holds whole, as one array split over all devices of `sharding`."""
    return jax.make_array_from_callback(rows.shape, sharding, lambda index: rows[index])


def extra_metrics(batch: np.ndarray, preds: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """Per-frame scores beyond the rollout's (b, S, T'): where SSIM uses the official data range, SSIM
    at the usual one too (tools.METRICS), and LPIPS when asked for."""
    target = np.broadcast_to(media.to_unit(batch[:, None, config.open_loop_ctx :]), preds.shape)
    out = {}
    for name, metric in tools.METRICS.items():
        if metric.with_official_ssim and _is_official_ssim_range(config.ssim_data_range):
            out[name] = np.asarray(_ssim(preds, target, metric.data_range))
    if config.lpips:
        out["lpips"] = tools.lpips(target, np.clip(preds, 0.0, 1.0))
    return out


def reference_scores(batch: np.ndarray, config: Config, mean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame scores (b, T') of every trivial predictor of references.py on the batch's videos, with
    the model's metrics, named <predictor>_<metric>. No rollout: each sees the context frames only."""
    ctx = config.open_loop_ctx
    frames = media.to_unit(batch)
    out = {}
    for name, pred in references.predict(frames[:, :ctx], frames.shape[1] - ctx, mean).items():
        ssim, psnr = _frame_metrics(pred, frames[:, ctx:], config.ssim_data_range)
        curves = {"ssim": ssim, "psnr": psnr, **extra_metrics(batch, pred[:, None], config)}
        out |= {f"{name}_{metric}": np.asarray(values).reshape(len(batch), -1) for metric, values in curves.items()}
    return out


@functools.partial(jax.jit, static_argnums=2)
def _frame_metrics(pred: jax.Array, target: jax.Array, ssim_range: float) -> tuple[jax.Array, jax.Array]:
    return tools.frame_metrics(pred, target, ssim_range)


def _is_official_ssim_range(data_range: float) -> bool:
    """Whether SSIM is computed at the official protocol's data range: the default of ssim_data_range."""
    return data_range == Config.ssim_data_range


@functools.partial(jax.jit, static_argnums=2)
def _ssim(pred: jax.Array, target: jax.Array, data_range: float) -> jax.Array:
    return tools.ssim(pred, target, data_range)


def write_batch(
    folder: runs.EvalFolder, first: int, batch, preds, curves: dict[str, np.ndarray], scores: Scores, config
) -> None:
    """Files of the batch's videos, numbered from `first`; `curves` are (b, S, T') per metric."""
    for i in range(len(batch)):
        write_example(folder, first + i, batch[i], preds[i], {k: v[i] for k, v in curves.items()}, scores, config)


def _save_frames(folder: pathlib.Path, name: str, frames: np.ndarray, grid: bool) -> None:
    """uint8 frames as <name>.npz (under arr_0, as the official np.savez) and a PNG grid."""
    media.save_npz(str(folder / f"{name}.npz"), frames)
    if grid:
        media.save_png(str(folder / f"{name}.png"), media.video_grid(frames))


def write_example(
    folder: runs.EvalFolder, index, video, preds, curves: dict[str, np.ndarray], scores: Scores, config
) -> None:
    """Files of one test video; adds its best samples' curves to `scores`."""
    ctx, grid = config.open_loop_ctx, not config.no_save_grid
    gt_dir, sample_dir = folder.truth(index), folder.samples(index)
    gt_dir.mkdir()
    sample_dir.mkdir()
    _save_frames(gt_dir, "gt_ctx", video[:ctx], grid)
    _save_frames(gt_dir, "gt_pred", video[ctx:], grid)
    order = np.random.default_rng([config.seed or 0, index]).permutation(len(preds))
    best = {name: scores.add(name, values) for name, values in curves.items()}
    samples = {"random_sample_1": order[0]}
    if len(preds) > 1:
        samples |= {"best_ssim_sample": best["ssim"], "best_psnr_sample": best["psnr"], "random_sample_2": order[1]}
    for name, i in samples.items():
        _save_frames(sample_dir, name, media.to_uint8(preds[i]), grid)
    if index < config.eval_videos:
        labelled = media.labelled_video(video[ctx:], preds[order[0]], first_frame=ctx + 1, context=video[:ctx])
        media.save_video(str(sample_dir / "prediction.mp4"), labelled, fps=20)
        if grid:  # one picture: the last context frame, then 7 predicted frames spread over the horizon
            picked = [ctx - 1, *np.unique(np.linspace(ctx, len(video) - 1, 7).round().astype(int))]
            media.save_png(str(sample_dir / "comparison.png"), media.video_grid(labelled[picked], per_row=4, gap=6))


def write_summary(
    folder: runs.EvalFolder,
    curves: dict[str, np.ndarray],
    config: Config,
    step: int,
    fvd,
    run_name: str = "",
    clock: Stopwatch | None = None,
    predicted: int = 0,
    reference_curves: dict[str, np.ndarray] | None = None,
):
    """Per-frame mean and std over examples of the best samples' scores (the official
    <metric>_mean.npz, <metric>_stddev.npz and <metric>_range.png, for SSIM, PSNR and the extra
    metrics), curves.csv, metrics.json and the table metrics.md. `clock` (the evaluation's
    stopwatch) and `predicted` (the number of frames predicted) give metrics.json its "seconds" per phase.
    `reference_curves`: the trivial predictors' per-frame scores (N, T'), named <predictor>_<metric>."""
    clock = clock or Stopwatch()
    curves = {k: (np.asarray(tools.cap_psnr(v)) if k == "psnr" else v) for k, v in curves.items()}
    refs = {
        k: (np.asarray(tools.cap_psnr(v)) if k.endswith("_psnr") else v) for k, v in (reference_curves or {}).items()
    }
    ctx, n = config.open_loop_ctx, len(curves["ssim"])
    with clock("files"):
        for name, values in curves.items():
            mean, std = values.mean(0), values.std(0)
            media.save_npz(str(folder.curve(name, "mean")), mean)
            media.save_npz(str(folder.curve(name, "stddev")), std)
            media.plot_metric(
                str(folder.plot(name)),
                mean,
                std,
                tools.METRICS[name].title,
                first_frame=ctx + 1,
                n=n,
                run=run_name,
                step=step,
                ylabel=tools.METRICS[name].axis_label,
                context_end=ctx + 0.5,
            )
        _write_curves(folder.curves_table, {**curves, **refs}, ctx)
    summary = {
        "step": step,
        "num_examples": n,
        "num_samples": config.num_samples,
        **{f"{name}_mean": float(v.mean()) for name, v in curves.items()},
        **{f"{name}_last_frame": float(v[:, -1].mean()) for name, v in curves.items()},
        **({"fvd": fvd} if fvd is not None else {}),
        "horizons": [
            {"metric": name, "frames": frames, "mean": mean, "std": std}
            for name, values in curves.items()
            for frames, mean, std in tools.horizon_means(values)
        ],
        **({"references": _reference_summary(refs)} if refs else {}),
        "settings": _settings(config),
        "seconds": clock.report(predicted),  # up to here; metrics.json and metrics.md take milliseconds
    }
    media.write_json(folder.summary, summary)
    media.write_text(folder.table, metrics_table(summary, run_name))
    return summary


def _reference_summary(refs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per trivial predictor: its title, each metric's mean over frames and videos, and its horizon rows."""
    out = {}
    for name in references.PREDICTORS:
        mine = {key.removeprefix(f"{name}_"): v for key, v in refs.items() if key.startswith(f"{name}_")}
        out[name] = {
            "title": references.title(name),
            **{f"{metric}_mean": float(v.mean()) for metric, v in mine.items()},
            "horizons": [
                {"metric": metric, "frames": frames, "mean": mean, "std": std}
                for metric, values in mine.items()
                for frames, mean, std in tools.horizon_means(values)
            ],
        }
    return out


def _settings(config: Config) -> dict[str, Any]:
    return {
        "protocol": config.protocol,
        "dataset": config.dataset,
        "data_source": config.data_source,
        "open_loop_ctx": config.open_loop_ctx,
        "eval_seq_len": config.eval_seq_len,
        "use_obs": config.use_obs or "T" * config.levels,
        **({"actions": config.eval_actions} if config.use_actions else {}),  # given (the videos') or zero
        "ssim_data_range": config.ssim_data_range,
        "psnr_data_range": tools.PSNR_DATA_RANGE,
        "psnr_cap_db": tools.PSNR_CAP_DB,
        "best_sample_by": "mean over frames, per video and metric",
        "seed": config.seed,
    }


def _write_curves(path: pathlib.Path, curves: dict[str, np.ndarray], ctx: int) -> None:
    """Per predicted frame (numbered from 1 for the first video frame), each metric's mean and std over videos."""
    header = ["frame"] + [f"{name}_{stat}" for name in curves for stat in ("mean", "std")]
    columns = [ctx + 1 + np.arange(next(iter(curves.values())).shape[1])]
    for values in curves.values():
        columns += [values.mean(0), values.std(0)]
    rows = [",".join(f"{c[t]:.6g}" for c in columns) for t in range(len(columns[0]))]
    media.write_text(path, "\n".join([",".join(header), *rows]) + "\n")


def metrics_table(summary: dict[str, Any], run_name: str = "") -> str:
    """The evaluation as markdown: what was evaluated and how, then mean ± std over videos of each
    metric per horizon of predicted frames."""
    s = summary["settings"]
    lines = [
        f"# {run_name or 'evaluation'}, step {summary['step']}",
        "",
        f"{summary['num_examples']} test videos of {s['dataset']} ({s['data_source']}), {summary['num_samples']} "
        f"sample(s) each, best sample per video by its mean over frames; {s['open_loop_ctx']} context frames, "
        f"frames {s['open_loop_ctx'] + 1}-{s['eval_seq_len']} predicted; protocol: {s['protocol'] or 'as configured'}. "
        f"SSIM data range {s['ssim_data_range']:g}"
        + (" (the official evaluation's)" if _is_official_ssim_range(s["ssim_data_range"]) else "")
        + f", PSNR data range {s['psnr_data_range']:g}, capped at {s['psnr_cap_db']:g} {tools.METRICS['psnr'].unit}.",
        "",
    ]
    if "actions" in s:  # an action-conditioned run
        lines[2] += f" {ACTIONS_GIVEN[s['actions']]}"
    rows = [[r["metric"], r["frames"], f"{r['mean']:.4f} ± {r['std']:.4f}"] for r in summary["horizons"]]
    if "fvd" in summary:
        note = fvd_note(summary["num_examples"])
        rows.append(["fvd", "first 16", f"{summary['fvd']:.2f}" + (f" ({note})" if note else "")])
    lines.append(media.markdown_table(["metric", "predicted frames", "mean ± std over videos"], rows))
    if "references" in summary:
        lines += ["", "Against trivial predictors (references.py), on the same videos and frames:", ""]
        lines.append(_reference_table(summary))
    return "\n".join(lines) + "\n"


def _reference_table(summary: dict[str, Any]) -> str:
    """Per metric and horizon: the model's mean, each trivial predictor's, and which of them the model beats."""
    refs = summary["references"]
    found = {(name, r["metric"], r["frames"]): r["mean"] for name, ref in refs.items() for r in ref["horizons"]}
    rows = []
    for r in summary["horizons"]:
        theirs = {name: found.get((name, r["metric"], r["frames"])) for name in refs}
        higher = tools.METRICS[r["metric"]].higher_is_better
        beaten = [n for n, v in theirs.items() if v is not None and (r["mean"] > v if higher else r["mean"] < v)]
        cells = [f"{v:.4f}" if v is not None else "" for v in theirs.values()]
        verdict = "all" if len(beaten) == len(refs) else ", ".join(refs[n]["title"] for n in beaten) or "none"
        rows.append([r["metric"], r["frames"], f"{r['mean']:.4f}", *cells, verdict])
    header = ["metric", "predicted frames", "model", *(ref["title"] for ref in refs.values()), "model beats"]
    return media.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        cli.use_compilation_cache()
        distributed.initialize()  # several processes (as training): each rolls out its share of every batch
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
