"""The model: shapes per level, finite loss, the loss options as defined, reference figures."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import nnx

import config as cfg_lib
import cwvae
import steps
from cwvae import CellState


def make_model(config):
    return cwvae.CWVAE(cwvae.ModelConfig.from_config(config), rngs=nnx.Rngs(0))


def video(config, b=2, t=None, seed=1):
    t = t or config.seq_len
    return jax.random.uniform(jax.random.key(seed), (b, t, *frame_shape(config)))


def frame_shape(config) -> tuple[int, int, int]:
    """(H, W, C) of a frame of the config's dataset (its entry in dataspec.py)."""
    return config.frame_size, config.frame_size, config.channels


def param_name(path) -> str:
    """A parameter's path in the state tree as 'cells/0/gru/dense_h/bias'."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def biases(params) -> dict[str, jax.Array]:
    """Every bias: each parameter whose path ends in 'bias', by name."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {param_name(path): x for path, x in leaves if param_name(path).endswith("bias")}


def random_biases(params, only: str | None = None, seed: int = 0):
    """params with every bias (each parameter whose path ends in 'bias'), or only the one named, set
    to random non-zero values. Keras and Flax initialise biases to zero, so a model fresh from its
    initialiser cannot tell a layer that ignores its bias from one that adds it."""

    def set_bias(path, x):
        name = param_name(path)
        if not name.endswith("bias") or only not in (None, name):
            return x
        return 0.5 * jax.random.normal(jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode())), x.shape)

    return jax.tree_util.tree_map_with_path(set_bias, params)


def with_random_biases(model):
    graphdef, params = nnx.split(model)
    return nnx.merge(graphdef, random_biases(params))


def test_level_lengths_of_the_paper():
    assert cwvae.Clock(3, 6).lengths(100) == [100, 17, 3]
    assert cwvae.Clock(3, 6).lengths(1000) == [1000, 167, 28]


def test_clock_merges_each_tick_and_repeats_each_parent_step():
    clock = cwvae.Clock(3, 2)
    x = jnp.arange(5.0)[None, :, None]  # frames 0..4
    np.testing.assert_array_equal(clock.merge(x, 1)[0, :, 0], [0 + 1, 2 + 3, 4])  # padded to whole ticks
    np.testing.assert_array_equal(clock.merge(x, 2)[0, :, 0], [0 + 1 + 2 + 3, 4])
    parent = jnp.array([10.0, 20.0, 30.0])[None, :, None]
    np.testing.assert_array_equal(clock.repeat(parent, 5)[0, :, 0], [10, 10, 20, 20, 30])


def test_hierarchy_lengths_and_shapes_mmnist_sized_clock(tiny):
    c = tiny(levels=3, tmp_abs_factor=6, open_loop_ctx=36, eval_seq_len=40, seq_len=100)
    model = make_model(c)
    inputs = model.encode(video(c, b=1))
    assert [x.shape[1] for x in inputs] == [100, 17, 3]
    priors, posts = model.hierarchy(inputs, jax.random.key(0))
    for level, n in enumerate([100, 17, 3]):
        assert posts[level].sample.shape == (1, n, c.cell_stoch_size)
        assert priors[level].det_state.shape == (1, n, c.cell_deter_size)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"dataset": "mazes", "cell_mean_only": True, "channels_mult": 2},  # 3 channels
        {"levels": 1, "open_loop_ctx": 1},
        {"levels": 4, "tmp_abs_factor": 2, "open_loop_ctx": 8, "cell_reset_state": True},
        {"levels": 3, "tmp_abs_factor": 8, "open_loop_ctx": 64, "eval_seq_len": 70, "seq_len": 20, "use_obs": "TFT"},
    ],
)
def test_shapes_and_finite_loss(tiny, overrides):
    c = tiny(**overrides)
    graphdef, state = nnx.split(with_random_biases(make_model(c)))
    obs, key = video(c), jax.random.key(0)

    @jax.jit  # one program for the three calls (op by op, each would compile its scans anew)
    def run(state, obs, long):
        model = nnx.merge(graphdef, state)
        open_loop = model.open_loop(long, key, c.open_loop_ctx, tuple(c.use_obs_per_level()))
        return model(obs, key), model.loss(obs, key), open_loop

    (decoded, priors, posts), (loss, metrics), pred = run(state, obs, video(c, t=c.eval_seq_len))
    assert decoded.shape == obs.shape
    assert len(priors) == len(posts) == c.levels
    assert np.isfinite(float(loss))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert {f"kl/level{lv}" for lv in range(c.levels)} <= set(metrics)
    assert pred.shape == (2, c.eval_seq_len - c.open_loop_ctx, *frame_shape(c))
    assert np.all(np.isfinite(np.asarray(pred)))


