"""Faults a user meets, each run as the command they would type, and how it must end: eval on more
devices than training had, Ctrl-C while starting, out of memory, a seed out of range, a generation
or an evaluation killed with kill -9."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, tiny_args, xla_flags
from test_runs import one_line_exit_2

EVAL_KEYS = {"num_examples": 3, "eval_batch_size": 3, "eval_seq_len": 14}  # open_loop_ctx 8 + 6 predicted frames


def devices(n):
    return {"XLA_FLAGS": xla_flags(n)}


def env(**extra):
    return {**os.environ, "WANDB_MODE": "disabled", **extra}


def command(name, *argv, prefix=()):
    """The argv of `python <name> ...` (behind `prefix`, e.g. a shell that sets a ulimit)."""
    return [*prefix, sys.executable, str(ROOT / name), *argv]


def script(name, *argv, prefix=(), timeout=300, **extra):
    """Run `python <name> argv...` in the repository root; `extra`: environment variables."""
    cmd = command(name, *argv, prefix=prefix)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env(**extra), timeout=timeout)


def no_traceback(out):
    assert "Traceback" not in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-4000:]


def eval_folders(run):
    return sorted(p.name for p in run.iterdir() if p.is_dir() and "eval_step" in p.name)


def run_folders(logdir):
    """Experiment folders (holding a config.yml) under logdir."""
    return sorted(p.parent for p in logdir.glob("*/*/config.yml"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained for 2 steps on ONE device with batch_size 3 (not divisible by 2), small
    eval keys; returns its folder. Tests copy it before writing into it."""
    tmp = tmp_path_factory.mktemp("faults")
    args = tiny_args(tmp, max_steps=2, save_model_every=2, batch_size=3, save_gifs=False, **EVAL_KEYS)
    out = script("train.py", *args, **devices(1))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    [run] = run_folders(tmp / "logs")
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run that this test may write evaluations into."""
    return shutil.copytree(trained, tmp_path / trained.name)


def evaluate(run, *argv, **extra):
    return script("eval.py", "--logdir", str(run), "--progress", "false", *argv, **extra)


def completed(run, out, num_examples):
    """The evaluation ended with exit 0 and wrote one complete eval_step folder for num_examples."""
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    no_traceback(out)
    [name] = [n for n in eval_folders(run) if n.startswith("eval_step")]
    assert (run / name / "metrics.json").is_file() and name in out.stdout, out.stdout
    assert json.loads((run / name / "metrics.json").read_text())["num_examples"] == num_examples
    return name


def test_eval_on_two_devices_of_a_run_trained_on_one_with_an_odd_batch(run_copy):
    """The run's training batch_size (3) does not split over 2 devices, but eval does not use it:
    eval pads its own batches, also an odd number of examples and an odd last batch."""
    first = evaluate(run_copy, **devices(2))
    assert "divisible by the number of devices" not in first.stderr, first.stderr
    completed(run_copy, first, 3)
    shutil.rmtree(run_copy / eval_folders(run_copy)[0])
    second = evaluate(run_copy, "--eval_batch_size", "2", **devices(2))  # batches of 2 and 1
    completed(run_copy, second, 3)


def wait_until(ready, proc, what, timeout=120):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.01)


def jax_loading(proc):
    """The process maps jaxlib: train.py imports JAX after installing its start-up signal handler."""
    with open(f"/proc/{proc.pid}/maps") as f:
        return "jaxlib" in f.read()


@pytest.mark.parametrize("moment", ["importing jax", "after 2.5 s", "at the first line"])
def test_ctrl_c_while_starting_ends_in_one_line(tmp_path, moment):
    """Ctrl-C at three moments of train.py's start-up (each in a fresh process): while JAX loads,
    while the model is built, after the first printed line but before the first step: exit 0,
    one 'stopped by a signal ...' line on stdout and no traceback."""
    cmd = command("train.py", *tiny_args(tmp_path))
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = ""
    try:
        if moment == "importing jax":
            wait_until(lambda: jax_loading(proc), proc, "import of jaxlib")
        elif moment == "after 2.5 s":
            time.sleep(2.5)
        else:
            first = proc.stdout.readline()
            assert first, proc.communicate()
            assert "training from step" not in first, first
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = subprocess.CompletedProcess(cmd, proc.returncode, first + stdout, stderr)
    assert out.returncode in (0, 130), (out.returncode, out.stdout, out.stderr)
    no_traceback(out)
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("stopped by a signal"), out.stdout


# A cap on the address space, as `ulimit -v` sets it: an allocation beyond it is refused at once, as
# a GPU refuses one beyond its memory, where this machine's kernel would grant it and fill the RAM.
# The tiny model's evaluation peaks at about 2 GiB of address space.
ULIMIT = ["bash", "-c", 'ulimit -v $((8 * 1024 * 1024)) && exec "$@"', "bash"]


def test_out_of_memory_in_training_names_batch_size(tmp_path):
    """batch_size 4096 needs more than the 8 GiB allowed (11 GiB a device): one stderr line naming --batch_size, no
    traceback, exit non-zero."""
    argv = tiny_args(tmp_path, batch_size=4096, num_epochs=1000, max_steps=1)
    out = script("train.py", *argv, prefix=ULIMIT)
    assert out.returncode > 0, (out.returncode, out.stdout[-2000:], out.stderr[-4000:])  # failed, not killed
    no_traceback(out)
    assert out.stderr.strip().count("\n") == 0, out.stderr[-4000:]
    assert "out of memory" in out.stderr and "--batch_size" in out.stderr, out.stderr


def test_eval_with_a_huge_eval_batch_size_runs_or_names_it(run_copy):
    """eval_batch_size 2000 for 3 examples: eval batches no more than the examples, so it works
    under the same cap; were it to pad to 2000 it must say so in one line naming --eval_batch_size."""
    out = evaluate(run_copy, "--eval_batch_size", "2000", prefix=ULIMIT)
    if out.returncode == 0:
        completed(run_copy, out, 3)
    else:
        no_traceback(out)
        assert out.stderr.strip().count("\n") == 0 and "--eval_batch_size" in out.stderr, out.stderr[-4000:]


@pytest.mark.parametrize("seed", ["-1", str(2**40)])
def test_seed_out_of_range_is_refused_before_making_a_run_folder(tmp_path, seed):
    """A seed outside [0, 2**32): one line naming the key and the range, exit 2, no run folder."""
    out = script("train.py", *tiny_args(tmp_path), "--seed", seed)
    one_line_exit_2(out, "'seed'", seed, "[0, 2**32)")
    assert run_folders(tmp_path / "logs") == []


def test_generation_removes_a_killed_generations_temporary_file(tmp_path):
    """A generation killed with kill -9 leaves <file>.npy.tmp-<pid>: the next one removes it, says
    so in one line naming it, and generates both splits."""
    folder = tmp_path / "data" / "generated" / "mmnist"
    folder.mkdir(parents=True)
    stale = folder / "train-n8-v1.npy.tmp-99999"
    stale.write_bytes(b"\0" * 4096)
    out = script("data.py", "prepare", *tiny_args(tmp_path))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    no_traceback(out)
    assert not stale.exists()
    assert len([line for line in out.stdout.splitlines() if str(stale) in line]) == 1, out.stdout
    assert sorted(p.name for p in folder.glob("*.npy")) == ["test-n4-v1.npy", "train-n8-v1.npy"]
    assert list(folder.glob("*.tmp-*")) == []


def test_an_evaluation_killed_mid_write_stays_marked_incomplete(run_copy):
    """kill -9 while eval.py writes: its folder keeps the incomplete_ prefix, so no eval_step*
    folder is ever partial; the next evaluation writes a complete eval_step* folder."""
    cmd = command("eval.py", "--logdir", str(run_copy), "--progress", "false")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: eval_folders(run_copy), proc, "evaluation folder")
    finally:
        proc.kill()
        proc.communicate()
    [killed] = eval_folders(run_copy)
    assert killed.startswith("incomplete_eval_step"), killed
    name = completed(run_copy, evaluate(run_copy), 3)
    assert eval_folders(run_copy) == sorted([killed, name])
