"""The optimizer: Keras' legacy Adam as the official code runs it, against its formula and optax.adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import config as cfg_lib
import optim
import steps

B1, B2, EPS = 0.9, 0.999, 1e-4


def keras_adam_numpy(params, grads, lr, b1=B1, b2=B2, eps=EPS):
    """A plain transcription of TensorFlow's ResourceApplyAdam in float64: the parameters after each
    of the given gradients."""
    p = {k: np.asarray(x, np.float64) for k, x in params.items()}
    m = {k: np.zeros_like(x) for k, x in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    trajectory = []
    for t, g in enumerate(grads, start=1):
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            p[k] = p[k] - lr_t * m[k] / (np.sqrt(v[k]) + eps)
        trajectory.append(dict(p))
    return trajectory


def test_keras_adam_matches_its_formula():
    keys = iter(jax.random.split(jax.random.key(0), 18))
    shapes = {"kernel": (3, 4), "bias": (4,), "gru": (2, 3, 5)}
    params = {k: jnp.zeros(s) for k, s in shapes.items()}  # Adam does not read them: p_t is the sum of updates
    # Gradient scales from below eps to well above it: where the two Adams differ most and least.
    grads = [{k: 10.0 ** (i - 5) * jax.random.normal(next(keys), s) for k, s in shapes.items()} for i in range(6)]
    lr = 0.1
    tx = steps.optimizer(steps.OptimizerOptions(lr=lr, clip_grad_norm_by=1e30))  # keras by default
    state, p = tx.init(params), params
    for g, expected in zip(grads, keras_adam_numpy(params, grads, lr)):
        updates, state = jax.jit(tx.update)(g, state, p)
        p = optax.apply_updates(p, updates)
        for k in shapes:
            error = np.linalg.norm(p[k] - expected[k]) / np.linalg.norm(expected[k])
            assert error < 1e-6, (k, error)
    count = state[1][0].count  # orbax-friendly state: arrays only, the count an int32 array
    assert count.dtype == jnp.int32 and int(count) == len(grads)


def test_first_step_differs_from_optax_adam_by_the_effective_eps():
    """At t = 1 optax.adam moves by -lr g / (|g| + eps) and Keras by -lr g / (|g| + eps / sqrt(1 - b2)):
    m_1 = (1 - b1) g, v_1 = (1 - b2) g^2, lr_1 = lr sqrt(1 - b2) / (1 - b1), so Keras' update is
    -lr sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps)."""
    lr = 1e-3
    g = jnp.array([-3e-4, -1e-4, 1e-5, 1e-4, 1e-2, 1.0])  # |g| around eps: the two differ most
    u_optax, _ = optax.adam(lr, eps=EPS).update(g, optax.adam(lr, eps=EPS).init(g))
    u_keras, _ = optim.keras_adam(lr).update(g, optim.keras_adam(lr).init(g))
    gn = np.asarray(g, np.float64)
    np.testing.assert_allclose(u_optax, -lr * gn / (np.abs(gn) + EPS), rtol=1e-5)  # optax: float32 1 - b2
    np.testing.assert_allclose(u_keras, -lr * gn / (np.abs(gn) + EPS / np.sqrt(1 - B2)), rtol=1e-6)
    ratio = (np.abs(gn) + EPS) / (np.abs(gn) + EPS / np.sqrt(1 - B2))  # keras / optax
    np.testing.assert_allclose(np.asarray(u_keras) / np.asarray(u_optax), ratio, rtol=1e-5)
    assert ratio[3] == pytest.approx(2 / (1 + 1 / np.sqrt(1 - B2)))  # |g| = eps: 16x smaller first step


def test_make_optimizer_picks_keras_by_default_and_optax_on_request():
    def first_update(config):
        tx = steps.make_optimizer(config)
        g = {"w": jnp.full((2,), EPS)}
        return float(tx.update(g, tx.init(g), g)[0]["w"][0])

    keras, optax_form = cfg_lib.Config(), cfg_lib.Config(adam="optax")
    assert keras.adam == "keras" and steps.OptimizerOptions.from_config(optax_form).adam == "optax"
    lr = keras.lr
    assert first_update(keras) == pytest.approx(-lr / (1 + 1 / np.sqrt(1 - B2)), rel=1e-5)
    assert first_update(optax_form) == pytest.approx(-lr / 2, rel=1e-5)
