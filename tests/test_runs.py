"""Experiments stay apart and survive faults: run identity, resume checks, wandb sweeps and ids,
one writer per folder, damaged checkpoints, full disks, non-finite values, early failures."""

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

import config as cfg_lib
import eval as eval_lib
import runs
import train
from errors import ConfigError


def named(config):
    return runs.run_dir(runs.name_run(config))


def script(name, *argv, timeout=300):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, str(ROOT / name), *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def one_line_exit_2(out, *words):
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    for word in words:
        assert word in out.stderr, out.stderr


def test_runs_differing_only_in_beta_get_two_folders_and_output_keys_do_not_matter(tiny):
    assert named(tiny(beta=1.0)) != named(tiny(beta=2.0))
    assert named(tiny(seed=1)) != named(tiny(seed=2))  # a given seed is part of the experiment
    assert named(tiny(save_model_every=3, max_steps=5, wandb_mode="offline")) == named(tiny())
    assert named(tiny(run_name="mine")).name == "mine"


def test_resume_with_a_changed_result_key_is_refused_and_an_output_key_may_change(tiny, tmp_path):
    first = train.train(tiny(max_steps=2, run_name="run"))
    out = script("train.py", *tiny_args(tmp_path, max_steps=3, run_name="run", dec_stddev=0.5))
    one_line_exit_2(out, "dec_stddev 1.0 -> 0.5", str(first.exp_dir))
    again = train.train(tiny(max_steps=3, run_name="run", save_model_every=1))
    assert again.exp_dir == first.exp_dir and sorted(again.losses) == [3]


def test_rerunning_without_a_seed_resumes_the_run_and_its_seed(tiny):
    a = train.train(tiny("--seed", "null", max_steps=2))
    saved = cfg_lib.load_yaml(str(a.exp_dir / "config.yml"))["seed"]
    b = train.train(tiny("--seed", "None", max_steps=3))
    assert b.exp_dir == a.exp_dir and sorted(b.losses) == [3]
    assert cfg_lib.load_yaml(str(b.exp_dir / "config.yml"))["seed"] == saved


def test_wandb_sweep_argument_lists_parse():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    values = {
        "free_nats": None,
        "beta": [1.0, 2.0, 0.5],
        "kl_grad_post_perc": 0.8,
        "cell_mean_only": True,
        "batch_size": 16.0,
        "lr": 1e-4,
        "use_obs": "TTF",
        "seed": None,
    }
    formats = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    for form in ("args", "args_no_equals"):
        c = cfg_lib.parse(formats[form])
        assert (c.free_nats, c.beta, c.kl_grad_post_perc, c.cell_mean_only) == (None, [1.0, 2.0, 0.5], 0.8, True)
        assert c.batch_size == 16 and isinstance(c.batch_size, int) and c.lr == 1e-4 and c.seed is None
    with pytest.raises(ConfigError, match="key 'batch_size' got 16.5"):
        cfg_lib.parse(["--batch_size=16.5"])


def test_a_resumed_run_continues_its_wandb_run(tiny, monkeypatch):
    import wandb

    ids = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: ids.append(kw["id"]) or real_init(**{**kw, "mode": "disabled"}))
    a = train.train(tiny(max_steps=1))
    train.train(tiny(max_steps=2))
    assert len(ids) == 2 and ids[0] == ids[1] == (a.exp_dir / "wandb_id").read_text()


def test_a_second_writer_exits_2_naming_the_holder(tiny, tmp_path):
    folder = named(tiny())
    with runs.RunLock(folder):
        out = script("train.py", *tiny_args(tmp_path, max_steps=2))
    one_line_exit_2(out, "is in use by PID", str(os.getpid()))
    train.train(tiny(max_steps=1))  # released: a lock of a process that ended never blocks


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
        while proc.poll() is None or evaluations < 3:
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
    _, params, step = runs.load_params(runs.RunFolder(named(c)), c)
    assert step == 2 and all(np.all(np.isfinite(np.asarray(x))) for x in jax_leaves(params))


def test_a_checkpoint_the_disk_cannot_hold_is_refused_before_writing(tiny, monkeypatch):
    c = tiny(max_steps=4, save_model_every=2)
    real = runs.shutil.disk_usage
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(runs.RunError, match=r"cannot write checkpoint 2 .* MiB free; free some space"):
        train.train(c)
    assert not (named(c) / "checkpoints" / "2").exists()


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_non_finite_loss_names_the_step_and_that_no_checkpoint_is_kept(tiny):
    with pytest.raises(train.TrainingError, match="non-finite loss .* at step 1; no checkpoint was written"):
        train.train(tiny(max_steps=3, dec_stddev=1e-30))


def test_failing_data_source_leaves_no_run_folder(tmp_path):
    out = script(
        "train.py", *tiny_args(tmp_path, dataset="minerl", channels=3, data_source="paper", max_steps=1), timeout=120
    )
    one_line_exit_2(out, "minerl_navigate", "--data_source generated")
    assert not (tmp_path / "logs").exists()


def test_help_piped_into_head_ends_quietly():
    out = subprocess.run(
        f"{sys.executable} {ROOT / 'train.py'} --help | head -3", shell=True, capture_output=True, text=True, cwd=ROOT
    )
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_the_example_sweep_file_builds_commands_that_parse():
    import itertools

    import yaml
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep = yaml.safe_load((ROOT / "configs" / "sweep_mmnist.yaml").read_text())
    assert sweep["command"][:2] == [".venv/bin/python", "${program}"] and sweep["command"][-1] == "${args}"
    assert sweep["metric"] == {"name": "val/neg_elbo", "goal": "minimize"}  # not weighted by the swept beta
    grid = {k: v.get("values", [v.get("value")]) for k, v in sweep["parameters"].items()}
    for combo in itertools.product(*grid.values()):
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in zip(grid, combo)}})["args"]
        c = cfg_lib.parse([*sweep["command"][2:-1], *args])
        assert (c.beta, c.free_nats) == (combo[0], combo[1])


def test_a_sweep_trial_runs_from_a_fresh_shell_into_its_own_folder_and_reruns_into_it(tmp_path):
    """The example sweep's command as the agent runs it (the venv's interpreter, no activated venv,
    --key=value arguments): the trial trains in logs/<dataset>/sweep-<id>/<its values>/, and the
    same trial run again continues that folder."""
    import yaml

    sweep = yaml.safe_load((ROOT / "configs" / "sweep_mmnist.yaml").read_text())
    python = ROOT / sweep["command"][0]
    if not python.exists():
        pytest.skip(f"{python} is made by `make setup`")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_MODE": "disabled", "WANDB_SWEEP_ID": "abc123"}
    # and the suite's compile settings and cache, and huge pages from the start (not by a restart)
    env |= {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_")) or k == "GLIBC_TUNABLES"}
    files = ["--datadir", str(tmp_path / "data"), "--logdir", str(tmp_path / "logs"), "--progress", "false"]

    def trial(steps: int) -> str:
        args = [str(python), "train.py", "--config", "configs/tiny.yml", *files, "--beta=0.5", f"--max_steps={steps}"]
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    first = trial(2)
    folder = tmp_path / "logs" / "mmnist" / "sweep-abc123" / "beta0.5"
    assert (folder / "checkpoints" / "2").is_dir(), first
    again = trial(3)
    assert f"resumed from {folder / 'checkpoints' / '2'}" in again and (folder / "checkpoints" / "3").is_dir()
