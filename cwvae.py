"""The Clockwork VAE: the clockwork, RSSM cells, the hierarchy, the negative ELBO, open-loop rollout.

Level l of the hierarchy ticks once every k**l frames (k = tmp_abs_factor). Levels unroll
from the top down; each level's posterior output, repeated k times along time, is the
context of the level below. Shapes are (B, T, H, W, C) for videos and (B, T_l, D) for the
state sequence of level l, T_l = ceil(T / k**l).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from cnns import GLOROT, Decoder, Encoder
from config import ModelConfig  # the model's keys (frame size and channels from the dataset's entry)
from errors import ConfigError

STDDEV_SHIFT = 0.54  # added to the hidden layer before the stddev head, as in the official code


# --- The clockwork (the paper's section 3) ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clock:
    """Temporal abstraction: level l ticks once every k**l frames (k = tmp_abs_factor).

    - `lengths`: a clip of T frames gives level l ceil(T / k**l) steps.
    - `merge`: level l's input at a tick is the sum of its per-frame features over the tick's
      k**l frames (the clip is padded with zeros to whole ticks).
    - `repeat`: each step of level l + 1 is the context of the k steps of level l it spans.
    - `keep_mask` (cell_reset_state): below the top, the stochastic sample is reset to zero at
      the first step of every parent tick.
    - `previous_ticks` (use_actions): each step of level l is conditioned on the actions of the
      previous tick, summed (the previous action at level 0).
    """

    levels: int
    factor: int

    def lengths(self, frames: int) -> list[int]:
        """Steps per level for a clip of `frames` frames: ceil(T / k**l)."""
        return [math.ceil(frames / self.factor**level) for level in range(self.levels)]

    def merge(self, features: jax.Array, level: int) -> jax.Array:
        """Per-frame features (B, T, F) -> level l's inputs (B, ceil(T / k**l), F), summed per tick."""
        period = self.factor**level
        b, t, f = features.shape
        pad = -t % period
        x = jnp.pad(features, ((0, 0), (0, pad), (0, 0)))
        return x.reshape(b, (t + pad) // period, period, f).sum(axis=2)

    def repeat(self, parent: jax.Array, length: int) -> jax.Array:
        """The parent level's states (B, T_l+1, D) as the context of the level below: (B, length, D)."""
        context = jnp.repeat(parent, self.factor, axis=1)
        assert context.shape[1] >= length, f"context of {context.shape[1]} steps for a level of {length}"
        return context[:, :length]

    def previous_ticks(self, actions: jax.Array, level: int) -> jax.Array:
        """Per-frame actions (B, T, A), actions[:, t] taken after frame t -> what level l's steps are
        conditioned on (B, ceil(T / k**l), A): at step j the actions of tick j - 1 summed (zeros at j = 0),
        those that led from the first frame of tick j - 1 to the first frame of tick j. At level 0 that
        is the previous action, as the RSSM's prior takes it; above, the sum is the tick's net move (the
        camera's turns add up), as the encoder sums a tick's frame features (`merge`). Step j of level l
        thus sees only actions taken before its first frame: the action taken after frame t changes no
        frame up to t."""
        merged = self.merge(actions, level)
        return jnp.pad(merged, ((0, 0), (1, 0), (0, 0)))[:, :-1]

    def keep_mask(self, level: int, length: int, first_step: int, reset: bool) -> jax.Array:
        """(length, 1, 1): 0 where the previous sample is reset, 1 where it is kept. With `reset`,
        steps t of level l < top with t % k == 0 reset (the top level has no parent)."""
        if not reset or level == self.levels - 1:
            return jnp.ones((length, 1, 1))
        t = jnp.arange(first_step, first_step + length)
        return (t % self.factor != 0).astype(jnp.float32)[:, None, None]


class Cell(Protocol):
    """What the hierarchy and the loss ask of a level's cell; `CELLS` maps config key `cell_type` to
    a class. A state is any pytree of (B, ...) arrays; a sequence of states stacks them as (B, T, ...).
    Every level gets its own cell of the same type; the context of level l is the output of level
    l + 1 (zeros at the top), followed, with use_actions, by the level's actions (Clock.previous_ticks);
    the observation is its inputs from the encoder.

        __init__(config: ModelConfig, context_size: int, obs_size: int, *, rngs)
        output_size(config) -> int        (class method) width of `output`, the same at every level
        initial_state(batch) -> state     the state before the first step
        unroll(obs, context, keep, initial, key) -> (priors, posteriors)
            obs (B, T, obs_size) or None (predict from the prior alone), context (B, T, context_size),
            keep (T, 1, 1): 1, or 0 where the clockwork resets the state (cell_reset_state);
            the last posterior is the state after the sequence
        output(states) -> (B, T, output_size)   what the level passes down (and level 0 decodes)
        divergence(posteriors, priors) -> (B, T)   the loss's KL(posterior || prior) per step
        log_terms(priors, posteriors) -> {name: (B, T)}   logged per level as name/levelL
    """

    @classmethod
    def output_size(cls, config: ModelConfig) -> int: ...

    def initial_state(self, batch: int) -> Any: ...

    def unroll(self, obs, context, keep, initial, key) -> tuple[Any, Any]: ...

    def output(self, states) -> jax.Array: ...

    def divergence(self, posteriors, priors) -> jax.Array: ...

    def log_terms(self, priors, posteriors) -> dict[str, jax.Array]: ...


class CellState(NamedTuple):
    """One step (or, stacked, a sequence) of an RSSM cell's state."""

    mean: jax.Array  # (B, S) stochastic state distribution
    stddev: jax.Array  # (B, S)
    sample: jax.Array  # (B, S) stochastic state
    det_state: jax.Array  # (B, D) GRU state
    det_out: jax.Array  # (B, D) GRU output (equal to det_state for a GRU)

    @property
    def output(self) -> jax.Array:
        """What the level passes on: concat(sample, det_out)."""
        return jnp.concatenate([self.sample, self.det_out], -1)


def zero_state(batch: int, stoch: int, deter: int) -> CellState:
    s, d = jnp.zeros((batch, stoch)), jnp.zeros((batch, deter))
    return CellState(s, s, s, d, d)


def gaussian_kl(q_mean, q_std, p_mean, p_std) -> jax.Array:
    """KL(q || p) of diagonal Gaussians, summed over the last axis."""
    var_ratio = (q_std / p_std) ** 2
    t = ((q_mean - p_mean) / p_std) ** 2
    return 0.5 * jnp.sum(var_ratio + t - 1.0 - jnp.log(var_ratio), -1)


def gaussian_entropy(std) -> jax.Array:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e) + jnp.log(std), -1)


