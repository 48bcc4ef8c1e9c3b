"""Train a Clockwork VAE.

    python train.py --config configs/mmnist.yml [--key value ...]

Running the same command again resumes from the experiment folder's latest checkpoint:
parameters, optimizer state, PRNG stream and data position, so that a stopped and resumed
run ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import config as cfg_lib
import cwvae
import data
import tools
from config import Config, ConfigError


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss); the message names the step."""


# --- model, optimizer, train step ------------------------------------------------------


def optimizer(lr: float, clip_grad_norm_by: float) -> optax.GradientTransformation:
    """Adam (eps 1e-4, as in the official code) after global-norm clipping."""
    return optax.chain(optax.clip_by_global_norm(clip_grad_norm_by), optax.adam(lr, eps=1e-4))


def make_optimizer(config: Config) -> optax.GradientTransformation:
    return optimizer(config.lr, config.clip_grad_norm_by)


def train_step_fn(graphdef: nnx.GraphDef, config: Config, mesh) -> Callable:
    """The compiled train step of this model, optimizer and mesh; cached, so a second run
    of the same config in one process does not compile again."""
    return make_train_step(graphdef, mesh, config.lr, config.clip_grad_norm_by)


def init_model(config: Config) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph definition and parameters, initialised from the run's seed."""
    model = cwvae.CWVAE(config, rngs=nnx.Rngs(params=jax.random.fold_in(jax.random.key(config.seed), 0)))
    return nnx.split(model)


def make_mesh() -> jax.sharding.Mesh:
    """A one-axis mesh over all devices: the batch is split along 'data', parameters replicated."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def to_frames(batch: jax.Array) -> jax.Array:
    """uint8 video batch -> float32 frames in [0, 1] (converted on device: 4x less transfer)."""
    return batch.astype(jnp.float32) / 255.0


@functools.cache
def make_train_step(graphdef: nnx.GraphDef, mesh, lr: float, clip_grad_norm_by: float) -> Callable:
    """One jit-compiled, pure step (params, opt_state, uint8 batch, key) -> (params, opt_state, metrics)."""
    tx = optimizer(lr, clip_grad_norm_by)

    def loss_fn(params, obs, key):
        return nnx.merge(graphdef, params).loss(obs, key)

    def step(params, opt_state, batch, key):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, to_frames(batch), key)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return optax.apply_updates(params, updates), opt_state, metrics

    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, replicated, NamedSharding(mesh, P("data")), replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1),
    )


@functools.cache
def make_open_loop(graphdef: nnx.GraphDef, open_loop_ctx: int, ssim_data_range: float) -> Callable:
    """One compiled function (params, uint8 videos (N, T, ...), keys (N,)) -> predictions
    (N, T - ctx, H, W, C) and per-frame SSIM and PSNR (N, T - ctx). Each video gets its own
    key, so a video's sample does not depend on the batch it came in; cached per model."""

    @jax.jit
    def open_loop(params, videos, keys):
        model = nnx.merge(graphdef, params)
        obs = to_frames(videos)
        pred = jax.vmap(lambda o, k: model.open_loop(o[None], k, open_loop_ctx)[0])(obs, keys)
        target = obs[:, open_loop_ctx:]
        return pred, *tools.frame_metrics(pred, target, ssim_data_range, tools.PSNR_DATA_RANGE)

    return open_loop


@functools.cache
def make_val_loss(graphdef: nnx.GraphDef) -> Callable:
    """Jit-compiled loss terms of a uint8 batch (validation); cached per model."""

    @jax.jit
    def val_loss(params, batch, key):
        return nnx.merge(graphdef, params).loss(to_frames(batch), key)[1]

    return val_loss