def test_gaussian_kl_matches_monte_carlo():
    k = jax.random.split(jax.random.key(0), 4)
    qm, pm = jax.random.normal(k[0], (5,)), jax.random.normal(k[1], (5,))
    qs, ps = jnp.exp(0.3 * jax.random.normal(k[2], (5,))), jnp.exp(0.3 * jax.random.normal(k[3], (5,)))
    x = qm + qs * jax.random.normal(jax.random.key(1), (400_000, 5))
    logq = jax.scipy.stats.norm.logpdf(x, qm, qs).sum(-1)
    logp = jax.scipy.stats.norm.logpdf(x, pm, ps).sum(-1)
    assert float(cwvae.gaussian_kl(qm, qs, pm, ps)) == pytest.approx(float(jnp.mean(logq - logp)), abs=0.02)
    assert float(cwvae.gaussian_kl(qm, qs, qm, qs)) == pytest.approx(0.0, abs=1e-6)


def fake_states(levels=2, b=3, t=4, s=5, seed=0):
    """Random prior/posterior sequences with a known KL, for checking the loss options."""
    keys = iter(jax.random.split(jax.random.key(seed), 8 * levels))
    priors, posts = [], []

    def state(k1, k2, n):
        mean = jax.random.normal(k1, (b, n, s))
        std = jnp.exp(0.5 * jax.random.normal(k2, (b, n, s)))
        return CellState(mean, std, mean, jnp.zeros((b, n, 1)), jnp.zeros((b, n, 1)))

    for level in range(levels):
        n = t // (2**level)
        priors.append(state(next(keys), next(keys), n))
        posts.append(state(next(keys), next(keys), n))
    return priors, posts


def terms(config, priors, posts, b=3, t=4):
    obs = jnp.full((b, t, *frame_shape(config)), 0.5)
    model_config = cwvae.ModelConfig.from_config(config)
    cells = nnx.eval_shape(lambda: make_model(config)).cells
    return cwvae.elbo_terms(model_config, cells, obs, jnp.zeros_like(obs), priors, posts)


def level_kls(priors, posts):
    return [
        float(jnp.mean(jnp.sum(cwvae.gaussian_kl(q.mean, q.stddev, p.mean, p.stddev), 1)))
        for p, q in zip(priors, posts)
    ]


def test_loss_is_nll_plus_kl_per_frame():
    c = cfg_lib.Config(levels=2, dec_stddev=0.5)
    priors, posts = fake_states()
    loss, m = terms(c, priors, posts)
    nll = 4 * np.prod(frame_shape(c)) * 0.5 * ((0.5 / 0.5) ** 2 + np.log(2 * np.pi * 0.25))
    assert float(m["nll_term"]) == pytest.approx(nll / 4, rel=1e-5)
    assert float(m["kl_term"]) == pytest.approx(sum(level_kls(priors, posts)) / 4, rel=1e-5)
    assert float(loss) == pytest.approx(float(m["nll_term"] + m["kl_term"]), rel=1e-6)


def test_beta_per_level_and_scalar():
    priors, posts = fake_states()
    kls = level_kls(priors, posts)
    _, m = terms(cfg_lib.Config(levels=2, beta=[0.5, 3.0]), priors, posts)
    assert float(m["kl_term"]) == pytest.approx((0.5 * kls[0] + 3.0 * kls[1]) / 4, rel=1e-5)
    _, m = terms(cfg_lib.Config(levels=2, beta=2.0), priors, posts)
    assert float(m["kl_term"]) == pytest.approx(2.0 * sum(kls) / 4, rel=1e-5)


