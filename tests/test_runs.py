"""Experiments stay apart: run identity, resume checks, wandb sweeps and ids, one writer per
folder, evaluation folders that are complete or marked incomplete, early failures."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_args

import config as cfg_lib
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


def test_evaluation_folders_are_complete_or_marked_and_same_second_ones_get_their_own(tmp_path, monkeypatch):
    """An evaluation is written as incomplete_eval_step<N>_<time> and renamed when its block ends; a
    second one in the same second takes <name>-2; one that fails leaves no folder."""
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-120000")
    run = runs.RunFolder(tmp_path / "run")
    with runs.EvalFolder.new(run, 5) as (a, a_final), runs.EvalFolder.new(run, 5) as (b, b_final):
        assert [a.path.name, b.path.name] == [f"incomplete_eval_step5_20260101-120000{k}" for k in ("", "-2")]
        assert runs.EvalFolder.is_incomplete(a.path) and not a_final.path.exists() and run.evaluations() == []
        a.summary.write_text("{}")
    with pytest.raises(RuntimeError), runs.EvalFolder.new(run, 6):
        raise RuntimeError("the rollout failed")
    assert sorted(p.name for p in run.path.iterdir()) == [a_final.path.name, b_final.path.name]
    assert run.evaluations() == [a_final.path, b_final.path] and (a_final.summary).read_text() == "{}"
    assert runs.EvalFolder.is_one(b_final.path) and not runs.EvalFolder.is_one(run.path)