def num_train_steps(config: Config) -> int:
    """Steps in num_epochs passes over the training clips (each video cut into seq_len clips)."""
    videos = data.open_videos(config, "train")
    clips = len(videos) * (videos.length // config.seq_len)
    return clips * config.num_epochs // config.batch_size


def step_key(seed: int, step: int) -> jax.Array:
    """The sampling noise of step `step`: the same on a resumed run."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)


# --- checkpoints -----------------------------------------------------------------------


def checkpoint_manager(exp_dir: pathlib.Path, config: Config) -> ocp.CheckpointManager:
    """Latest checkpoint kept, plus a permanent one every save_named_model_every steps;
    orbax writes each to a temporary folder and renames it (atomic)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        keep_period=config.save_named_model_every,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(exp_dir.absolute() / "checkpoints", options=options)


def save_checkpoint(manager, step: int, params, opt_state, data_state: dict) -> None:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
            data=ocp.args.JsonSave(data_state),
        ),
        force=True,
    )
    manager.wait_until_finished()


def restore_checkpoint(manager, step: int, params, opt_state) -> tuple[Any, Any, dict]:
    """Restore into the structure (and shardings) of the given params and opt_state."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
    try:
        out = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"checkpoint {manager.directory}/{step} does not match the config's model: {str(e).splitlines()[0][:200]}"
        ) from None
    return out.state["params"], out.state["opt_state"], out.data


def check_shapes(state_dir: pathlib.Path, params) -> None:
    """Compare the stored parameter shapes with the model's before restoring, so a wrong
    config.yml gives a one-line error naming the first parameter that differs."""

    def name(path) -> str:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

    stored = ocp.PyTreeCheckpointer().metadata(state_dir.absolute()).item_metadata["params"]
    stored = {name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(stored)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params)):
        want = stored.get(name(path))
        if want != leaf.shape:
            raise ConfigError(
                f"checkpoint '{state_dir.parent}' does not match config.yml's model: parameter {name(path)} "
                f"is {want} in the checkpoint and {leaf.shape} in the model"
            )


def load_params(checkpoint_dir: pathlib.Path, config: Config, step: int | None = None) -> tuple[nnx.GraphDef, Any, int]:
    """The model of a run for evaluation: (graphdef, params, step) from its checkpoints folder."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: cwvae.CWVAE(config, rngs=nnx.Rngs(0))))  # shapes only
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
    options = ocp.CheckpointManagerOptions(create=False)
    with ocp.CheckpointManager(pathlib.Path(checkpoint_dir).absolute(), options=options) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f"no checkpoint in '{checkpoint_dir}'; train first or pass the experiment folder")
        check_shapes(pathlib.Path(checkpoint_dir) / str(step) / "state", params)
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), abstract)
        args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=args))
        except (ValueError, KeyError, TypeError) as e:
            reason = str(e).splitlines()[0].split(". Truncating")[0][:200]
            raise ConfigError(
                f"checkpoint '{checkpoint_dir}/{step}' does not match config.yml's model: {reason}"
            ) from None
    return graphdef, restored.state["params"], step


# --- run setup -------------------------------------------------------------------------


def resolve_run_config(config: Config) -> Config:
    """Take the seed of an existing run in the experiment folder when none was given, so
    rerunning the same command resumes that run; otherwise draw one and save it."""
    saved = config.exp_dir() / "config.yml"
    if config.seed is None and saved.exists():
        seed = cfg_lib.load_yaml(str(saved)).get("seed")
        config = dataclasses.replace(config, seed=seed)
    return cfg_lib.resolve_seed(config)


def init_wandb(config: Config):
    """A wandb run that never prompts; sweeps' run config overrides the config."""
    import wandb

    config = cfg_lib.resolve_wandb_mode(config)
    pathlib.Path(config.logdir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        dir=config.logdir,
        config=config.to_dict(),
        settings=wandb.Settings(silent=True),
    )
    return run, cfg_lib.with_wandb(config, dict(run.config), jax.device_count())


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, saves and exits cleanly."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclasses.dataclass
class TrainResult:
    step: int  # steps done in total
    params: Any  # final parameters (nnx.State)
    losses: dict[int, float]  # loss per step run in this call
    exp_dir: pathlib.Path
    stopped_by_signal: bool = False


