"""A run's checkpoints: save, restore, fall back past a damaged one, and keep orbax quiet.

Training saves params, optimizer state and the loader positions (orbax, grain) into
checkpoints/<step>/ of its run folder (runs.RunFolder) and resumes from the newest one that
restores; evaluation and the Python entry point read the params of one. A checkpoint that does not
restore is one line, never orbax's and tensorstore's own reports of it (quiet_orbax).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx

import steps
from config import Config
from errors import ConfigError, UserError
from runs import RunError, RunFolder, fs_message


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
    return ocp.CheckpointManager(RunFolder(folder.absolute()).checkpoints, options=options)


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


# --- restoring, past a damaged checkpoint --------------------------------------------------------


def restore_latest(folder: pathlib.Path, config: Config, params, opt_state, loader):
    """(manager, step, params, opt_state) from the newest checkpoint that restores, the loader moved
    to its position; step 0 and the given state when there is none (see restore_with_fallback)."""
    run = RunFolder(folder.absolute())
    manager = checkpoint_manager(run.path, config)

    def read(step: int):
        check_shapes(run.state(step), params)
        return _restore(run, manager, step, params, opt_state, loader)

    step, restored = restore_with_fallback(run, read, set_aside=True)
    if run.complete_steps() != sorted(manager.all_steps(), reverse=True):  # a checkpoint was set aside
        manager.close()
        manager = checkpoint_manager(run.path, config)
    return (manager, 0, params, opt_state) if step is None else (manager, step, *restored)


def _restore(run: RunFolder, manager, step: int, params, opt_state, loader) -> tuple[Any, Any]:
    """Restore into the structure (and shardings) of the given params and opt_state, and this
    process's loader position into `loader`; a run resumes with the process count that saved it."""
    if not run.data_position(step, jax.process_index(), jax.process_count()).exists():
        saved = sorted(p.name for p in run.data_position(step, 0, 1).parent.glob("process_*-of-*.json"))
        if saved:  # written by another number of processes
            count = saved[0].rsplit("-of-", 1)[1].removesuffix(".json")
            raise RunError(
                f"checkpoint {run.checkpoint(step)} was written by {count} processes; resume it with {count} "
                f"(this run has {jax.process_count()})"
            )
        raise FileNotFoundError(f"checkpoint {step} has no data/ (loader position)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(loader))
    with quiet_orbax():
        out = manager.restore(step, args=args)
    return out.state["params"], out.state["opt_state"]


def load_params(run: RunFolder, config: Config, step: int | None = None) -> tuple[nnx.GraphDef, Any, int]:
    """The model of a run for evaluation: (graphdef, params, step) of checkpoint `step` or of the newest
    that restores (see restore_with_fallback). Safe while the run trains: when the newest checkpoint
    is replaced under us, the next newest is read. Parameters only: any process count restores."""
    graphdef, abstract_params = steps.abstract_model(config)  # shapes only
    run = RunFolder(pathlib.Path(run.path).absolute())
    step, params = restore_with_fallback(run, lambda s: _read_params(run, s, abstract_params), step)
    if step is None:
        raise ConfigError(f"no checkpoint in '{run.checkpoints}'; train first or pass the experiment folder")
    return graphdef, params, step


def _read_params(run: RunFolder, step: int, params) -> Any:
    check_shapes(run.state(step), params)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), abstract)
    args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
    with quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(run.state(step), args=args)["params"]


def check_shapes(state_dir: pathlib.Path, params) -> None:
    """Compare the stored parameter shapes with the model's before restoring, so a wrong
    config.yml gives a one-line error naming the first parameter that differs. The handler reads
    the arrays' metadata only (a Checkpointer also looks for the step's metadata file, which a
    checkpoint manager writes one folder up, and warns that it is missing)."""

    def name(path) -> str:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

    handler = ocp.PyTreeCheckpointHandler()
    try:
        stored = handler.metadata(state_dir.absolute())["params"]
    finally:
        handler.close()
    stored = {name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(stored)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params)):
        want = stored.get(name(path))
        if want != leaf.shape:
            raise ConfigError(
                f"checkpoint '{state_dir.parent}' does not match config.yml's model: parameter {name(path)} "
                f"is {want} in the checkpoint and {leaf.shape} in the model"
            )


def restore_with_fallback(run: RunFolder, read: Callable[[int], Any], step: int | None = None, set_aside=False):
    """(step, read(step)) of checkpoint `step`, or of the newest checkpoint that restores; (None, None)
    when there is none. Training and evaluation both restore through here.

    A damaged checkpoint is a one-line RunError when the user named it, or with several processes
    (they could not agree on which one to fall back to); otherwise one warning line and the next
    older one is tried; with `set_aside` (training, which owns the folder) it is first moved to
    damaged_checkpoints/. A checkpoint that disappears while it is read (a training run replacing
    it) is not damaged: the new newest is read. A UserError of `read` (a checkpoint of another
    model) ends it at once."""
    skipped: set[int] = set()
    for _ in range(20):  # a run saving every step can replace a few checkpoints while we read
        candidates = [step] if step is not None else run.complete_steps(skipped)
        if not candidates:
            break
        chosen = candidates[0]
        try:
            return chosen, read(chosen)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types for damaged files)
            if step is None and not run.checkpoint(chosen).exists():
                continue
            if step is not None or jax.process_count() > 1:
                raise RunError(f"checkpoint '{run.checkpoint(chosen)}' does not restore: {_reason(e)}") from None
            then = f"moved to {quarantine(run, chosen)}" if set_aside else "using an older one"
            print(f"warning: checkpoint {chosen} does not restore ({_reason(e)}); {then}", file=sys.stderr)
            skipped.add(chosen)
    if skipped:
        raise RunError(f"no checkpoint in '{run.checkpoints}' restores (damaged: {sorted(skipped)})")
    return None, None