def test_free_nats_clips_each_level():
    priors, posts = fake_states()
    kls = level_kls(priors, posts)
    free = (kls[0] + kls[1]) / 2  # between the two levels' KLs: one is clipped to 0
    _, m = terms(cfg_lib.Config(levels=2, free_nats=free), priors, posts)
    assert float(m["kl_term"]) == pytest.approx(sum(max(0.0, k - free) for k in kls) / 4, rel=1e-5)


def balanced_kl_and_gradients(p):
    """The KL term of fake_states with kl_grad_post_perc p, and its gradients with respect to the
    prior's and the posterior's means, with p and without balancing (None)."""
    priors, posts = fake_states(levels=1)

    def kl_term(prior_mean, post_mean, config):
        pr = [priors[0]._replace(mean=prior_mean)]
        po = [posts[0]._replace(mean=post_mean)]
        return terms(config, pr, po)[1]["kl_term"]

    args = (priors[0].mean, posts[0].mean)
    balanced = cfg_lib.Config(levels=1, kl_grad_post_perc=p)
    grads, plain_grads = (jax.grad(kl_term, (0, 1))(*args, c) for c in (balanced, cfg_lib.Config(levels=1)))
    return level_kls(priors, posts)[0], float(kl_term(*args, balanced)) * 4, grads, plain_grads  # kl_term is / T = 4


def test_kl_balancing_value_and_gradient_split():
    """p KL > 1: (1 - p) KL(sg(q) || p) + max(1, p KL(q || sg(p))) = KL, its gradient split (1 - p)
    to the prior and p to the posterior (the posterior half does get its share here)."""
    p = 0.2
    kl, value, (g_prior_bal, g_post_bal), (g_prior, g_post) = balanced_kl_and_gradients(p)
    assert p * kl > 1.0
    assert value == pytest.approx((1 - p) * kl + p * kl, rel=1e-5)
    np.testing.assert_allclose(g_prior_bal, (1 - p) * g_prior, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_post_bal, p * g_post, rtol=1e-5, atol=1e-7)


def test_kl_balancing_gives_the_posterior_one_free_nat_after_weighting():
    """p KL < 1: the max is outside the product (the official formula), so the term is (1 - p) KL + 1
    and the posterior gets no gradient from it; with p * max(1, KL) it would be (1 - p) KL + p KL."""
    p = 0.005
    kl, value, (g_prior_bal, g_post_bal), (g_prior, _) = balanced_kl_and_gradients(p)
    assert p * kl < 1.0 < kl
    assert value == pytest.approx((1 - p) * kl + 1.0, rel=1e-6)
    np.testing.assert_allclose(g_prior_bal, (1 - p) * g_prior, rtol=1e-5, atol=1e-7)
    assert not np.any(np.asarray(g_post_bal))


def test_logged_level_terms_are_batch_means_of_time_sums():
    """kl, entropy_prior and entropy_posterior per level, as the official summaries log them."""
    priors, posts = fake_states()
    _, m = terms(cfg_lib.Config(levels=2), priors, posts)

    def entropy(std):  # closed form, summed over the state and over time, averaged over the batch
        return float(np.mean(np.sum(0.5 * np.log(2 * np.pi * np.e * np.asarray(std, np.float64) ** 2), (1, 2))))

    for level, kl in enumerate(level_kls(priors, posts)):
        assert float(m[f"kl/level{level}"]) == pytest.approx(kl, rel=1e-6)
        assert float(m[f"entropy_prior/level{level}"]) == pytest.approx(entropy(priors[level].stddev), rel=1e-5)
        assert float(m[f"entropy_posterior/level{level}"]) == pytest.approx(entropy(posts[level].stddev), rel=1e-5)


def test_training_observes_every_level_and_use_obs_only_changes_open_loop(tiny):
    """use_obs chooses the levels that observe the context frames of open-loop prediction (eval's
    --use_obs reaches it through steps.open_loop); training always observes all levels."""
    every, some = tiny(), tiny(use_obs="TF")
    obs = video(every)
    train_loss = [float(make_model(c).loss(obs, jax.random.key(0))[0]) for c in (every, some)]
    assert train_loss[0] == train_loss[1]
    videos = (255 * video(every, t=every.eval_seq_len)).astype(jnp.uint8)
    keys = jax.random.split(jax.random.key(0), len(videos))
    preds = []
    for c in (every, some):
        graphdef, params = steps.init_model(c)
        preds.append(
            np.asarray(
                steps.open_loop(graphdef, c.open_loop_ctx, c.ssim_data_range, tuple(c.use_obs_per_level()))(
                    params, videos, keys
                )[0]
            )
        )
    assert np.abs(preds[0] - preds[1]).max() > 1e-3