# --- summaries -------------------------------------------------------------------------


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


def validation_batches(config: Config) -> list[np.ndarray]:
    """The fixed validation set: batch_size * num_val_batches test clips of val_seq_len (or
    eval_seq_len) frames, in sub-batches of at most eval_batch_size videos so that 1000-frame
    clips fit in memory; every sub-batch has one shape (one compile)."""
    sub = min(config.eval_batch_size, config.batch_size)
    count = config.batch_size * config.num_val_batches // sub * sub
    loader = data.make_eval_loader(config, config.val_seq_len or config.eval_seq_len, sub, count)
    return [np.asarray(b) for b in loader if len(b) == sub]


def validation_summary(config, params, val_batches, graphdef, step: int, with_videos: bool, log) -> None:
    """Loss terms and open-loop SSIM/PSNR on the fixed validation batches."""
    val_loss = make_val_loss(graphdef)
    open_loop = make_open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 2), step)
    values: dict[str, list[float]] = {}
    for i, batch in enumerate(val_batches):
        metrics = dict(val_loss(params, batch, key))
        pred, ssim, psnr = open_loop(params, batch, jax.random.split(key, len(batch)))
        metrics["open_loop_ssim"] = jnp.mean(ssim)
        metrics["open_loop_psnr"] = jnp.mean(tools.cap_psnr(psnr))
        for k, v in metrics.items():
            values.setdefault(k, []).append(float(v))
        if with_videos and i == 0:
            log_video(config, batch, pred, "val/open_loop", step, log)
    summary = {f"val/{k}": float(np.mean(v)) for k, v in values.items()}
    log(summary, step)
    print(
        f"step {step}: val/loss {summary['val/loss']:.2f} open-loop SSIM {summary['val/open_loop_ssim']:.3f} "
        f"PSNR {summary['val/open_loop_psnr']:.2f}",
        flush=True,
    )


def summarize(config, params, batch, val_batches, graphdef, step: int, log) -> None:
    """Validation scalars every save_scalars_every steps; prediction videos of a train and a
    validation batch every save_gifs_every steps (when save_gifs)."""
    videos = config.save_gifs and step % config.save_gifs_every == 0
    if step % config.save_scalars_every == 0 or videos:
        validation_summary(config, params, val_batches, graphdef, step, videos, log)
    if videos and config.seq_len > config.open_loop_ctx:
        open_loop = make_open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
        pred, _, _ = open_loop(params, batch, jax.random.split(step_key(config.seed, step), len(batch)))
        log_video(config, np.asarray(batch), pred, "train/open_loop", step, log)


def log_video(config, batch, pred, name: str, step: int, log) -> None:
    """Ground truth, prediction and error stacked, for the first video of the batch: written
    as a GIF under the experiment folder's videos/ and logged to wandb from that file."""
    import wandb

    gt = np.asarray(batch[0, config.open_loop_ctx :], np.float32) / 255.0
    strip = tools.prediction_strip(gt, np.asarray(pred[0]))
    path = config.exp_dir() / "videos" / f"{name.replace('/', '_')}_{step:08d}.gif"
    path.parent.mkdir(parents=True, exist_ok=True)
    tools.save_video(str(path), strip, fps=10)
    log({name: wandb.Video(str(path), format="gif")}, step)


# --- the loop --------------------------------------------------------------------------


def train(config: Config) -> TrainResult:
    """Train (or resume) the run that `config` names; returns when the data or max_steps
    run out, or after a SIGINT/SIGTERM (with a checkpoint written)."""
    config = resolve_run_config(cfg_lib.validate(config, jax.device_count()))
    run, config = init_wandb(config)
    exp_dir = config.exp_dir()
    exp_dir.mkdir(parents=True, exist_ok=True)
    config.save(exp_dir / "config.yml")
    try:
        return _train(config, exp_dir, run.log)
    finally:
        run.finish()


