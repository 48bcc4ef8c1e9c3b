"""The official code's optimizer: Keras' (legacy, graph-mode) Adam as an optax transformation.

The official code trains with tf.keras.optimizers.Adam(lr, epsilon=1e-4) in graph mode, which
runs TensorFlow's ResourceApplyAdam: the moments are kept uncorrected, the bias correction is
folded into the step size, and eps is added to sqrt of the uncorrected second moment:

    m_t = b1 m + (1 - b1) g            v_t = b2 v + (1 - b2) g^2
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
    update = -lr_t m_t / (sqrt(v_t) + eps)

optax.adam adds eps to sqrt of the corrected moment instead, so the two agree except for the
effective epsilon: Keras' equals optax's with eps / sqrt(1 - b2^t), 31.6x larger at step 1 (b2 =
0.999) and still 1.26x at step 1000. With eps = 1e-4 that shrinks the early steps of parameters
whose gradients are not well above 3e-3 (step 1) to 1.3e-4 (step 1000).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByKerasAdamState(NamedTuple):
    """Keras Adam's slots: the step count and the uncorrected moments (arrays only, for orbax)."""

    count: jax.Array  # int32 scalar: updates done so far
    mu: optax.Updates  # first moment m
    nu: optax.Updates  # second moment v


def _one_minus_power(b: float, t: jax.Array) -> jax.Array:
    """1 - b^t without float32 cancellation (b2^t is close to 1 for small t): exact to ~1e-7, where
    TensorFlow's float32 1 - pow(b2, t) is 1.3e-5 off at t = 1 (the tests compare with the formula)."""
    return -jnp.expm1(t * math.log(b))


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-4) -> optax.GradientTransformation:
    """Keras' Adam direction lr_t / lr * m_t / (sqrt(v_t) + eps) (see the module docstring); t = 1 at
    the first update."""

    def init_fn(params: optax.Params) -> ScaleByKerasAdamState:
        # two separate trees: the train step donates the state, and one buffer donated twice crashes XLA
        return ScaleByKerasAdamState(
            jnp.zeros([], jnp.int32), optax.tree.zeros_like(params), optax.tree.zeros_like(params)
        )

    def update_fn(updates: optax.Updates, state: ScaleByKerasAdamState, params: optax.Params | None = None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        step = jnp.sqrt(_one_minus_power(b2, t)) / _one_minus_power(b1, t)
        updates = jax.tree.map(lambda m, v: step * m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, ScaleByKerasAdamState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def keras_adam(
    learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-4
) -> optax.GradientTransformation:
    """tf.keras.optimizers.Adam(learning_rate, b1, b2, eps) as the official code runs it (legacy form).
    Differs from optax.adam(learning_rate, b1, b2, eps) only in the effective epsilon, eps / sqrt(1 - b2^t)."""
    return optax.chain(scale_by_keras_adam(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))
