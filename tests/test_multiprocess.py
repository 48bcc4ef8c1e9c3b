"""Multi-process training: train.py as two CPU processes joined by jax.distributed trains like one
process with two devices, stops together on SIGTERM and resumes bit-exactly, and writes one
checkpoint that a single process evaluates. The environment checks of distributed.initialize and
the loader's sharding need no second process.

The `multiprocess` tests share three two-process runs of the tiny config (one CPU device per
process, gloo collectives); deselect them with `-m "not multiprocess"`.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_args, xla_flags

import checkpoints
import config as cfg_lib
import data
import distributed
import errors
import eval as eval_lib
import generators
import runs
import train

# --- distributed.initialize: environment checks, cluster detection ---------------------------


GOOD = {"JAX_COORDINATOR_ADDRESS": "host0:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}


def test_explicit_variables_give_initialize_arguments():
    assert distributed.explicit_params({}) is None
    assert distributed.explicit_params(GOOD) == {
        "coordinator_address": "host0:1234",
        "num_processes": 2,
        "process_id": 1,
    }


@pytest.mark.parametrize(
    "env,named",
    [
        ({"JAX_COORDINATOR_ADDRESS": "host0:1234"}, "JAX_NUM_PROCESSES is not set"),
        ({**GOOD, "JAX_PROCESS_ID": ""}, "JAX_PROCESS_ID is not set"),
        ({**GOOD, "JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES got 'two'"),
        ({**GOOD, "JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES got 0"),
        ({**GOOD, "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID got 2; expected an integer from 0 to 1"),
        ({**GOOD, "JAX_COORDINATOR_ADDRESS": "host0"}, "JAX_COORDINATOR_ADDRESS got 'host0'"),
    ],
)
def test_wrong_variables_raise_one_line_naming_the_variable(env, named):
    with pytest.raises(errors.ConfigError, match=named) as e:
        distributed.initialize(env)
    assert "\n" not in str(e.value)


def test_single_process_without_cluster_does_not_initialize():
    assert not distributed.cluster_detected()
    distributed.initialize({})
    assert not jax.distributed.is_initialized() and distributed.is_main()
    assert distributed.from_main(3) == 3 and distributed.any_process(True) and not distributed.any_process(False)


@pytest.mark.parametrize("tasks,detected", [("1", False), ("2", True)])
def test_slurm_job_is_a_cluster_only_with_several_tasks(monkeypatch, tasks, detected):
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for name, value in {**slurm, "SLURM_NTASKS": tasks}.items():
        monkeypatch.setenv(name, value)
    assert distributed.cluster_detected() == detected


# --- the data: each process reads its own rows of every global batch ---------------------------


def test_processes_read_disjoint_rows_of_each_global_batch(tiny):
    c = tiny(num_epochs=1)
    whole = data.make_train_loader(c, 0, 1)
    halves = [data.make_train_loader(c, p, 2) for p in (0, 1)]
    for _ in range(3):
        batch = next(whole)
        parts = [next(h) for h in halves]
        assert all(len(p) == c.batch_size // 2 for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), batch)  # process p holds rows [p*b, (p+1)*b)


# --- train.py as two processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(argv: list[str], log_dir, script: str = "train.py") -> list[subprocess.Popen]:
    """train.py (or `script`) as a job of two processes with one CPU device each."""
    address = f"localhost:{free_port()}"
    procs = []
    for p in (0, 1):
        env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), WANDB_MODE="disabled")
        env.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(p))
        log = open(log_dir / f"log_{len(list(log_dir.glob('log_*')))}_{p}.txt", "w")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, str(ROOT / script), *argv], env=env, stdout=log, stderr=log))
    return procs


def finish(procs, log_dir, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            p.kill()
            p.wait()
    logs = "\n".join(f.read_text()[-1500:] for f in sorted(log_dir.glob("log_*")))
    assert all(p.returncode == 0 for p in procs), f"return codes {[p.returncode for p in procs]}:\n{logs}"


def final_params(folder):
    config = cfg_lib.apply(cfg_lib.Config(), cfg_lib.load_yaml(str(folder / "config.yml")), "saved")
    _, params, step = checkpoints.load_params(runs.RunFolder(folder), config)
    return step, {jax.tree_util.keystr(k): np.asarray(x) for k, x in jax.tree_util.tree_leaves_with_path(params)}


# No summaries and no checkpoints but the last: the runs compile the train step only.
QUIET = dict(save_model_every=100000, save_named_model_every=100000, save_scalars_every=100000, save_gifs=False)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """'split': two processes stopped by SIGTERM at step S, then resumed to S + 3; 'whole': two
    processes from 0 to S + 3 uninterrupted. Returns (tmp, S + 3)."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    args = tiny_args(tmp, **QUIET)
    generators.ensure_generated(cfg_lib.parse(args), "train", progress=False)  # before the processes race to it
    generators.ensure_generated(cfg_lib.parse(args), "test", progress=False)
    split = launch([*args, "--run_name", "split", "--max_steps", "100000", "--num_epochs", "1000"], tmp)
    log0 = tmp / "log_0_0.txt"
    deadline = time.monotonic() + 180
    while "training from step" not in log0.read_text() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in split), log0.read_text()[-3000:]
        time.sleep(0.5)
    time.sleep(5)  # a few steps
    for p in split:
        p.send_signal(signal.SIGTERM)
    finish(split, tmp)
    stopped, _ = final_params(tmp / "logs" / "mmnist" / "split")
    total = stopped + 3
    resumed = launch([*args, "--run_name", "split", "--max_steps", str(total), "--num_epochs", "1000"], tmp)
    whole = launch([*args, "--run_name", "whole", "--max_steps", str(total), "--num_epochs", "1000"], tmp)
    finish(resumed + whole, tmp)
    return tmp, total


