"""The cell seam: a second cell, written against cwvae.Cell alone and added with one registry line,
trains, checkpoints, restores and evaluates without any change to the hierarchy or the loss."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_args
from flax import nnx

import checkpoints
import config as cfg_lib
import cwvae
import eval as eval_lib
import runs
import steps
import train
from errors import ConfigError


class DeterministicCell(nnx.Module):
    """A GRU state driven by the context and the observation, with no stochastic state: the state
    is one (B, D) array (not a NamedTuple), its prior and posterior are the same sequence, and a
    missing observation (prediction) is zeros, so the state then follows the context alone."""

    def __init__(self, config: cwvae.ModelConfig, context_size: int, obs_size: int, *, rngs: nnx.Rngs):
        self.deter, self.obs_size = config.cell_deter_size, obs_size
        self.embed = nnx.Linear(context_size + obs_size, config.cell_embed_size, rngs=rngs)
        self.gru = cwvae.GRU(config.cell_embed_size, config.cell_deter_size, rngs=rngs)

    @classmethod
    def output_size(cls, config: cwvae.ModelConfig) -> int:
        return config.cell_deter_size

    def initial_state(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.deter))

    def unroll(self, obs, context, keep, initial, key):
        b, t = context.shape[:2]
        obs = jnp.zeros((b, t, self.obs_size)) if obs is None else obs
        x = jnp.swapaxes(jax.nn.relu(self.embed(jnp.concatenate([context, obs], -1))), 0, 1)

        def step(h, xs):
            h = self.gru(h * xs[1], xs[0])  # keep 0 resets the state at a parent tick
            return h, h

        _, states = jax.lax.scan(step, initial, (x, keep))
        states = jnp.swapaxes(states, 0, 1)
        return states, states

    def output(self, states: jax.Array) -> jax.Array:
        return states

    def divergence(self, posteriors: jax.Array, priors: jax.Array) -> jax.Array:
        return jnp.zeros(posteriors.shape[:2])

    def log_terms(self, priors: jax.Array, posteriors: jax.Array) -> dict[str, jax.Array]:
        return {"state_norm": jnp.linalg.norm(posteriors, axis=-1)}


@pytest.fixture
def registered(monkeypatch):
    """DeterministicCell in the registry for this test only: the one line that adds a cell."""
    monkeypatch.setitem(cwvae.CELLS, "DeterministicCell", DeterministicCell)


def tiny_model(**overrides) -> cwvae.CWVAE:
    """The model of configs/tiny.yml (its sizes, its dataset's frames) with `overrides` of its model config."""
    config = cfg_lib.ModelConfig.from_config(cfg_lib.parse(["--config", str(ROOT / "configs" / "tiny.yml")]))
    return cwvae.CWVAE(dataclasses.replace(config, **overrides), rngs=nnx.Rngs(0))


def test_model_with_the_deterministic_cell_has_no_stochastic_part(registered):
    model = tiny_model(cell_type="DeterministicCell")
    assert all(type(cell) is DeterministicCell for cell in model.cells), "the hierarchy ignored cell_type"
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    names = {"/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)) for path, _ in leaves}
    names = {name.split("/", 2)[2] for name in names if name.startswith("cells/")}
    assert names == {f"{layer}/{p}" for layer in ("embed", "gru/dense_i", "gru/dense_h") for p in ("kernel", "bias")}
    assert model.decoder.dense.in_features == model.config.cell_deter_size, (
        "level 0 decodes the cell's output_size, not the RSSM's"
    )

    frame = (model.config.frame_size, model.config.frame_size, model.config.channels)  # the dataset's
    obs = jax.random.uniform(jax.random.key(1), (2, 16, *frame))
    graphdef, params = nnx.split(model)
    loss, metrics = jax.jit(lambda p, o, k: nnx.merge(graphdef, p).loss(o, k))(params, obs, jax.random.key(2))
    assert float(metrics["kl_term"]) == 0.0 and float(metrics["kl/level0"]) == float(metrics["kl/level1"]) == 0.0
    np.testing.assert_allclose(loss, metrics["nll_term"], rtol=1e-6)
    assert float(metrics["state_norm/level1"]) > 0 and not any(k.startswith("entropy") for k in metrics)
    rollout = jax.jit(lambda p, o, k: nnx.merge(graphdef, p).open_loop(o, k, 8))
    a, b = (rollout(params, obs, jax.random.key(k)) for k in (3, 4))
    assert a.shape == (2, 8, *frame) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)  # no stochastic state: the key changes nothing


def test_cell_type_is_checked_against_the_live_registry(tmp_path, monkeypatch):
    def check(cell_type: str) -> None:
        steps.check_model_keys(cfg_lib.parse(tiny_args(tmp_path, "--cell_type", cell_type)))

    with pytest.raises(ConfigError) as refused:
        check("DeterministicCell")
    assert str(refused.value) == "key 'cell_type' got 'DeterministicCell'; valid: RSSMCell"
    monkeypatch.setitem(cwvae.CELLS, "DeterministicCell", DeterministicCell)
    check("DeterministicCell")
    with pytest.raises(ConfigError) as refused:
        check("GRUCell")
    message = str(refused.value)
    assert message == "key 'cell_type' got 'GRUCell'; valid: RSSMCell, DeterministicCell" and "\n" not in message


def test_deterministic_cell_trains_restores_and_evaluates(tmp_path, registered):
    argv = ["--cell_type", "DeterministicCell", "--save_gifs", "false"]
    keys = dict(max_steps=6, save_model_every=3, save_named_model_every=6, save_scalars_every=6)
    config = cfg_lib.parse(tiny_args(tmp_path, *argv, **keys))
    result = train.train(config)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert result.step == 6 and len(losses) == 6 and all(np.isfinite(losses))
    assert len(set(losses)) > 1, losses
    _, initial = steps.init_model(config)
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(result.params))]
    assert all(moved), "every parameter of the model, the cells' included, was trained"

    graphdef, restored, step = checkpoints.load_params(runs.RunFolder(result.exp_dir), config)
    assert step == 6 and all(type(cell) is DeterministicCell for cell in nnx.merge(graphdef, restored).cells)
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, b)

    saved, run, step = runs.load_run_config(["--logdir", str(result.exp_dir), "--progress", "false"])
    assert saved.cell_type == "DeterministicCell"
    out = eval_lib.evaluate(saved, run, step)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["step"] == 6 and 0 < summary["ssim_mean"] <= 1 and np.isfinite(summary["psnr_mean"])
