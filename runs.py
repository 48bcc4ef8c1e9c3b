"""Experiment folders: which folder a run lives in, one writer per folder, its saved config, its
checkpoints and its wandb run. Training writes, and evaluation reads, one folder per experiment:

    logdir/<dataset>/<run name>/
        config.yml          the resolved config; a resume must match its result-changing keys
        wandb_id            the wandb run this folder belongs to (a resume continues it)
        lock                held by the training process (PID and host inside)
        checkpoints/<step>/ orbax: params and optimizer state (state/), loader position (data/)
        damaged_checkpoints/<step>/  checkpoints that did not restore, moved aside

The run name is a readable prefix of the main keys plus a hash of every result-changing key
(`Config.run_hash`), or --run_name, or under a wandb sweep the wandb run's id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import pathlib
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx

import config as cfg_lib
import steps
import tools
from config import Config, ConfigError, UserError


class RunError(UserError):
    """A run folder or checkpoint problem (in use, damaged, disk full, read-only): one line."""


def run_dir(config: Config) -> pathlib.Path:
    """logdir/dataset/<run name>: where checkpoints, config.yml and summaries live."""
    return pathlib.Path(config.logdir) / config.dataset / (config.run_name or config.default_run_name())


def fs_error(e: BaseException, path: os.PathLike | str = "?") -> OSError | None:
    """The OSError behind `e`, or None. orbax re-raises some; tensorstore reports them as a
    ValueError ending in "[os_error_code='28']"."""
    while e is not None:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        if code := re.search(r"os_error_code='(\d+)'", str(e)):
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path))
        e = e.__cause__ or e.__context__
    return None


def fs_message(e: OSError, doing: str) -> str:
    path = e.filename or "?"
    hint = {errno.ENOSPC: "free some space", errno.EROFS: "pass a writable --logdir", errno.EACCES: "check permissions"}
    return f"cannot {doing}: {path}: {e.strerror}" + (f"; {hint[e.errno]}" if e.errno in hint else "")


# --- which folder, and is it the same experiment ------------------------------------------------


def name_run(config: Config, wandb_run_id: str | None = None) -> Config:
    """Fix the run's folder name: --run_name, else the sweep's wandb run id, else prefix + hash."""
    if config.run_name is not None:
        return config
    return dataclasses.replace(config, run_name=wandb_run_id or config.default_run_name())


def resume_config(config: Config) -> Config:
    """The config to run in the run's folder: a new folder draws the seed when none was given; an
    existing one must hold the same experiment (its saved result keys equal ours, the seed adopted
    when none was given), otherwise ConfigError lists the keys that differ."""
    saved_path = run_dir(config) / "config.yml"
    if not saved_path.exists():
        return cfg_lib.resolve_seed(config)
    saved = cfg_lib.apply(Config(), cfg_lib.load_yaml(str(saved_path)), f"config file '{saved_path}'")
    if config.seed is None:
        config = dataclasses.replace(config, seed=saved.seed)
    ours, theirs = config.result_keys(), saved.result_keys()
    diff = [f"{k} {theirs[k]!r} -> {ours[k]!r}" for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise ConfigError(
            f"run folder '{run_dir(config)}' holds a run with other settings ({'; '.join(diff)}); "
            "pass another --run_name, or the saved values to resume it"
        )
    return config


class RunLock:
    """One writer per run folder: an exclusive flock on <run>/lock, released by the kernel when
    the process ends (so a killed run leaves no stale lock). The file names the holder."""

    def __init__(self, folder: pathlib.Path):
        self.path = folder / "lock"
        self._fd = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"run folder '{self.path.parent}' is in use by {holder}; wait for it to end") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on host {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # closing releases the flock


def write_config(config: Config) -> None:
    tools.write_text(run_dir(config) / "config.yml", config.to_yaml())


# --- wandb ----------------------------------------------------------------------------------------


def in_sweep() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def init_wandb(config: Config, run_id: str | None = None):
    """A wandb run that never prompts, resumed when `run_id` names an earlier one."""
    import wandb

    config = cfg_lib.resolve_wandb_mode(config)
    pathlib.Path(config.logdir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        dir=config.logdir,
        config=config.to_dict(),
        id=run_id,
        resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True),
    )


def wandb_id(config: Config) -> str:
    """The wandb run id kept in the run folder (made and saved on the first start)."""
    path = run_dir(config) / "wandb_id"
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb's ids are 8 lowercase letters and digits
    tools.write_text(path, run_id)
    return run_id


# --- checkpoints ----------------------------------------------------------------------------------


def checkpoint_manager(folder: pathlib.Path, config: Config) -> ocp.CheckpointManager:
    """The two latest checkpoints kept (so a damaged newest one has a fallback, and eval.py can
    read one while training writes the next), plus a permanent one every save_named_model_every
    steps; orbax writes each to a temporary folder and renames it (atomic)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2,
        keep_period=config.save_named_model_every,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(folder.absolute() / "checkpoints", options=options)