def test_mean_only_samples_are_means(tiny):
    c = tiny(cell_mean_only=True)
    model = make_model(c)
    _, priors, posts = model(video(c), jax.random.key(0))
    np.testing.assert_array_equal(posts[0].sample, posts[0].mean)
    # deterministic model: the key does not matter
    a = model.loss(video(c), jax.random.key(0))[0]
    b = model.loss(video(c), jax.random.key(1))[0]
    assert float(a) == float(b)


def test_reset_state_zeroes_sample_at_parent_ticks(tiny):
    c = tiny(cell_reset_state=True)
    model = make_model(c)
    keep = model.clock.keep_mask(0, 9, 0, reset=True)[:, 0, 0]
    np.testing.assert_array_equal(keep, [0, 1, 1, 1, 0, 1, 1, 1, 0])  # k = 4
    assert np.all(np.asarray(model.clock.keep_mask(c.levels - 1, 5, 0, reset=True)) == 1)  # top level: no parent
    a = model.loss(video(c), jax.random.key(0))[0]
    b = make_model(tiny()).loss(video(c), jax.random.key(0))[0]
    assert float(a) != float(b)


def test_same_key_same_loss_other_key_other_loss(tiny):
    c = tiny()
    model = make_model(c)
    obs = video(c)
    a, b, d = (float(model.loss(obs, jax.random.key(k))[0]) for k in (0, 0, 1))
    assert a == b and a != d


def test_open_loop_ignores_frames_after_context(tiny):
    c = tiny()
    model = make_model(c)
    obs = video(c, t=c.eval_seq_len)
    changed = obs.at[:, c.open_loop_ctx :].set(0.0)
    a = model.open_loop(obs, jax.random.key(0), c.open_loop_ctx)
    b = model.open_loop(changed, jax.random.key(0), c.open_loop_ctx)
    np.testing.assert_array_equal(a, b)


def test_each_step_is_conditioned_on_the_summed_actions_of_the_previous_tick():
    clock = cwvae.Clock(3, 2)
    actions = jnp.arange(1.0, 6.0)[None, :, None]  # frames 0..4 take actions 1..5
    np.testing.assert_array_equal(clock.previous_ticks(actions, 0)[0, :, 0], [0, 1, 2, 3, 4])  # the previous one
    np.testing.assert_array_equal(clock.previous_ticks(actions, 1)[0, :, 0], [0, 1 + 2, 3 + 4])
    np.testing.assert_array_equal(clock.previous_ticks(actions, 2)[0, :, 0], [0, 1 + 2 + 3 + 4])


@pytest.fixture(scope="module")
def action_rollout(tmp_path_factory):
    """A tiny action-conditioned model (random biases) and its open loop, compiled once, on one video of
    24 frames (8 context) given `actions`; with the prediction given the baseline actions."""
    from conftest import tiny_args

    c = cfg_lib.parse(tiny_args(tmp_path_factory.mktemp("a"), dataset="mazes", use_actions=True))  # 2 levels, k = 4
    graphdef, state = nnx.split(with_random_biases(make_model(c)))
    obs = video(c, b=1, t=c.eval_seq_len)

    @jax.jit
    def rollout(actions):
        return nnx.merge(graphdef, state).open_loop(obs, jax.random.key(0), c.open_loop_ctx, actions=actions)

    actions = jax.random.normal(jax.random.key(2), (1, c.eval_seq_len, 2))
    return c, rollout, actions, rollout(actions)