def quarantine(run: RunFolder, step: int) -> pathlib.Path:
    """Move a checkpoint that does not restore out of checkpoints/ (kept for inspection)."""
    target = run.damaged_checkpoint(step)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run.checkpoint(step)), str(target))
    return target


_STATUS = re.compile(
    r"\b(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|PERMISSION_DENIED|"
    r"RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|"
    r"UNAUTHENTICATED): .*"
)


def _reason(e: BaseException, limit: int = 300) -> str:
    """Why a checkpoint does not restore, in one line: tensorstore's status (its code and message,
    e.g. "OUT_OF_RANGE: Error reading "params.../0.0" in OCDBT database: Requested byte range [..)
    is not valid for value of size ..") where the error's chain has one, else the error's message;
    never the TensorStore spec orbax appends, nor the database's path (the caller names the
    checkpoint)."""
    chain = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    messages = [" ".join(str(x).split()) for x in chain]
    status = next((m.group(0) for m in map(_STATUS.search, messages) if m), None)
    text = status or messages[0] or type(chain[0]).__name__
    text = re.split(r" See full TensorStore details| \[\w+='|<bound method", text)[0]
    text = re.sub(r' at local file "[^"]*"', "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- keeping orbax quiet ---------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_orbax():
    """Hold back everything an orbax call writes to stderr, and show it only when the call succeeds.
    When a read or a write fails, orbax's threads, tensorstore, the `asyncio` and absl loggers,
    unraisable exceptions and warnings all report it before the error reaches us; we report it
    once, in one line. Nothing of a failed call outlives the holding, so nothing of it is printed
    later: its event loops end every read before they close, and its frames are freed inside."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)  # what tensorstore's C++ (or anything else) writes to fd 2
        try:
            with _python_output_into(held), _draining_loops():
                try:
                    yield
                except Exception as e:
                    _free_failed_call(e)
                    raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        held.seek(0)
        replay = held.read().decode(errors="replace")
    sys.stderr.write(replay)  # the call succeeded: what it printed was real output


@contextlib.contextmanager
def _python_output_into(held):
    """Send sys.stderr, the `asyncio` and absl loggers, unraisable exceptions, exceptions ending a
    thread and warnings to the file `held` (from every thread) while the context lasts; orbax's own
    absl info and warning lines are dropped, as outside it."""
    text = open(os.dup(held.fileno()), "w", buffering=1, errors="backslashreplace")
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    loggers = {logger: logger.propagate for logger in (logging.getLogger("asyncio"), absl_logging.get_absl_logger())}
    saved = sys.stderr, sys.unraisablehook, threading.excepthook, absl_logging.get_verbosity()
    sys.stderr, sys.unraisablehook, threading.excepthook = text, sys.__unraisablehook__, threading.__excepthook__
    absl_logging.set_verbosity(absl_logging.FATAL)
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: text.write(
                warnings.formatwarning(message, category, filename, lineno, line)
            )
            yield
    finally:
        for logger, propagate in loggers.items():
            logger.removeHandler(handler)
            logger.propagate = propagate
        sys.stderr, sys.unraisablehook, threading.excepthook = saved[:3]
        absl_logging.set_verbosity(saved[3])
        text.close()


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its tasks end before it closes. orbax runs each call in a new loop
    and closes it as soon as the first read fails; the other reads went on in tensorstore's threads
    and, at some later moment, reported that nobody awaited them ("Task exception was never
    retrieved" with the whole TensorStore spec, "Event loop is closed")."""

    WAIT_S = 10.0  # for the reads still running; then they are cancelled

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            self.run_until_complete(self._finish())
        super().close()

    async def _finish(self) -> None:
        for _ in range(10):  # an ending task may start others
            tasks = asyncio.all_tasks(self) - {asyncio.current_task()}
            if not tasks:
                break
            _, late = await asyncio.wait(tasks, timeout=self.WAIT_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self.WAIT_S)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the error reached us through the first read
            await asyncio.sleep(0)  # the callbacks of the ended tasks (orbax's gathers) run
        await self.shutdown_asyncgens()
        await self.shutdown_default_executor()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingLoop()


@contextlib.contextmanager
def _draining_loops():
    """Every event loop made while the context lasts is a `_DrainingLoop`: orbax makes its loops
    with asyncio.new_event_loop(), which asks the event loop policy."""
    saved = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


def _free_failed_call(e: BaseException) -> None:
    """Free the frames of a failed call now: they hold the coroutines it made and never started
    (reads of other arrays), which warn "coroutine ... was never awaited" when collected."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # the traceback itself stays (its lines)
        e = e.__cause__ or e.__context__
    gc.collect()
