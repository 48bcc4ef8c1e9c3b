"""Checkpoints survive faults: a damaged newest checkpoint falls back to the previous one in one
line, a full disk keeps the previous one, and orbax's own reports of a failed call never reach the
terminal (the held stderr, the event loops that end their reads)."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, tiny_args
from test_runs import named, one_line_exit_2, script

import checkpoints
import config as cfg_lib
import eval as eval_lib
import runs
import train


def test_eval_reads_a_run_that_saves_every_step(tiny, tmp_path):
    args = tiny_args(tmp_path, max_steps=40, save_model_every=1, save_scalars_every=1000, save_gifs_every=1000)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    folder = named(tiny())
    evaluations = 0
    try:
        while not (folder / "checkpoints").is_dir() or not runs.RunFolder(folder).complete_steps():
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        while evaluations < 3:  # while it trains and saves (40 steps outlast three evaluations)
            config, run, step = runs.load_run_config(["--logdir", str(folder), "--num_examples", "1"])
            eval_lib.evaluate(config, run, step)
            evaluations += 1
    finally:
        proc.kill()
        out = proc.communicate()[0]
    assert proc.returncode in (0, -signal.SIGKILL), out
    assert evaluations >= 3


def truncate_the_array_files(step_dir):
    """Cut every array data file of a checkpoint (orbax packs arrays into a few OCDBT files)."""
    files = [p for p in (step_dir / "state").glob("ocdbt.process_*/d/*") if p.stat().st_size > 1000]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny, tmp_path, capsys):
    full = train.train(tiny(max_steps=6, save_model_every=2, run_name="full"))
    first = train.train(tiny(max_steps=6, save_model_every=2, run_name="split"))
    truncate_the_array_files(first.exp_dir / "checkpoints" / "6")
    out = script("eval.py", "--logdir", str(first.exp_dir / "checkpoints" / "6"), "--progress", "false")
    one_line_exit_2(out, "checkpoint", "does not restore")
    resumed = train.train(tiny(max_steps=6, save_model_every=2, run_name="split"))
    assert "checkpoint 6 does not restore" in capsys.readouterr().err
    assert sorted(resumed.losses) == [5, 6] and resumed.losses == {s: full.losses[s] for s in (5, 6)}
    assert list((first.exp_dir / "damaged_checkpoints").iterdir())


def without_compilation_cache() -> dict:
    """The environment of a user's first run: no compilation cache, so every step compiles and the
    timing of orbax's abandoned reads against the rest of the program is as users see it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    return env | {"WANDB_MODE": "disabled", "JAX_ENABLE_COMPILATION_CACHE": "false"}


RESTORE_CASES = {  # command (after python), exit code, the one stderr line's words
    "eval of the damaged checkpoint": (["eval.py", "--logdir", "{run}/checkpoints/6"], 2, ["error: checkpoint"]),
    "eval falling back": (["eval.py", "--logdir", "{run}", "--num_examples", "1", "--no_save_grid", "true"], 0, []),
    "training resume falling back": (["train.py", "--config", "configs/tiny.yml", "--max_steps", "4"], 0, ["moved"]),
}


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """A tiny run with checkpoints 4 and 6 (its folder, and its data folder)."""
    tmp = tmp_path_factory.mktemp("six")
    config = cfg_lib.parse(tiny_args(tmp, max_steps=6, save_model_every=2, run_name="r"))
    return train.train(config).exp_dir, config.datadir


@pytest.mark.parametrize("case", RESTORE_CASES)
def test_damaged_checkpoint_cases_print_exactly_one_line_in_fresh_processes(case, six_steps, tmp_path):
    """Each case, twice in fresh processes without a compilation cache: stderr is exactly one
    line, naming the checkpoint and tensorstore's reason (OUT_OF_RANGE: ... byte range ... not
    valid); never the thousands of lines that orbax's abandoned reads printed when collected."""
    source, datadir = six_steps
    argv, code, words = RESTORE_CASES[case]
    for trial in range(2):
        run = tmp_path / f"trial{trial}" / "logs" / source.parent.name / source.name
        shutil.copytree(source, run)
        truncate_the_array_files(run / "checkpoints" / "6")
        args = [a.format(run=run) for a in argv]
        if argv[0] == "train.py":
            args += ["--logdir", str(tmp_path / f"trial{trial}" / "logs"), "--datadir", datadir]
            args += ["--seed", "0", "--run_name", "r", "--save_model_every", "2", "--progress", "false"]
        out = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=without_compilation_cache()
        )
        lines = out.stderr.splitlines()
        assert out.returncode == code and len(lines) == 1, f"trial {trial}: exit {out.returncode}\n{out.stderr[-3000:]}"
        assert "checkpoint" in lines[0] and "6" in lines[0] and "does not restore" in lines[0], lines[0]
        assert "OUT_OF_RANGE" in lines[0] and "is not valid for value of size" in lines[0], lines[0]
        assert all(word in lines[0] for word in words), lines[0]