@pytest.mark.parametrize("taken_after", [7, 13, 15])  # after the last context frame, mid-tick, a tick's last
def test_a_future_action_changes_the_prediction_after_its_frame_and_not_before(action_rollout, taken_after):
    c, rollout, actions, a = action_rollout
    b = rollout(actions.at[:, taken_after].add(5.0))
    frames = c.open_loop_ctx + np.arange(a.shape[1])  # the video frame of each prediction
    np.testing.assert_array_equal(a[:, frames <= taken_after], b[:, frames <= taken_after])
    assert np.all(np.abs(np.asarray(a - b)).max(axis=(0, 2, 3, 4))[frames > taken_after] > 0)


def test_actions_widen_each_level_prior_input_and_nothing_else():
    c = cfg_lib.parse(["--config", str(ROOT / "configs/minerl.yml"), "--use_actions", "true"])
    with_actions = cwvae.count_params(nnx.eval_shape(lambda: make_model(c)))
    assert with_actions == 34_396_627 + c.levels * 11 * c.cell_embed_size  # prior_h1: 11 more inputs per level


@pytest.mark.parametrize("name, official", [("mmnist", 12_466_817), ("mazes", 12_470_147), ("minerl", 34_396_627)])
def test_parameter_counts_match_the_official_model(name, official):
    c = cfg_lib.parse(["--config", str(ROOT / f"configs/{name}.yml")])
    assert cwvae.count_params(nnx.eval_shape(lambda: make_model(c))) == official


def keras_gru_cell(x, h, kernel, recurrent_kernel, bias):
    """Keras' GRUCell(reset_after=True).call, transcribed: gate order z, r, h; bias (2, 3H)."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    n = h.shape[-1]
    mx, mh = x @ kernel + bias[0], h @ recurrent_kernel + bias[1]
    z = sigmoid(mx[:, :n] + mh[:, :n])
    r = sigmoid(mx[:, n : 2 * n] + mh[:, n : 2 * n])
    hh = np.tanh(mx[:, 2 * n :] + r * mh[:, 2 * n :])
    return z * h + (1 - z) * hh


def test_gru_is_keras_gru_cell_under_the_documented_mapping():
    e, n = 3, 4
    gru = cwvae.GRU(e, n, rngs=nnx.Rngs(0))
    shapes = {name: v.shape for name, v in nnx.to_flat_state(nnx.state(gru, nnx.Param))}
    assert shapes == {
        ("dense_i", "kernel"): (e, 3 * n),
        ("dense_i", "bias"): (3 * n,),
        ("dense_h", "kernel"): (n, 3 * n),
        ("dense_h", "bias"): (3 * n,),
    }
    assert not np.any(np.asarray(gru.dense_i.bias[...])) and not np.any(np.asarray(gru.dense_h.bias[...]))
    rng = np.random.default_rng(0)
    kernel, recurrent_kernel, bias = (
        rng.normal(size=(e, 3 * n)),
        rng.normal(size=(n, 3 * n)),
        rng.normal(size=(2, 3 * n)),
    )
    gru.dense_i.kernel.set_value(jnp.asarray(kernel))
    gru.dense_h.kernel.set_value(jnp.asarray(recurrent_kernel))
    gru.dense_i.bias.set_value(jnp.asarray(bias[0]))
    gru.dense_h.bias.set_value(jnp.asarray(bias[1]))
    x, h = rng.normal(size=(5, e)), rng.normal(size=(5, n))
    expected = keras_gru_cell(x, h, kernel, recurrent_kernel, bias)
    np.testing.assert_allclose(gru(jnp.asarray(h), jnp.asarray(x)), expected, rtol=1e-5, atol=1e-6)


def test_every_bias_changes_the_loss(tiny):
    """Set each bias in turn to random values: the loss must change, or a layer ignores its bias."""
    c = tiny()
    graphdef, params = nnx.split(make_model(c))
    obs = video(c)
    loss = jax.jit(lambda p: nnx.merge(graphdef, p).loss(obs, jax.random.key(0))[0])
    names = list(biases(params))
    assert {"decoder/deconvs/3/bias", "cells/0/gru/dense_h/bias", "encoder/dense/0/1/bias"} <= set(names)
    assert not any(np.any(np.asarray(x)) for x in biases(params).values())  # zero-initialised, as Keras
    zero_bias_loss = float(loss(params))
    ignored = [name for name in names if float(loss(random_biases(params, only=name))) == zero_bias_loss]
    assert not ignored, f"the loss does not depend on {ignored}"
