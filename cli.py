"""How the scripts (train.py, eval.py, data.py) end: in one line, never a traceback. A user error
exits 2, a failed run 1, a stop by a signal (Ctrl-C, SIGTERM) 0; running out of memory names the
config key to lower."""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from errors import RunFailure, UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def use_compilation_cache() -> str | None:
    """Keeps the XLA programs that train.py and eval.py compile in a folder (JAX's persistent
    cache), so that a rerun of the same config and shapes skips compiling: the mmnist train step
    takes about a minute to compile on 2 cores, the 1000-frame rollout about 11 s. The folder is
    $JAX_COMPILATION_CACHE_DIR when set, else $XDG_CACHE_HOME/cwvae-jax/xla (~/.cache/...);
    JAX_ENABLE_COMPILATION_CACHE=false turns it off. Returns the folder, or None when off (or
    when the default folder cannot be made)."""
    import jax

    if os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in ("0", "false"):
        return None
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not folder:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(home, "cwvae-jax", "xla")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:  # an unwritable home: run without the cache (JAX warned on every compile)
            print(f"note: no compilation cache ({folder}: {e.strerror})", file=sys.stderr)
            return None
        jax.config.update("jax_compilation_cache_dir", folder)
    return folder


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the scripts with flags of their own (bench.py, the accelerator check): a usage error
    is one line on stderr and exit code 2, not argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")

    def writable(self, flag: str, path: str | os.PathLike) -> pathlib.Path:
        """`path`, an output written at the end of a long measurement, checked now (its folder made and
        written to), so that a bad path costs one line at once instead of the measurement."""
        path = pathlib.Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / f".{path.name}.check", "w"):
                pass
            os.remove(path.parent / f".{path.name}.check")
        except OSError as e:
            file = next((p for p in path.parents if p.is_file()), None)  # mkdir's "File exists" says little
            why = f"'{file}' is a file" if file else e.strerror or str(e)
            self.error(f"{flag} got '{path}', which cannot be written: {why}")
        return path


def command(script: str, *args: object) -> str:
    """A command line to run `script` (a script beside this module) with `args`, that works when pasted
    into the shell that ran this process: this process's interpreter (a venv's python, which `python`
    may not be) and paths that resolve from the current folder (relative when below it)."""

    def short(path: str | os.PathLike) -> str:
        path = os.path.abspath(path)
        relative = os.path.relpath(path)
        return relative if not relative.startswith("..") else path

    script_path = pathlib.Path(__file__).resolve().parent / script
    return shlex.join([short(sys.executable), short(script_path), *map(str, args)])


_UNDO_ON_STOP: list[Callable[[], Any]] = []  # what a stop by a signal removes (partial outputs)


@contextlib.contextmanager
def undone_on_stop(undo: Callable[[], Any]) -> Iterator[None]:
    """While the block runs, a stop by a signal first runs `undo` (remove a partial file or folder)."""
    _UNDO_ON_STOP.append(undo)
    try:
        yield
    finally:
        _UNDO_ON_STOP.remove(undo)


def _stop_at_once(line: str) -> Callable:
    """A signal handler that ends the process at once: what `undone_on_stop` registered is undone,
    `line` goes to stdout, exit code 0. It does not raise into the interrupted code: there the
    exception could land in a callback that ignores it (JAX's garbage-collection hook), and an
    interpreter shutting down while XLA compiles in its threads could crash."""

    def stop(signum, frame):
        for undo in reversed(_UNDO_ON_STOP):
            with contextlib.suppress(Exception):
                undo()
        with contextlib.suppress(Exception):  # a flush interrupted by the signal cannot be re-entered
            sys.stdout.flush()
        os.write(1, f"{line}\n".encode())
        os._exit(0)

    return stop


def stop_at_once_on_signal() -> None:
    """For a script's first lines, while its libraries load and nothing is written yet: a SIGINT or
    SIGTERM ends the process at once, in one line, with exit code 0. main_guard takes over."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_at_once("stopped by a signal while starting; nothing was written"))


def allocation_failure(e: BaseException) -> str | None:
    """What failed, when `e` (or an exception it came from) is running out of memory: numpy's
    MemoryError or XLA's RESOURCE_EXHAUSTED ("allocating 15.62 GiB"); None for any other error."""
    seen = 0
    while e is not None and seen < 8:
        text = str(e)
        if isinstance(e, MemoryError):
            size = re.search(r"allocate (\d[\d.]* [KMGTPE]?i?B)", text)  # numpy: "Unable to allocate 7.62 GiB ..."
            return f"allocating {size.group(1)}" if size else "a memory allocation failed"
        if type(e).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in text:
            if "memory" in text.lower():
                size = re.search(r"allocat\w*\s+(\d+)\s*bytes", text)
                return f"allocating {int(size.group(1)) / 2**30:.2f} GiB" if size else "a device allocation failed"
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


@contextlib.contextmanager
def memory_bound_by(key: str, value: Any, also: str = "") -> Iterator[None]:
    """Running out of memory inside becomes a RunFailure in one line: the size that failed and
    the config key to lower (`also`: what else helps)."""
    try:
        yield
    except Exception as e:
        failed = allocation_failure(e)
        if failed is None:
            raise
        raise RunFailure(f"out of memory {failed} with {key} {value}; lower --{key}{also}") from None


def _end(line: str, code: int, stream) -> None:
    """Print the one line and exit with `code`, quietly: nothing that other threads, abandoned
    reads or a second signal would print at exit."""
    with contextlib.suppress(ValueError):  # not the main thread
        for sig in STOP_SIGNALS:  # a second Ctrl-C while the process winds down ends it at once
            signal.signal(sig, lambda signum, frame: os._exit(code))
    print(line, file=stream, flush=True)
    # No echoes at exit: from writer threads, and orbax's abandoned reads ("coroutine ... was never awaited").
    threading.excepthook = sys.unraisablehook = lambda *args: None
    warnings.simplefilter("ignore")
    raise SystemExit(code) from None


def main_guard(fn: Callable[[], Any], stopped: str = "stopped by a signal") -> Any:
    """Run `fn()` as a script's body, so that it ends in one line, never a traceback: a UserError
    on stderr with exit code 2, a RunFailure with exit code 1; a SIGINT or SIGTERM (Ctrl-C) undoes the
    partial outputs registered with `undone_on_stop`, prints `stopped` on stdout and exits with 0 at
    once (the training loop installs its own handler, which stops at a step boundary); a closed stdout
    (``python train.py --help | head``) ends quietly."""
    with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop_at_once(stopped))
    try:
        return fn()
    except KeyboardInterrupt:  # raised by code that restored Python's default handler
        _end(stopped, 0, sys.stdout)
    except UserError as e:
        _end(f"error: {e}", 2, sys.stderr)
    except RunFailure as e:
        _end(f"error: {e}", 1, sys.stderr)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(1) from None
