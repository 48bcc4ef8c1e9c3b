"""What training, evaluation and the benchmarks run: the model and optimizer set-up, the PRNG
streams, and the jit-compiled pure functions (train step, validation loss, open-loop rollout with
its SSIM and PSNR).

Every function here is pure in (graphdef, params, batch, key): `nnx.split` once, `nnx.merge` inside
the traced function, so a compiled step never walks the module graph in Python. Compiled functions
are cached per model and option tuple, so a second run of one config in a process compiles nothing.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import cnns
import cwvae
import kernels
import media
import optim
import tools
from config import Config


class Stream(enum.IntEnum):
    """The run's PRNG streams: key(seed) folded with the stream, then with a step or an index.
    Each stream is used for one thing only, so no key is ever used twice."""

    PARAMS = 0  # the model's initial parameters
    TRAIN = 1  # the sampling noise of training step s (the same on a resumed run)
    VALIDATION = 2  # the validation summary at step s (folded with the batch, then split: loss, rollout)
    EVAL = 3  # eval.py: the samples of test video i
    TRAIN_VIDEO = 4  # the open-loop video of a training batch in the summary at step s


def stream_key(seed: int, stream: Stream, index: int | None = None) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), int(stream))
    return key if index is None else jax.random.fold_in(key, index)


def check_model_keys(config: Config) -> None:
    """The run's keys that only the model and its kernels can check, each a one-line ConfigError:
    cell_type against the cell registry (cwvae.CELLS), conv_impl against the kernels' forms and this
    machine (onednn needs its extension). Training calls it before any run folder is made, evaluation
    before loading the run."""
    cwvae.check_cell_type(config.cell_type)
    kernels.resolve(config.conv_impl)


def build_model(config: Config, rngs: nnx.Rngs) -> cwvae.CWVAE:
    """The run's model: its model config, and the convolution kernels that `conv_impl` names here."""
    model = cwvae.CWVAE(cwvae.ModelConfig.from_config(config), rngs=rngs)
    return cnns.use_kernels(model, kernels.resolve(config.conv_impl))


# Initialising op by op compiles some fifty small programs, most of the time going to XLA:CPU's LLVM
# optimisation of the initialisers' threefry hashes: 9-13 s in a fresh process (2-core CPU). One jitted
# program at optimisation level 1 takes 4-5 s in all and gives the same bits (tests/test_train.py checks
# it); level 0 changes the orthogonal GRU kernels in the last bit.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def init_model(config: Config) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graph definition and parameters, initialised from the run's seed in one compiled program."""
    graphdef, _ = abstract_model(config)
    return graphdef, _initialiser(cwvae.ModelConfig.from_config(config))(stream_key(config.seed, Stream.PARAMS))


@functools.cache
def _initialiser(model_config: cwvae.ModelConfig) -> Callable[[jax.Array], nnx.State]:
    """The compiled initialiser of a model (cached per model, as the steps are)."""

    def init(key: jax.Array) -> nnx.State:
        return nnx.state(cwvae.CWVAE(model_config, rngs=nnx.Rngs(params=key)))

    return jax.jit(init, compiler_options=INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None)


def abstract_model(config: Config) -> tuple[nnx.GraphDef, nnx.State]:
    """The graph definition and parameter shapes, without running any initialiser."""
    cwvae.check_cell_type(config.cell_type)  # a one-line error, not a KeyError inside the model
    form = kernels.resolve(config.conv_impl)  # outside eval_shape: it may load the extension
    model = nnx.eval_shape(lambda: cwvae.CWVAE(cwvae.ModelConfig.from_config(config), rngs=nnx.Rngs(0)))
    return nnx.split(cnns.use_kernels(model, form))


def make_mesh() -> jax.sharding.Mesh:
    """A one-axis mesh over all devices: the batch is split along 'data', parameters replicated."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_parts(batch: Any) -> tuple[Any, Any]:
    """A loader's batch (data.py) as (frames, actions): frames (B, T, H, W, C) uint8, and for a run with
    use_actions the pair's second part, actions (B, T, A) float32 (else None). The compiled functions
    below take either form; a run without actions compiles exactly the program it did before actions."""
    return batch if isinstance(batch, tuple) else (batch, None)


class OptimizerOptions(NamedTuple):
    """The config keys the optimizer reads (hashable, so compiled steps are cached per option)."""

    lr: float
    clip_grad_norm_by: float
    adam: str = "keras"  # keras: the official code's Adam (optim.keras_adam); optax: optax.adam

    @classmethod
    def from_config(cls, config: Config) -> OptimizerOptions:
        return cls(config.lr, config.clip_grad_norm_by, config.adam)


def optimizer(options: OptimizerOptions) -> optax.GradientTransformation:
    """Adam (eps 1e-4, as in the official code) after global-norm clipping. `adam: keras` is the
    official code's Keras form, whose effective eps is eps / sqrt(1 - b2^t) (see optim.py)."""
    adams = {"keras": optim.keras_adam, "optax": optax.adam}
    assert options.adam in adams, f"adam {options.adam!r}; valid: {', '.join(adams)}"
    return optax.chain(optax.clip_by_global_norm(options.clip_grad_norm_by), adams[options.adam](options.lr, eps=1e-4))


def make_optimizer(config: Config) -> optax.GradientTransformation:
    return optimizer(OptimizerOptions.from_config(config))


@functools.cache
def train_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, options: OptimizerOptions) -> Callable:
    """One jit-compiled, pure step (params, opt_state, batch, key) -> (params, opt_state, metrics): the batch
    (`batch_parts`) sharded along 'data', parameters and optimizer state replicated and donated."""
    tx = optimizer(options)

    def loss_fn(params, obs, key, actions):
        return nnx.merge(graphdef, params).loss(obs, key, actions)

    def step(params, opt_state, batch, key):
        frames, actions = batch_parts(batch)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, media.to_unit(frames), key, actions)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return optax.apply_updates(params, updates), opt_state, metrics

    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, replicated, NamedSharding(mesh, P("data")), replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 1),
    )


@functools.cache
def val_loss(graphdef: nnx.GraphDef) -> Callable:
    """Jit-compiled loss terms (params, batch (`batch_parts`), key) -> metrics, for validation."""

    @jax.jit
    def loss(params, batch, key):
        frames, actions = batch_parts(batch)
        return nnx.merge(graphdef, params).loss(media.to_unit(frames), key, actions)[1]

    return loss


@functools.cache
def open_loop(
    graphdef: nnx.GraphDef, open_loop_ctx: int, ssim_data_range: float, use_obs: tuple[bool, ...] | None = None
) -> Callable:
    """One compiled function (params, videos (N, T, ...) uint8 or with their actions (`batch_parts`), keys
    (N,)) -> predictions (N, T - ctx, H, W, C) and per-frame SSIM and PSNR (N, T - ctx). Each video gets
    its own key, so a video's sample does not depend on the batch it came in."""

    @jax.jit
    def rollout(params, videos, keys):
        model = nnx.merge(graphdef, params)
        frames, actions = batch_parts(videos)
        obs = media.to_unit(frames)

        def one(o, a, k):  # a video (and its actions) of the batch
            return model.open_loop(o[None], k, open_loop_ctx, use_obs, actions=None if a is None else a[None])[0]

        pred = jax.vmap(one)(obs, actions, keys)
        target = obs[:, open_loop_ctx:]
        return pred, *tools.frame_metrics(pred, target, ssim_data_range, tools.PSNR_DATA_RANGE)

    return rollout