def save_checkpoint(manager, step: int, params, opt_state, loader) -> None:
    """Write checkpoint `step`, every process taking part: orbax writes the arrays together, each
    process its own loader position (data/process_<p>-of-<n>.json). A filesystem fault (full disk,
    read-only) is a one-line RunError, and the previous checkpoints stay readable (orbax renames a
    finished checkpoint into place)."""
    doing = f"write checkpoint {step} in {manager.directory}"
    _check_space(pathlib.Path(manager.directory), (params, opt_state), doing)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
        data=grain.checkpoint.CheckpointSave(loader),
    )
    try:
        with quiet_orbax():
            manager.save(step, args=args, force=True)
            manager.wait_until_finished()
    except Exception as e:
        if (os_error := fs_error(e, manager.directory)) is None:
            raise
        raise RunError(fs_message(os_error, doing)) from None


def _check_space(folder: pathlib.Path, tree, doing: str) -> None:
    """Refuse before writing when the disk cannot hold the checkpoint (orbax fails noisily half-way)."""
    need = sum(x.nbytes for x in jax.tree.leaves(tree)) * 1.1 + 2**20
    free = shutil.disk_usage(folder).free
    if free < need:
        raise RunError(f"cannot {doing}: needs ~{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; free some space")


@contextlib.contextmanager
def quiet_orbax():
    """orbax's worker threads print their own tracebacks (and log them) when a write or a read
    fails, before the error reaches us; we report it once, in one line. What they print is held
    back and shown only when the call succeeds."""
    hook, level = threading.excepthook, absl_logging.get_verbosity()
    threading.excepthook = lambda args: None
    absl_logging.set_verbosity(absl_logging.FATAL)
    sys.stderr.flush()
    saved_fd, succeeded = os.dup(2), False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            succeeded = True
        except BaseException:
            time.sleep(1.0)  # the failed call's other reads and writes end (and print) in their threads
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            threading.excepthook = hook
            absl_logging.set_verbosity(level)
            if succeeded:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _reason(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def quarantine(folder: pathlib.Path, step: int) -> pathlib.Path:
    """Move a checkpoint that does not restore out of checkpoints/ (kept for inspection)."""
    target = folder / "damaged_checkpoints" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder / "checkpoints" / str(step)), str(target))
    return target


