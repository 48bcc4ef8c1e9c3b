"""Config: priorities (defaults < YAML < CLI < wandb), types, and every validation error."""

import dataclasses
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
        (
            ["--use_actions", "true"],
            "key 'use_actions' is true, but dataset 'mmnist' (Moving MNIST) has no actions; datasets with actions: "
            "mazes, minerl",
        ),
        (
            ["--dataset", "mazes", "--data_source", "paper", "--use_actions", "true"],
            "key 'use_actions' is true, but the paper's gqn_mazes archive has no actions; pass --data_source generated",
        ),
        (["--dataset", "mazes", "--use_actions", "--eval_actions", "none"], "key 'eval_actions' got 'none'; valid: "),
        (
            ["--eval_actions", "zero"],
            "key 'eval_actions' got 'zero', but the run has no actions (use_actions is false)",
        ),
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


def help_of(*argv) -> str:
    out = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_train_help_has_a_usage_line_and_lists_every_key_in_its_group_eval_keys_last():
    text = help_of(str(ROOT / "train.py"))
    assert text.splitlines()[0] == "usage: python train.py --config configs/<dataset>.yml [--key value ...]"
    for name in cfg_lib.FIELDS:
        assert text.count(f"  --{name} ") == 1, name
    assert "clock factor k" in text and "[default: 6]" in text and "--channels " not in text
    headings = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert [h.split(" ")[0].rstrip(":") for h in headings] == [
        "model",
        "data",
        "training",
        "evaluation",
        "output",
        "carried",
    ]
    carried = text.split(headings[-1])[1]
    assert "saved with the run for eval.py" in headings[-1]
    assert {line.split()[0] for line in carried.strip().splitlines()} == {
        f"--{name}" for name, f in cfg_lib.FIELDS.items() if f.metadata["group"] == "eval"
    }
    assert "--num_examples" in carried and "--levels" not in carried


def test_eval_help_lists_its_own_keys_and_not_the_training_keys():
    text = help_of(str(ROOT / "eval.py"))
    assert text.splitlines()[0] == "usage: python eval.py --logdir <run or checkpoint folder> [--key value ...]"
    for name in ("num_examples", "num_samples", "fvd", "protocol", "open_loop_ctx", "use_obs", "ssim_data_range"):
        assert f"  --{name} " in text, name
    for name in ("levels", "lr", "batch_size", "seed", "save_model_every", "cell_type", "num_gen_train"):
        assert f"  --{name} " not in text, name
    assert "can be overridden the same way" in text


def test_every_key_has_a_doc_and_a_group():
    for name, f in cfg_lib.FIELDS.items():
        assert f.metadata["doc"] and f.metadata["group"] in cfg_lib.GROUPS, name
    model_keys = {f.name for f in dataclasses.fields(cfg_lib.ModelKeys)}
    assert all(cfg_lib.FIELDS[name].metadata["group"] == "model" for name in model_keys)


def test_config_loads_no_model_module_nor_jax():
    """config.py sits below the model: importing it, parsing every shipped config and building the
    model's config load none of cwvae, cnns, kernels, nor JAX (the model's checks live with the model)."""
    code = (
        "import sys, config\n"
        "for name in ('tiny', 'mmnist', 'mazes', 'minerl'):\n"
        "    config.ModelConfig.from_config(config.parse(['--config', f'configs/{name}.yml']))\n"
        "config.help_text('train.py'), config.help_text('eval.py')\n"
        "print(sorted(m for m in ('cwvae', 'cnns', 'kernels', 'jax', 'flax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"config loaded {out.stdout.strip()}"


# The run names of the shipped configs, as they were when `channels` was a key: a run's identity must
# not change, so that existing run folders resume.
RUN_NAMES = {
    "tiny": "L2_k4_T16_B4_lr0.0003_z4_h8_generated_f08bf186",
    "mmnist": "L3_k6_T100_B50_lr0.0003_z20_h200_generated_bb9f7713",
    "mazes": "L3_k6_T100_B50_lr0.0003_z20_h200_generated_4868ae8f",
    "minerl": "L3_k6_T100_B50_lr0.0001_z100_h800_paper_3913821b",
}


@pytest.mark.parametrize("name", RUN_NAMES)
def test_run_names_of_the_shipped_configs_stay(name):
    assert cfg_lib.parse(["--config", str(ROOT / f"configs/{name}.yml")]).default_run_name() == RUN_NAMES[name]


def test_channels_come_from_the_dataset_and_older_files_naming_them_still_load(tmp_path):
    mm, mz = (cfg_lib.parse(["--config", str(ROOT / f"configs/{n}.yml")]) for n in ("mmnist", "mazes"))
    assert (mm.channels, mz.channels, mm.frame_size) == (1, 3, 64)
    assert cfg_lib.ModelConfig.from_config(mz).channels == 3
    older = tmp_path / "config.yml"  # a run saved while channels was a key
    older.write_text((ROOT / "configs/mazes.yml").read_text() + "channels: 3\n")
    assert dataclasses.replace(cfg_lib.parse(["--config", str(older)]), config=mz.config) == mz
    assert cfg_lib.with_wandb(mz, {"channels": 3}) == mz
    older.write_text((ROOT / "configs/mazes.yml").read_text() + "channels: 1\n")
    with pytest.raises(ConfigError) as refused:
        cfg_lib.parse(["--config", str(older)])
    message = str(refused.value)
    assert "key 'channels' got 1; channels come from the dataset ('mazes' has 3)" in message and "\n" not in message
    with pytest.raises(ConfigError, match="command line: key 'channels' got 3; channels come from the dataset"):
        cfg_lib.parse(["--config", str(ROOT / "configs/mmnist.yml"), "--channels", "3"])


def test_model_config_takes_the_model_keys_and_the_datasets_frame():
    c = cfg_lib.parse(["--config", str(ROOT / "configs/minerl.yml"), "--beta", "[1, 2, 3]", "--free_nats", "1"])
    m = cfg_lib.ModelConfig.from_config(c)
    assert (m.cell_deter_size, m.dec_stddev, m.free_nats, m.betas) == (800, 0.4, 1.0, (1.0, 2.0, 3.0))
    assert (m.frame_size, m.channels) == (64, 3) and hash(m) == hash(cfg_lib.ModelConfig.from_config(c))


def test_paper_protocol_uses_the_default_ssim_data_range():
    preset = cfg_lib.PROTOCOLS["paper"]("mmnist")
    assert preset["ssim_data_range"] == cfg_lib.FIELDS["ssim_data_range"].default == cfg_lib.Config().ssim_data_range


def test_seed_is_drawn_once_and_run_name_excludes_it():
    c = cfg_lib.resolve_seed(cfg_lib.Config())
    assert isinstance(c.seed, int)
    assert c.run_name_prefix() == cfg_lib.Config(seed=1).run_name_prefix()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_as_train_py_reads_it(path):
    import yaml

    c = cfg_lib.parse(["--config", str(path)], script="train.py")
    written = yaml.safe_load(path.read_text())
    assert {k: getattr(c, k) for k in written} == written  # every key known, every value taken as written


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("sweep_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_plans_trials_whose_keys_train_py_accepts(path):
    import sweeps

    trials = sweeps.plan(sweeps.load(path), 0, None, "python")
    assert trials and all(t.folder.parts[0] == "logs" for t in trials)
