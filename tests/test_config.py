"""Config: priorities (defaults < YAML < CLI < wandb), types, and every validation error."""

import subprocess
import sys

import pytest
from conftest import ROOT

import config as cfg_lib
from errors import ConfigError


def test_yaml_overrides_defaults_and_cli_overrides_yaml():
    c = cfg_lib.parse(["--config", str(ROOT / "configs/minerl.yml")])
    assert (c.cell_deter_size, c.lr, c.levels) == (800, 1e-4, 3)
    c = cfg_lib.parse(
        ["--config", str(ROOT / "configs/minerl.yml"), "--lr", "2e-4", "--levels=2", "--open_loop_ctx", "6"]
    )
    assert (c.lr, c.levels) == (2e-4, 2)


def test_cli_accepts_both_forms_and_yaml_values():
    c = cfg_lib.parse(["--beta=[1, 2, 3]", "--use_obs", "TTF", "--free_nats", "null", "--cell_mean_only"])
    assert c.beta == [1.0, 2.0, 3.0] and c.use_obs == "TTF" and c.free_nats is None and c.cell_mean_only
    assert c.use_obs_per_level() == [True, True, False]
    assert cfg_lib.parse(["--beta", "0.5"]).beta_per_level() == [0.5, 0.5, 0.5]


def test_wandb_config_overrides_cli():
    c = cfg_lib.parse(["--lr", "1e-3"])
    c = cfg_lib.with_wandb(c, {"lr": 5e-4, "batch_size": 10, "_wandb": {}})
    assert (c.lr, c.batch_size) == (5e-4, 10)


def test_paper_configs_hold_paper_values():
    mm, mz, mc = (cfg_lib.parse(["--config", str(ROOT / f"configs/{n}.yml")]) for n in ("mmnist", "mazes", "minerl"))
    assert (mm.dec_stddev, mm.eval_seq_len, mm.channels, mm.num_epochs) == (1.0, 1000, 1, 300)
    assert (mz.dec_stddev, mz.eval_seq_len, mz.channels, mz.num_epochs) == (0.1, 300, 3, 100)
    assert (mc.dec_stddev, mc.eval_seq_len, mc.cell_stoch_size, mc.cell_embed_size, mc.lr) == (0.4, 500, 100, 800, 1e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lrr", "1"], "unknown key '--lrr' (did you mean 'lr'?)"),
        (["--config", "missing.yml"], "config file 'missing.yml' does not exist"),
        (["--levels", "two"], "key 'levels' got 'two' (str); expected int"),
        (["--cell_mean_only", "3"], "key 'cell_mean_only' got 3"),
        (["--open_loop_ctx", "30"], "key 'open_loop_ctx' got 30; must be a positive multiple of"),
        (["--eval_seq_len", "36"], "key 'eval_seq_len' got 36; must be greater than open_loop_ctx = 36"),
        (["--seq_len", "0"], "key 'seq_len' got 0; must be >= 1"),
        (["--eval_videos", "-1"], "key 'eval_videos' got -1; must be >= 0"),
        (["--use_obs", "TT"], "key 'use_obs' got 'TT'; expected 3 letters T or F"),
        (["--dataset", "kth"], "key 'dataset' got 'kth'; valid: mmnist, mazes, minerl"),
    ],
)
def test_validation_errors_name_key_and_value(argv, message):
    with pytest.raises(ConfigError, match=None) as e:
        cfg_lib.parse(argv)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("levels: 3\nlevls: 2\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad.yml': unknown key 'levls' \(did you mean 'levels'\?\)"):
        cfg_lib.parse(["--config", str(path)])


def test_batch_not_divisible_by_devices():
    with pytest.raises(ConfigError, match="key 'batch_size' got 5; must be divisible by the number of devices"):
        cfg_lib.parse(["--batch_size", "5"], num_devices=2)


def test_wandb_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="wandb config: unknown key 'lrate'"):
        cfg_lib.with_wandb(cfg_lib.Config(), {"lrate": 1.0})


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train.py", "--open_loop_ctx", "30"], "open_loop_ctx"),
        (["train.py", "--levls", "2"], "did you mean 'levels'"),
        (["eval.py", "--logdir", "no/such/run"], "does not exist"),
        (["eval.py", "--open_loop_ctx", "30"], "key 'logdir' is required"),
    ],
)
def test_scripts_exit_2_with_one_line_error(argv, words):
    out = subprocess.run(
        [sys.executable, str(ROOT / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and words in out.stderr, out.stderr


def test_help_lists_every_key_with_doc():
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0
    for name in cfg_lib.FIELDS:
        assert f"--{name}" in out.stdout
    assert "clock factor k" in out.stdout and "[default: 6]" in out.stdout


def test_seed_is_drawn_once_and_run_name_excludes_it():
    c = cfg_lib.resolve_seed(cfg_lib.Config())
    assert isinstance(c.seed, int)
    assert c.run_name_prefix() == cfg_lib.Config(seed=1).run_name_prefix()