@pytest.mark.multiprocess
def test_two_processes_train_like_one_process_with_two_devices(two_process_runs, tiny):
    tmp, total = two_process_runs
    step, two = final_params(tmp / "logs" / "mmnist" / "whole")
    assert step == total and jax.device_count() == 2  # conftest: two simulated devices in this process
    one = train.train(tiny(run_name="one", max_steps=total, num_epochs=1000, **QUIET))
    one = {jax.tree_util.keystr(k): np.asarray(x) for k, x in jax.tree_util.tree_leaves_with_path(one.params)}
    diff = max(float(np.max(np.abs(two[k] - one[k])) / (np.max(np.abs(one[k])) + 1e-30)) for k in one)
    assert diff <= 1e-6, f"max relative parameter difference {diff:.3g}"


@pytest.mark.multiprocess
def test_sigterm_stops_both_processes_and_the_resumed_run_equals_an_uninterrupted_one(two_process_runs):
    tmp, total = two_process_runs
    log = (tmp / "log_0_0.txt").read_text()
    assert "stopped by a signal at step" in log, log[-2000:]
    (step_a, resumed), (step_b, whole) = (final_params(tmp / "logs" / "mmnist" / r) for r in ("split", "whole"))
    assert step_a == step_b == total
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)  # bit-exact on CPU
    data_dir = tmp / "logs" / "mmnist" / "split" / "checkpoints" / str(total) / "data"
    data_files = sorted(p.name for p in data_dir.glob("*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]  # each process's loader position


@pytest.mark.multiprocess
def test_one_process_evaluates_the_two_process_checkpoint(two_process_runs):
    tmp, total = two_process_runs
    folder = tmp / "logs" / "mmnist" / "whole"
    config, run, step = runs.load_run_config(["--logdir", str(folder), "--progress", "false"])
    out = eval_lib.evaluate(config, run, step)
    assert out.name.startswith(f"eval_step{total}_") and (out / "ssim_mean.npz").is_file()


@pytest.mark.multiprocess
def test_two_processes_evaluate_like_one(two_process_runs):
    """eval.py as two processes (each rolling out its half of every batch, process 0 writing) gives
    the metrics of one process evaluating alone."""
    import json

    tmp, total = two_process_runs
    folder = tmp / "logs" / "mmnist" / "whole"
    args = ["--logdir", str(folder), "--progress", "false", "--num_examples", "3", "--num_samples", "2"]
    config, run, step = runs.load_run_config(args)
    one = json.loads((eval_lib.evaluate(config, run, step) / "metrics.json").read_text())
    before = set(folder.glob("eval_step*"))
    logs = tmp / "eval_logs"
    logs.mkdir()
    finish(launch(args, logs, script="eval.py"), logs)
    (two_dir,) = set(folder.glob("eval_step*")) - before
    two = json.loads((two_dir / "metrics.json").read_text())
    assert two["num_examples"] == one["num_examples"] == 3
    for key in ("ssim_mean", "psnr_mean", "ssim_last_frame", "psnr_last_frame"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