def test_a_user_error_stays_one_line_when_an_abandoned_read_is_collected_at_exit(tmp_path):
    # A failed orbax restore leaves coroutines that were never awaited; their warning came after the line.
    program = tmp_path / "fail.py"
    program.write_text(
        "import cli, errors\n"
        "async def read(): pass\n"
        "pending = []\n"
        "def fail():\n"
        "    pending.append(read())\n"
        "    raise errors.UserError('checkpoint 6 does not restore')\n"
        "cli.main_guard(fail)\n"
    )
    out = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    one_line_exit_2(out, "checkpoint 6 does not restore")


def test_a_full_disk_gives_one_line_and_keeps_the_previous_checkpoint(tiny, monkeypatch):
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / "4"))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    c = tiny(max_steps=6, save_model_every=2)
    with pytest.raises(runs.RunError) as e:
        train.train(c)
    assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
    _, params, step = checkpoints.load_params(runs.RunFolder(named(c)), c)
    assert step == 2 and all(np.all(np.isfinite(np.asarray(x))) for x in jax_leaves(params))


def test_a_checkpoint_the_disk_cannot_hold_is_refused_before_writing(tiny, monkeypatch):
    c = tiny(max_steps=4, save_model_every=2)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(runs.RunError, match=r"cannot write checkpoint 2 .* MiB free; free some space"):
        train.train(c)
    assert not (named(c) / "checkpoints" / "2").exists()


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_loading_a_run_prints_nothing_on_stderr(six_steps):
    """The Python entry point's load: no absl warning about a checkpoint metadata file (the step's
    metadata sits one folder above the arrays, where the checkpoint manager wrote it)."""
    program = (
        "import checkpoints, runs\n"
        f"config, run, step = runs.load_run_config(['--logdir', {str(six_steps[0])!r}])\n"
        "print(checkpoints.load_params(run, config)[2])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0 and out.stdout == "6\n" and out.stderr == "", out.stderr[-3000:]


HELD = r"""
import asyncio, gc, logging, os, sys, threading, time, warnings
import tensorstore as ts
import checkpoints


def abandoned_read():
    # As orbax fails a restore: the first read fails and the call ends, while another read goes on in
    # tensorstore's threads (it ends 0.3 s later); the call's event loop closes as orbax closes it.
    promise, future = ts.Promise.new()
    threading.Timer(0.3, promise.set_result, [0]).start()

    async def read():
        return await future

    async def fail():
        raise ValueError("OUT_OF_RANGE: the first read")

    async def both():
        await asyncio.gather(fail(), read())

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(both())
    finally:
        loop.close()


try:
    with checkpoints.quiet_orbax():
        print("python", file=sys.stderr)
        os.write(2, b"c++\n")
        logging.getLogger("asyncio").error("a logger")
        warnings.warn("a warning")
        thread = threading.Thread(target=lambda: print("a thread", file=sys.stderr))
        thread.start()
        thread.join()
        abandoned_read()
except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
time.sleep(1)
gc.collect()
with checkpoints.quiet_orbax():
    print("kept", file=sys.stderr)
    os.write(2, b"kept c++\n")
"""


def test_a_failed_orbax_call_prints_nothing_then_or_later_and_a_good_one_prints_all(tmp_path):
    """What a failed call writes to stderr (Python, C++, loggers, warnings, threads) is dropped, and its
    read that was still running when it failed ends before its event loop closes (else it reports
    "Event loop is closed" when it ends, after the call); what a call that succeeds writes is kept."""
    program = tmp_path / "held.py"
    program.write_text(HELD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stderr == "error: OUT_OF_RANGE: the first read\nkept\nkept c++\n", out.stderr