class GRU(nnx.Module):
    """Keras' GRUCell(reset_after=True), the official code's cell: an input transform and a
    recurrent transform, each with its own bias, give the update gate z, the reset gate r and the
    candidate n (h is the state, x the input):

        z = sigmoid(x Wz + bz_i + h Uz + bz_h)     r = sigmoid(x Wr + br_i + h Ur + br_h)
        n = tanh(x Wn + bn_i + r * (h Un + bn_h))  h' = z * h + (1 - z) * n

    The z and r biases of the two transforms add, yet each is trained (with its own Adam step), as
    in the official code and its parameter counts. Columns are in Keras' gate order z, r, n, so the
    official cell_<l> GRUCell variables (E = cell_embed_size, H = cell_deter_size) map one to one:

        official (Keras)          shape     here                    column blocks (both)
        gru/kernel                (E, 3H)   gru.dense_i.kernel      [0:H] z, [H:2H] r, [2H:3H] n (Keras' h)
        gru/recurrent_kernel      (H, 3H)   gru.dense_h.kernel      same
        gru/bias[0] (input)       (3H,)     gru.dense_i.bias        same
        gru/bias[1] (recurrent)   (3H,)     gru.dense_h.bias        same

    Initialisers as Keras': glorot_uniform input kernel, orthogonal recurrent kernel, zero biases.
    """

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        self.dense_i = nnx.Linear(in_features, 3 * hidden, kernel_init=GLOROT, rngs=rngs)
        self.dense_h = nnx.Linear(hidden, 3 * hidden, kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        xz, xr, xn = jnp.split(self.dense_i(x), 3, -1)
        hz, hr, hn = jnp.split(self.dense_h(h), 3, -1)
        z = jax.nn.sigmoid(xz + hz)
        r = jax.nn.sigmoid(xr + hr)
        n = jnp.tanh(xn + r * hn)
        return z * h + (1.0 - z) * n


def split_linear(layer: nnx.Linear, first: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Kernel rows for the first `first` inputs, for the rest, and the bias: lets the part of
    a concat-input dense layer that does not depend on the recurrent state be computed for
    all time steps at once, outside the scan (same mathematics, bigger matmuls)."""
    kernel = layer.kernel[...]
    return kernel[:first], kernel[first:], layer.bias[...]


class RSSMCell(nnx.Module):
    """Recurrent state-space cell of one level: a prior from the previous state and the
    context, and a posterior from the prior's deterministic state and the observation."""

    def __init__(self, config: ModelConfig, context_size: int, obs_size: int, *, rngs: nnx.Rngs):
        s, d, e = config.cell_stoch_size, config.cell_deter_size, config.cell_embed_size
        self.stoch, self.deter = s, d
        self.min_stddev = config.cell_min_stddev
        self.mean_only = config.cell_mean_only

        def dense(a, b):
            return nnx.Linear(a, b, kernel_init=GLOROT, rngs=rngs)

        self.prior_h1 = dense(s + context_size, e)
        self.gru = GRU(e, d, rngs=rngs)
        self.prior_h2 = dense(d, e)
        self.prior_mean = dense(e, s)
        self.prior_stddev = dense(e, s)
        self.post_h1 = dense(d + obs_size, e)
        self.post_h2 = dense(e, e)
        self.post_mean = dense(e, s)
        self.post_stddev = dense(e, s)

    def _dist(self, h, mean_layer, stddev_layer, noise):
        mean = mean_layer(h)
        stddev = jax.nn.softplus(stddev_layer(h + STDDEV_SHIFT)) + self.min_stddev
        sample = mean if self.mean_only else mean + stddev * noise
        return mean, stddev, sample

    def prior(self, prev: CellState, context_proj: jax.Array, noise: jax.Array) -> CellState:
        """One prior step; `context_proj` is the context's share of prior_h1 (with its bias)."""
        w_sample, _, _ = split_linear(self.prior_h1, self.stoch)
        h = jax.nn.relu(prev.sample @ w_sample + context_proj)
        det = self.gru(prev.det_state, h)
        h = jax.nn.relu(self.prior_h2(det))
        mean, stddev, sample = self._dist(h, self.prior_mean, self.prior_stddev, noise)
        return CellState(mean, stddev, sample, det, det)

    def posterior(self, prior: CellState, obs_proj: jax.Array, noise: jax.Array) -> CellState:
        """One posterior step; `obs_proj` is the observation's share of post_h1 (with its bias)."""
        w_det, _, _ = split_linear(self.post_h1, self.deter)
        h = jax.nn.relu(prior.det_out @ w_det + obs_proj)
        h = jax.nn.relu(self.post_h2(h))
        mean, stddev, sample = self._dist(h, self.post_mean, self.post_stddev, noise)
        return CellState(mean, stddev, sample, prior.det_state, prior.det_out)

    def project_context(self, context: jax.Array) -> jax.Array:
        _, w_ctx, bias = split_linear(self.prior_h1, self.stoch)
        return context @ w_ctx + bias

    def project_obs(self, obs: jax.Array) -> jax.Array:
        _, w_obs, bias = split_linear(self.post_h1, self.deter)
        return obs @ w_obs + bias

    def unroll(
        self,
        obs: jax.Array | None,
        context: jax.Array,
        keep: jax.Array,
        initial: CellState,
        key: jax.Array,
    ) -> tuple[CellState, CellState]:
        """Scan the cell over time. obs (B, T, F) or None (prior only), context (B, T, Dc),
        keep (T,) multiplies the previous sample (0 resets it). Returns the priors and the
        posteriors, each a CellState of (B, T, .) arrays; the posterior is the next state."""
        b, t = context.shape[:2]
        noise = jax.random.normal(key, (2, t, b, self.stoch))
        ctx = jnp.swapaxes(self.project_context(context), 0, 1)
        xs = (ctx, keep, noise[0], noise[1])
        if obs is not None:
            assert obs.shape[:2] == (b, t), f"obs {obs.shape} and context {context.shape} disagree on (B, T)"
            xs += (jnp.swapaxes(self.project_obs(obs), 0, 1),)

        def step(state, x):
            ctx_t, keep_t, noise_prior, noise_post = x[:4]
            state = state._replace(sample=state.sample * keep_t)
            prior = self.prior(state, ctx_t, noise_prior)
            post = self.posterior(prior, x[4], noise_post) if obs is not None else prior
            return post, (prior, post)

        _, (priors, posts) = jax.lax.scan(step, initial, xs)
        to_bt = lambda s: CellState(*(jnp.swapaxes(v, 0, 1) for v in s))  # noqa: E731
        return to_bt(priors), to_bt(posts)

    @classmethod
    def output_size(cls, config: ModelConfig) -> int:
        return config.cell_stoch_size + config.cell_deter_size

    def initial_state(self, batch: int) -> CellState:
        return zero_state(batch, self.stoch, self.deter)

    def output(self, states: CellState) -> jax.Array:
        return states.output

    def divergence(self, posteriors: CellState, priors: CellState) -> jax.Array:
        return gaussian_kl(posteriors.mean, posteriors.stddev, priors.mean, priors.stddev)

    def log_terms(self, priors: CellState, posteriors: CellState) -> dict[str, jax.Array]:
        return {
            "entropy_prior": gaussian_entropy(priors.stddev),
            "entropy_posterior": gaussian_entropy(posteriors.stddev),
        }


CELLS: dict[str, type[Cell]] = {"RSSMCell": RSSMCell}  # config key cell_type -> the class of every level


def check_cell_type(cell_type: str) -> None:
    """Config key `cell_type` names a cell of CELLS (the registry as it is now: a cell may be added at run
    time), else a ConfigError in one line."""
    if cell_type not in CELLS:
        raise ConfigError(f"key 'cell_type' got {cell_type!r}; valid: {', '.join(CELLS)}")


def last_step(states):
    """The last step of a sequence of states (B, T, ...) -> (B, ...)."""
    return jax.tree.map(lambda v: v[:, -1], states)


class CWVAE(nnx.Module):
    """Encoder, one cell per level (cell_type: CELLS), decoder; the loss and open-loop prediction.

    With use_actions (config.action_size > 0) each level's context also holds the actions of the
    previous tick (Clock.previous_ticks): the prior steps on the previous action as the RSSM's does, and
    the posterior, built on the prior's deterministic state, sees it through that state. Actions are
    (B, T, A), one per frame, actions[:, t] taken after frame t (dataspec.py); a model with actions
    given None takes zeros (no actions)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.levels = config.levels
        self.clock = Clock(config.levels, config.tmp_abs_factor)
        self.encoder = Encoder(config, rngs=rngs)
        cell = CELLS[config.cell_type]
        width = cell.output_size(config)  # each level's output: the context of the level below
        context = width + config.action_size  # and each level's actions
        self.cells = nnx.List(
            [cell(config, context, self.encoder.feature_size, rngs=rngs) for _ in range(config.levels)]
        )
        self.decoder = Decoder(config, width, rngs=rngs)

    def hierarchy(
        self,
        inputs: list[jax.Array],
        key: jax.Array,
        use_obs: tuple[bool, ...] | None = None,
        initial: list | None = None,
        offset: int = 0,
        actions: list[jax.Array] | None = None,
    ) -> tuple[list, list]:
        """Unroll all levels from the top down. inputs[l] is (B, T_l, F) (zeros are fine where the
        level does not observe); use_obs[l] False makes level l's posterior its prior, and None
        observes every level (training); actions[l] (B, T_l, A) each level's actions (`level_actions`),
        None for a model without. Returns priors and posteriors per level (level 0 first)."""
        use_obs = [True] * self.levels if use_obs is None else use_obs
        b = inputs[0].shape[0]
        priors, posts = [None] * self.levels, [None] * self.levels
        for level in reversed(range(self.levels)):
            cell, length = self.cells[level], inputs[level].shape[1]
            if level == self.levels - 1:  # the top level has no parent
                context = jnp.zeros((b, length, type(cell).output_size(self.config)))
            else:
                context = self.clock.repeat(self.cells[level + 1].output(posts[level + 1]), length)
            if actions is not None:
                context = jnp.concatenate([context, actions[level]], -1)
            first_step = offset // self.clock.factor**level
            priors[level], posts[level] = cell.unroll(
                inputs[level] if use_obs[level] else None,
                context,
                self.clock.keep_mask(level, length, first_step, self.config.cell_reset_state),
                initial[level] if initial else cell.initial_state(b),
                jax.random.fold_in(key, level),
            )
        return priors, posts

    def encode(self, obs: jax.Array) -> list[jax.Array]:
        """Frames (B, T, H, W, C) -> each level's inputs (B, ceil(T / k**l), F)."""
        return [self.clock.merge(f, level) for level, f in enumerate(self.encoder(obs))]

    def level_actions(self, actions: jax.Array | None, batch: int, frames: int) -> list[jax.Array] | None:
        """Per-frame actions (B, T, A) -> each level's (B, ceil(T / k**l), A) (Clock.previous_ticks); None
        for a model without actions, and zeros for one with actions given none."""
        if not self.config.action_size:
            assert actions is None, f"actions {actions.shape} given to a model without (use_actions false)"
            return None
        if actions is None:
            actions = jnp.zeros((batch, frames, self.config.action_size))
        want = (batch, frames, self.config.action_size)
        assert actions.shape == want, f"actions {actions.shape}; expected (B, T, A) = {want}"
        return [self.clock.previous_ticks(actions, level) for level in range(self.levels)]

    def __call__(
        self, obs: jax.Array, key: jax.Array, actions: jax.Array | None = None
    ) -> tuple[jax.Array, list, list]:
        """Frames (B, T, H, W, C) in [0, 1] (and their actions (B, T, A)) -> decoded means (B, T, H, W, C),
        priors, posteriors."""
        conditions = self.level_actions(actions, *obs.shape[:2])
        priors, posts = self.hierarchy(self.encode(obs), key, actions=conditions)
        return self.decoder(self.cells[0].output(posts[0])), priors, posts

    def loss(
        self, obs: jax.Array, key: jax.Array, actions: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Negative ELBO per frame and its named terms (see `elbo_terms`)."""
        decoded, priors, posts = self(obs, key, actions)
        return elbo_terms(self.config, self.cells, obs, decoded, priors, posts)

    def decode_chunked(self, states: jax.Array, chunk: int) -> jax.Array:
        """Decode (B, T, D) -> (B, T, H, W, C) `chunk` frames per video at a time, so that
        peak memory grows with the frames kept, not with the decoder's activations."""
        b, t, d = states.shape
        n = -(-t // chunk)
        x = jnp.pad(states, ((0, 0), (0, n * chunk - t), (0, 0))).reshape(b, n, chunk, d)
        frames = jax.lax.map(self.decoder, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(frames, 0, 1).reshape(b, n * chunk, *frames.shape[3:])[:, :t]

    def open_loop(
        self,
        obs: jax.Array,
        key: jax.Array,
        context_frames: int,
        use_obs: tuple[bool, ...] | None = None,
        chunk: int = 100,
        actions: jax.Array | None = None,
    ) -> jax.Array:
        """Observe the first `context_frames` frames of obs (B, T, H, W, C) at the levels `use_obs`
        names (level 0 first; None: all), then predict the rest from the priors alone, given the
        actions (B, T, A) of all T frames (a model with actions; None: zeros). Returns predicted frame
        means (B, T - context_frames, H, W, C)."""
        t = obs.shape[1]
        assert 0 < context_frames < t, f"context_frames {context_frames} must be in (0, {t})"
        top = self.clock.factor ** (self.levels - 1)
        assert context_frames % top == 0, f"context_frames {context_frames} must divide by k**(levels-1) = {top}"
        inputs = self.encode(obs[:, :context_frames])
        conditions = self.level_actions(actions, obs.shape[0], t)
        seen, ahead = None, None
        if conditions is not None:  # each level's steps of the context, then those predicted
            seen = [c[:, : inp.shape[1]] for c, inp in zip(conditions, inputs)]
            ahead = [c[:, inp.shape[1] :] for c, inp in zip(conditions, inputs)]
        key_ctx, key_pred = jax.random.split(key)
        _, posts = self.hierarchy(inputs, key_ctx, use_obs, actions=seen)
        last = [last_step(p) for p in posts]
        totals = self.clock.lengths(t)
        lengths = [total - inp.shape[1] for total, inp in zip(totals, inputs)]
        blank = [jnp.zeros((obs.shape[0], n, inp.shape[-1])) for n, inp in zip(lengths, inputs)]
        priors, _ = self.hierarchy(blank, key_pred, (False,) * self.levels, last, offset=context_frames, actions=ahead)
        return self.decode_chunked(self.cells[0].output(priors[0]), chunk)


def batch_mean_time_sum(x: jax.Array) -> jax.Array:
    """(B, T) -> the mean over the batch of the sum over time: a sequence's total, per video."""
    return jnp.mean(jnp.sum(x, 1))


def elbo_terms(
    config: ModelConfig, cells, obs: jax.Array, decoded: jax.Array, priors: list, posts: list
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """loss = (NLL + sum_l KL_l) / T with beta, free_nats and KL balancing as configured; each level's
    KL is its cell's `divergence`. Returns (loss, metrics) with loss, nll_term, kl_term, neg_elbo and per level
    the KL and the cell's `log_terms` (for the RSSM cell the prior and posterior entropies), each summed
    over the level's steps and averaged over the batch (the official summaries' avg_kl_prior_posterior,
    avg_entropy_prior, avg_entropy_posterior)."""
    assert obs.shape == decoded.shape, f"obs {obs.shape} vs decoded {decoded.shape}"
    b, t = obs.shape[:2]
    std = config.dec_stddev
    sq = jnp.square((obs - decoded) / std).reshape(b, t, -1)
    # the constant added once per frame, not per pixel: XLA:CPU's reduction of (sq + c) ran 7x slower
    nll_bt = 0.5 * (jnp.sum(sq, -1) + sq.shape[-1] * jnp.log(2 * jnp.pi * std**2))
    nll = batch_mean_time_sum(nll_bt)
    metrics, kl_total, kl_plain = {}, 0.0, 0.0
    sg = lambda tree: jax.tree.map(jax.lax.stop_gradient, tree)  # noqa: E731
    for level, (cell, prior, post, beta) in enumerate(zip(cells, priors, posts, config.betas)):
        kl_bt = cell.divergence(post, prior)
        p = config.kl_grad_post_perc
        if p is None:
            kl = batch_mean_time_sum(kl_bt)
        else:  # (1 - p) KL(sg(q) || p) + max(1, p KL(q || sg(p))), as the official code (on copies)
            to_prior = cell.divergence(sg(post), prior)
            to_post = cell.divergence(post, sg(prior))
            kl = (1 - p) * batch_mean_time_sum(to_prior) + jnp.maximum(1.0, p * batch_mean_time_sum(to_post))
        if config.free_nats is not None:
            kl = jnp.maximum(0.0, kl - config.free_nats)
        kl_total = kl_total + beta * kl
        metrics[f"kl/level{level}"] = batch_mean_time_sum(kl_bt)
        kl_plain = kl_plain + metrics[f"kl/level{level}"]
        for name, value in cell.log_terms(prior, post).items():
            metrics[f"{name}/level{level}"] = batch_mean_time_sum(value)
    loss = (nll + kl_total) / t
    # neg_elbo: the bound itself (no beta, free nats or balancing), comparable across those settings
    metrics.update(loss=loss, nll_term=nll / t, kl_term=kl_total / t, neg_elbo=(nll + kl_plain) / t)
    return loss, metrics


def count_params(model: nnx.Module) -> int:
    """Trained parameters: with the RSSM cell, equal to the official model's count (mmnist 12,466,817,
    mazes 12,470,147, minerl 34,396,627)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
