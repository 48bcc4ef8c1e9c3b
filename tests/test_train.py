"""Training end to end on generated data: determinism, resume, data parallelism, errors."""

import os
import shlex
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_args

import steps
import train


def leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_one_run_trains_writes_checkpoints_and_config(tiny):
    c = tiny(max_steps=10)
    result = train.train(c)
    assert result.step == 10 and sorted(result.losses) == list(range(1, 11))
    assert all(np.isfinite(v) for v in result.losses.values())
    assert (result.exp_dir / "config.yml").exists()
    ckpts = sorted(int(p.name) for p in (result.exp_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [10]
    saved = (result.exp_dir / "config.yml").read_text()
    assert "seed: 0" in saved and "data_source: generated" in saved


INIT_BOTH_WAYS = """
import sys
import jax, numpy as np
from flax import nnx
import config, steps
c = config.parse(sys.argv[1:])
_, params = steps.init_model(c)
eager = nnx.state(steps.build_model(c, nnx.Rngs(params=steps.stream_key(c.seed, steps.Stream.PARAMS))))
assert jax.tree.structure(params) == jax.tree.structure(eager)
pairs = zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(eager), strict=True)
print("differing:", [jax.tree_util.keystr(path) for (path, a), b in pairs if not np.array_equal(a, b)])
"""


def test_init_model_gives_the_bits_of_op_by_op_initialisation(tmp_path):
    """init_model compiles the initialisers as one program at XLA:CPU level 1: its parameters are bit for
    bit those of building the model op by op, as a user's process does at the default level (so in a
    process without the suite's XLA_FLAGS). Level 0 changes the orthogonal GRU kernels' last bits."""
    command = [sys.executable, "-c", INIT_BOTH_WAYS, *tiny_args(tmp_path)]
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "differing: []", out.stdout[-3000:]


def test_same_seed_gives_identical_losses(tiny, tmp_path):
    a = train.train(tiny(max_steps=4))
    b = train.train(tiny(max_steps=4, logdir=tmp_path / "other"))
    assert a.losses == b.losses
    c = train.train(tiny(max_steps=4, logdir=tmp_path / "third", seed=1))
    assert c.losses != a.losses


def test_resume_matches_uninterrupted_run(tiny, tmp_path):
    full = train.train(tiny(max_steps=12, logdir=tmp_path / "full"))
    first = train.train(tiny(max_steps=7, logdir=tmp_path / "split"))
    assert first.step == 7
    second = train.train(tiny(max_steps=12, logdir=tmp_path / "split"))
    assert second.step == 12 and sorted(second.losses) == list(range(8, 13))
    assert {**first.losses, **second.losses} == full.losses
    for a, b in zip(leaves(full.params), leaves(second.params)):
        np.testing.assert_array_equal(a, b)  # bit-exact on CPU


def test_two_devices_match_one_device(tiny):
    assert jax.device_count() == 2, "conftest sets two simulated CPU devices"
    c = tiny()
    graphdef, params0 = steps.init_model(c)
    tx = steps.make_optimizer(c)
    batch = np.random.default_rng(0).integers(0, 256, (c.batch_size, c.seq_len, 64, 64, 1), dtype=np.uint8)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = jax.make_mesh((len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,))
        step = steps.train_step(graphdef, mesh, steps.OptimizerOptions.from_config(c))
        params = jax.tree.map(np.array, params0)
        opt_state = tx.init(params)
        losses = []
        for i in range(2):
            params, opt_state, metrics = step(params, opt_state, batch, steps.stream_key(0, steps.Stream.TRAIN, i))
            losses.append(float(metrics["loss"]))
        results.append((losses, leaves(params)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_second_run_of_same_config_does_not_recompile(tiny, tmp_path):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: (
            compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    # a model size no other test uses, so the first run must compile
    train.train(tiny(max_steps=3, save_scalars_every=2, save_gifs_every=2, cell_embed_size=6))
    first = len(compiles)
    train.train(tiny(max_steps=3, save_scalars_every=2, save_gifs_every=2, cell_embed_size=6, logdir=tmp_path / "b"))
    assert first > 0 and len(compiles) == first, f"{len(compiles) - first} compilations in the second run"


def test_scripts_keep_compiled_programs_in_a_user_cache_folder_unless_told_otherwise(monkeypatch, tmp_path):
    import cli

    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.__setitem__(name, value))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    expected = str(tmp_path / "cwvae-jax" / "xla")
    assert cli.use_compilation_cache() == expected and updates == {"jax_compilation_cache_dir": expected}
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # not a folder: no cache, one note
    assert cli.use_compilation_cache() is None and len(updates) == 1
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))  # JAX reads it itself
    assert cli.use_compilation_cache() == str(tmp_path / "mine") and len(updates) == 1
    monkeypatch.setenv("JAX_ENABLE_COMPILATION_CACHE", "false")
    assert cli.use_compilation_cache() is None and len(updates) == 1


def test_non_finite_loss_stops_with_the_step(tiny):
    with pytest.raises(train.TrainingError, match="non-finite loss .* at step 1;"):
        train.train(tiny(max_steps=3, dec_stddev=1e-30))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cmd = [
        sys.executable,
        "-u",
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/tiny.yml"),
        "--seed",
        "0",
        "--datadir",
        str(tmp_path / "data"),
        "--logdir",
        str(tmp_path / "logs"),
        "--max_steps",
        "100000",
        "--num_epochs",
        "100000",
        "--save_model_every",
        "100000",
        "--save_named_model_every",
        "100000",
        "--save_scalars_every",
        "100000",
        "--save_gifs_every",
        "100000",
        "--progress",
        "false",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until the loop runs: a signal from then on stops it after a step
        lines.append(line)
        if line.startswith("compiling the training step"):
            break
    time.sleep(3)  # in the first step (compiling it, or from the cache, running a few)
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, out
    assert "stopped by a signal" in out, out
    exp_dir = next((tmp_path / "logs" / "mmnist").glob("*"))
    steps = [int(p.name) for p in (exp_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(steps) == 1 and steps[0] > 0, (steps, out)


def test_metrics_jsonl_holds_every_scalar_logged_to_wandb(tiny, monkeypatch):
    """Every scalar a run logs reaches metrics.jsonl in its folder (videos stay wandb's), at its step."""
    import json

    import wandb

    logged, real_init = [], wandb.init

    def init(**kwargs):
        run = real_init(**{**kwargs, "mode": "disabled"})
        real_log = run.log
        run.log = lambda values, step=None: logged.append((step, dict(values))) or real_log(values, step)
        return run

    monkeypatch.setattr(wandb, "init", init)
    result = train.train(tiny(max_steps=10, save_gifs=False))
    lines = [json.loads(line) for line in (result.exp_dir / "metrics.jsonl").read_text().splitlines()]
    written = {
        (line["step"], key): value for line in lines for key, value in line.items() if key not in ("step", "time")
    }
    wanted = {(step, k): float(v) for step, values in logged for k, v in values.items() if np.ndim(v) == 0}
    assert wanted and written == wanted
    keys = {k for _, k in wanted}
    assert {"train/loss", "train/neg_elbo", "val/loss", "val/neg_elbo", "val/open_loop_ssim"} <= keys


def test_a_run_past_max_steps_has_nothing_to_do_and_a_finished_run_names_its_checkpoint(tmp_path):
    from conftest import tiny_args

    def run(*argv):
        out = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *tiny_args(tmp_path, *argv)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()

    first = run("--max_steps", "3", "--run_name", "r")
    folder = tmp_path / "logs" / "mmnist" / "r"
    assert first[-1].startswith(f"done at step 3: checkpoint {folder / 'checkpoints' / '3'}; evaluate it with: ")
    assert any(line.startswith("compiling the training step") for line in first)
    again = run("--max_steps", "2", "--run_name", "r")
    assert again[-1].startswith("nothing to do: the run is at step 3, its max_steps/num_epochs end at step 2")
    # The commands printed work as pasted (the interpreter that ran train.py, which `python` may not be):
    # with --help added, each prints eval.py's usage.
    for line in (first[-1], again[-1]):
        command = shlex.split(line.split("evaluate it with: " if "done" in line else "evaluate it: ")[1])
        assert command[2:] == ["--logdir", str(folder)]
        out = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0 and out.stdout.startswith("usage: python eval.py"), out.stderr


@pytest.mark.parametrize("case", ["datadir inside a file", "unknown cell_type", "onednn unavailable"])
def test_a_run_that_cannot_start_makes_no_run_folder(tmp_path, monkeypatch, case):
    """Every check a run can fail on (the data folder writable, the keys only the model can check, the
    oneDNN extension) comes before its folder is made: one line naming the key, and logdir stays empty."""
    import config as cfg_lib
    from errors import UserError
    from kernels import onednn

    (tmp_path / "afile").write_text("x")
    key, value = {
        "datadir inside a file": ("datadir", tmp_path / "afile" / "data"),
        "unknown cell_type": ("cell_type", "GRUCell"),
        "onednn unavailable": ("conv_impl", "onednn"),
    }[case]
    if case == "onednn unavailable":
        monkeypatch.setattr(onednn, "available", lambda: False)
    config = cfg_lib.parse(tiny_args(tmp_path, **{key: value}))
    with pytest.raises(UserError) as refused:
        train.train(config)
    assert f"key '{key}' got" in str(refused.value) and "\n" not in str(refused.value), str(refused.value)
    assert not (tmp_path / "logs").exists(), sorted(str(p) for p in (tmp_path / "logs").rglob("*"))


def test_the_pace_counts_from_the_resumed_step_and_leaves_out_the_compiling_step(tiny, tmp_path, monkeypatch):
    """The log line's steps/s and time left to the last step: over the steps this process ran after its
    first (which compiles), so that a run resumed at step 100 of 200 reports its own pace."""
    import types

    lines, written, clock = [], {}, {"now": 0.0}
    log = types.SimpleNamespace(print=lines.append, write=lambda values, step: written.update({step: values}))
    monkeypatch.setattr(train.time, "time", lambda: clock["now"])
    tracker = train.Metrics(tiny(save_scalars_every=5), tmp_path, log, None, start=100, total=200)
    for step in range(101, 112):  # put(step) comes when step - 1 has ended: step 101 at 1060 s (60 s compiling)
        clock["now"] = 1060.0 + 2.0 * (step - 102)  # then 2 s a step
        tracker.put(step, {"loss": 1.0, "nll_term": 1.0, "kl_term": 0.0})
    assert lines == [
        "step 105: loss 1.00 nll 1.00 kl 0.000 (0.50 steps/s, 0:03:10 left to step 200)",
        "step 110: loss 1.00 nll 1.00 kl 0.000 (0.50 steps/s, 0:03:00 left to step 200)",
    ]
    assert written[105]["train/steps_per_sec"] == written[110]["train/steps_per_sec"] == 0.5


def test_a_test_split_smaller_than_a_validation_batch_still_validates(tiny):
    """One test video and validation sub-batches of 2: validation runs on the one video (it once found
    no full sub-batch and stopped with KeyError 'val/loss' at the first validation)."""
    c = tiny(max_steps=5, num_gen_test=1, num_gen_train=2)
    batches = train.validation_batches(c)
    assert [len(steps.batch_parts(b)[0]) for b in batches] == [1]
    result = train.train(c)
    lines = (result.exp_dir / "metrics.jsonl").read_text().splitlines()
    assert any('"val/loss"' in line for line in lines)