def restore_latest(folder: pathlib.Path, config: Config, params, opt_state, loader):
    """(manager, step, params, opt_state) from the newest checkpoint that restores, the loader moved
    to its position; step 0 and the given state when there is none. A damaged checkpoint is reported
    in one line and moved to damaged_checkpoints/; if none restores, RunError. With several
    processes a damaged checkpoint is a RunError: they could not agree on which one to fall back to."""
    manager = checkpoint_manager(folder, config)
    tried = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            check_shapes(folder / "checkpoints" / str(step) / "state", params)
            return (manager, step, *_restore(manager, step, params, opt_state, loader))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types for damaged files)
            if jax.process_count() > 1:
                raise RunError(
                    f"checkpoint {folder / 'checkpoints' / str(step)} does not restore: {_reason(e)}"
                ) from None
            manager.close()
            moved = quarantine(folder, step)
            print(f"warning: checkpoint {step} does not restore ({_reason(e)}); moved to {moved}", file=sys.stderr)
            tried.append(step)
            manager = checkpoint_manager(folder, config)
    if tried:
        raise RunError(f"no checkpoint of '{folder}' restores (tried steps {tried}); see damaged_checkpoints/")
    return manager, 0, params, opt_state


def _restore(manager, step: int, params, opt_state, loader) -> tuple[Any, Any]:
    """Restore into the structure (and shardings) of the given params and opt_state, and this
    process's loader position into `loader`; a run resumes with the process count that saved it."""
    data_dir = pathlib.Path(manager.directory) / str(step) / "data"
    if (data_dir / "metadata").exists():  # JsonSave's file: a checkpoint from before multi-process runs
        raise RunError(f"checkpoint {data_dir.parent} keeps its loader position in the old format; start a new run")
    if not (data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists():
        saved = sorted(p.name for p in data_dir.glob("process_*-of-*.json"))
        if saved:  # written by another number of processes
            count = saved[0].rsplit("-of-", 1)[1].removesuffix(".json")
            raise RunError(
                f"checkpoint {data_dir.parent} was written by {count} processes; resume it with {count} "
                f"(this run has {jax.process_count()})"
            )
        raise FileNotFoundError(f"checkpoint {step} has no data/ (loader position)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(loader))
    with quiet_orbax():
        out = manager.restore(step, args=args)
    return out.state["params"], out.state["opt_state"]


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
    """The model of a run for evaluation: (graphdef, params, step) from its checkpoints folder.

    Safe while the run trains: when the newest checkpoint is replaced under us, the next newest is
    read. A damaged checkpoint is skipped with a one-line warning (the latest) or is a RunError
    (a step named by the user)."""
    graphdef, abstract_params = steps.abstract_model(config)  # shapes only
    checkpoint_dir = pathlib.Path(checkpoint_dir).absolute()
    skipped: set[int] = set()
    for _ in range(20):  # a run saving every step can replace a few checkpoints while we read
        candidates = [step] if step is not None else _complete_steps(checkpoint_dir, skipped)
        if not candidates:
            break
        chosen = candidates[0]
        try:
            return graphdef, _read_params(checkpoint_dir, chosen, abstract_params), chosen
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 (a deleted or damaged checkpoint: many exception types)
            if not (checkpoint_dir / str(chosen)).exists():
                continue  # replaced by training while we read it: take the new newest
            if step is not None:
                raise RunError(f"checkpoint '{checkpoint_dir}/{chosen}' does not restore: {_reason(e)}") from None
            print(f"warning: checkpoint {chosen} does not restore ({_reason(e)}); using an older one", file=sys.stderr)
            skipped.add(chosen)
    if skipped:
        raise RunError(f"no checkpoint in '{checkpoint_dir}' restores (damaged: {sorted(skipped)})")
    raise ConfigError(f"no checkpoint in '{checkpoint_dir}'; train first or pass the experiment folder")


def _complete_steps(checkpoint_dir: pathlib.Path, skipped: set[int]) -> list[int]:
    """Finished checkpoint steps, newest first (orbax renames a folder to its step when complete)."""
    if not checkpoint_dir.is_dir():
        return []
    steps_ = [int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit()]
    return sorted((s for s in steps_ if s not in skipped), reverse=True)


def _read_params(checkpoint_dir: pathlib.Path, step: int, params) -> Any:
    check_shapes(checkpoint_dir / str(step) / "state", params)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), abstract)
    args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
    with quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(checkpoint_dir / str(step) / "state", args=args)["params"]