def _train(config: Config, exp_dir: pathlib.Path, log) -> TrainResult:
    mesh = make_mesh()
    graphdef, params = init_model(config)
    n_params = cwvae.count_params(nnx.merge(graphdef, params))
    keras_extra = 2 * config.cell_deter_size * config.levels
    print(f"parameters: {n_params:,} (official TF model with Keras GRU biases: {n_params + keras_extra:,})")
    tx = make_optimizer(config)
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(tx.init(params), replicated)
    manager = checkpoint_manager(exp_dir, config)
    loader = data.make_train_loader(config)
    print(f"data: {data.describe_source(config)}")
    start = manager.latest_step() or 0
    if start:
        params, opt_state, data_state = restore_checkpoint(manager, start, params, opt_state)
        loader.set_state(data_state)
        print(f"resumed from {exp_dir / 'checkpoints'} at step {start}")

    train_step = train_step_fn(graphdef, config, mesh)
    val_batches = validation_batches(config)
    batch_sharding = NamedSharding(mesh, P("data"))
    total = num_train_steps(config)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    losses: dict[int, float] = {}
    pending = None  # (step, metrics) of the last step, fetched one step late
    clock = [time.time(), start]
    bar = _progress(config, start, total)

    def flush():
        """Fetch the pending step's metrics; raise on a non-finite loss; log scalars."""
        nonlocal pending
        if pending is None:
            return
        s, metrics = pending
        pending = None
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise TrainingError(
                f"non-finite loss {loss} at step {s}; the last good checkpoint in {exp_dir / 'checkpoints'} is kept"
            )
        losses[s] = loss
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
        if s % config.save_scalars_every == 0:
            now = time.time()
            rate = (s - clock[1]) / max(now - clock[0], 1e-9)
            clock[:] = [now, s]
            log({**scalars(metrics, "train"), "train/steps_per_sec": rate}, s)
            text = f"step {s}: loss {loss:.2f} nll {float(metrics['nll_term']):.2f} kl {float(metrics['kl_term']):.3f}"
            (bar.write if bar is not None else print)(f"{text} ({rate:.2f} steps/s)")

    step = start
    print(f"training from step {start} to {total} in {exp_dir}", flush=True)
    with StopFlag() as stop:
        while step < total and stop.signal is None:
            try:
                batch = next(loader)
            except StopIteration:
                break
            batch = jax.device_put(batch, batch_sharding)
            params, opt_state, metrics = train_step(params, opt_state, batch, step_key(config.seed, step))
            flush()  # the previous step's metrics, while this step runs
            step += 1
            pending = (step, metrics)
            if bar is not None:
                bar.update(1)
            if step % config.save_model_every == 0 or step % config.save_named_model_every == 0:
                flush()  # never checkpoint parameters that came from a non-finite loss
                save_checkpoint(manager, step, params, opt_state, loader.get_state())
            if step % config.save_scalars_every == 0 or (config.save_gifs and step % config.save_gifs_every == 0):
                flush()
                summarize(config, params, batch, val_batches, graphdef, step, log)
        flush()
        if step != manager.latest_step():
            save_checkpoint(manager, step, params, opt_state, loader.get_state())
    if bar is not None:
        bar.close()
    manager.close()
    if stop.signal is not None:
        print(f"stopped by signal {stop.signal} at step {step}; checkpoint written, rerun the command to resume")
    return TrainResult(step, params, losses, exp_dir, stop.signal is not None)


def _progress(config: Config, start: int, total: int):
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stdout)


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        config = cfg_lib.parse(argv, jax.device_count())
        try:
            train(config)
        except (TrainingError, data.DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    cfg_lib.main_guard(run)


if __name__ == "__main__":
    main()
