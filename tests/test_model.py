"""The model: shapes per level, finite loss, the loss options as defined, reference figures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import nnx

import config as cfg_lib
import cwvae
from cwvae import CellState


def make_model(config):
    return cwvae.CWVAE(config, rngs=nnx.Rngs(0))


def video(config, b=2, t=None, seed=1):
    t = t or config.seq_len
    return jax.random.uniform(jax.random.key(seed), (b, t, 64, 64, config.channels))


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
        {"channels": 3, "cell_mean_only": True, "channels_mult": 2},
        {"levels": 1, "open_loop_ctx": 1},
        {"levels": 4, "tmp_abs_factor": 2, "open_loop_ctx": 8, "cell_reset_state": True},
        {"levels": 3, "tmp_abs_factor": 8, "open_loop_ctx": 64, "eval_seq_len": 70, "seq_len": 20, "use_obs": "TFT"},
    ],
)
def test_shapes_and_finite_loss(tiny, overrides):
    c = tiny(**overrides)
    model = make_model(c)
    obs = video(c)
    decoded, priors, posts = model(obs, jax.random.key(0))
    assert decoded.shape == obs.shape
    assert len(priors) == len(posts) == c.levels
    loss, metrics = model.loss(obs, jax.random.key(0))
    assert np.isfinite(float(loss))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert {f"kl/level{lv}" for lv in range(c.levels)} <= set(metrics)
    pred = model.open_loop(video(c, t=c.eval_seq_len), jax.random.key(0), c.open_loop_ctx)
    assert pred.shape == (2, c.eval_seq_len - c.open_loop_ctx, 64, 64, c.channels)
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
    obs = jnp.full((b, t, 64, 64, 1), 0.5)
    return cwvae.elbo_terms(cwvae.LossOptions.from_config(config), obs, jnp.zeros_like(obs), priors, posts)


def level_kls(priors, posts):
    return [
        float(jnp.mean(jnp.sum(cwvae.gaussian_kl(q.mean, q.stddev, p.mean, p.stddev), 1)))
        for p, q in zip(priors, posts)
    ]


def test_loss_is_nll_plus_kl_per_frame():
    c = cfg_lib.Config(levels=2, dec_stddev=0.5)
    priors, posts = fake_states()
    loss, m = terms(c, priors, posts)
    nll = 4 * 64 * 64 * 0.5 * ((0.5 / 0.5) ** 2 + np.log(2 * np.pi * 0.25))
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


def test_kl_balancing_value_and_gradient_split():
    priors, posts = fake_states(levels=1)
    kl = level_kls(priors, posts)[0]
    assert kl > 1.0
    p = 0.2
    c = cfg_lib.Config(levels=1, kl_grad_post_perc=p)
    _, m = terms(c, priors, posts)
    assert float(m["kl_term"]) == pytest.approx(((1 - p) * kl + p * max(1.0, kl)) / 4, rel=1e-5)

    def kl_term(prior_mean, post_mean, config):
        pr = [priors[0]._replace(mean=prior_mean)]
        po = [posts[0]._replace(mean=post_mean)]
        return terms(config, pr, po)[1]["kl_term"]

    plain = cfg_lib.Config(levels=1)
    g_prior_bal, g_post_bal = jax.grad(kl_term, (0, 1))(priors[0].mean, posts[0].mean, c)
    g_prior, g_post = jax.grad(kl_term, (0, 1))(priors[0].mean, posts[0].mean, plain)
    np.testing.assert_allclose(g_prior_bal, (1 - p) * g_prior, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_post_bal, p * g_post, rtol=1e-5, atol=1e-7)  # the posterior half gets its share


def test_use_obs_false_level_has_zero_kl(tiny):
    c = tiny(use_obs="TF")
    _, m = make_model(c).loss(video(c), jax.random.key(0))
    assert float(m["kl/level1"]) == 0.0 and float(m["kl/level0"]) > 0.0


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


@pytest.mark.parametrize(
    "name, ours, official", [("mmnist", 12_465_617, 12_466_817), ("minerl", 34_391_827, 34_396_627)]
)
def test_parameter_counts_match_spec(name, ours, official):
    c = cfg_lib.parse(["--config", str(ROOT / f"configs/{name}.yml")])
    model = nnx.eval_shape(lambda: cwvae.CWVAE(c, rngs=nnx.Rngs(0)))
    n = cwvae.count_params(model)
    assert n == ours
    assert n + 2 * c.cell_deter_size * c.levels == official  # Keras' GRU: two extra bias vectors per cell
