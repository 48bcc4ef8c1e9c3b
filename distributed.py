"""Multi-process runs: one JAX process per host (or per accelerator), joined by jax.distributed.

A run on several processes is the same experiment as on one. Every process builds the same model
and mesh over all global devices; each reads only its shard of the training clips
(``data.make_train_loader`` splits the global clip stream by ``jax.process_index()``);
``global_batch`` joins the shards into one batch of ``config.batch_size`` sharded along 'data';
and process 0 alone writes files and logs (``is_main``). Checkpoints are written by all processes
together (orbax coordinates them).

Launch each process with the three variables set, or under a cluster that JAX detects itself
(Cloud TPU pod, SLURM with several tasks, Open MPI, Kubernetes job); with neither, a run is the
usual single process:

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python train.py ...
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python train.py ...

Every process must see the same logdir (a shared filesystem): orbax writes one checkpoint from all
of them. With several processes on one GPU host, give each its GPU (JAX_LOCAL_DEVICE_IDS=<i>).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from errors import ConfigError

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(env: Mapping[str, str] | None = None) -> None:
    """Join the other processes of a multi-process run; do nothing for a single process.

    Must run before anything touches a JAX device (``jax.devices()``, the first array), so first
    thing in main. Wrong variables raise ConfigError (one line naming the variable)."""
    env = os.environ if env is None else env
    explicit = explicit_params(env)
    if explicit is None and not cluster_detected():
        return
    if jax.distributed.is_initialized():
        return
    # CPU processes exchange gradients through gloo (the default today; pinned, since MPI needs
    # an MPI launch). The setting only concerns the CPU backend, so GPU/TPU runs are unaffected.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**(explicit or {}))


def explicit_params(env: Mapping[str, str]) -> dict | None:
    """coordinator_address, num_processes and process_id from the environment; None when none
    of the three variables is set."""
    given = [name for name in ENV_VARS if env.get(name)]
    if not given:
        return None
    if len(given) < len(ENV_VARS):
        missing = next(name for name in ENV_VARS if name not in given)
        raise ConfigError(
            f"environment variable {missing} is not set but {', '.join(given)} is; a multi-process run "
            f"needs all of {', '.join(ENV_VARS)} (none for a single process)"
        )
    address = env["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"environment variable JAX_COORDINATOR_ADDRESS got {address!r}; expected host:port of process 0"
        )
    count = _env_int(env, "JAX_NUM_PROCESSES", "an integer >= 1")
    if count < 1:
        raise ConfigError(f"environment variable JAX_NUM_PROCESSES got {count}; expected an integer >= 1")
    index = _env_int(env, "JAX_PROCESS_ID", f"an integer from 0 to {count - 1}")
    if not 0 <= index < count:
        raise ConfigError(
            f"environment variable JAX_PROCESS_ID got {index}; expected an integer from 0 to {count - 1} "
            f"(JAX_NUM_PROCESSES is {count})"
        )
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def _env_int(env: Mapping[str, str], name: str, valid: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name} got {env[name]!r}; expected {valid}") from None


def cluster_detected() -> bool:
    """Whether JAX's own auto-detection (``jax.distributed.initialize()`` with no arguments) finds
    a cluster of more than one process. Checks the cluster environments in JAX's order, skipping
    the opt-in ones (mpi4py), as JAX does; a single-task SLURM job or single-host TPU VM counts as
    no cluster. JAX has no public API for this: the private registry is read defensively, and
    explicit variables still work should it move."""
    try:
        from jax._src.clusters import ClusterEnv

        envs = [env for env in ClusterEnv._cluster_types if not env.opt_in_only_method]
    except (ImportError, AttributeError):  # pragma: no cover - JAX moved its private registry
        return False
    with warnings.catch_warnings():  # Kubernetes without the `kubernetes` package warns; no cluster
        warnings.simplefilter("ignore")
        env = next((env for env in envs if env.is_env_present()), None)
        return env is not None and env.get_process_count() > 1


def is_main() -> bool:
    """Whether this is process 0, the one that writes config.yml, summaries and logs."""
    return jax.process_index() == 0


def from_main(value: int) -> int:
    """Process 0's value of an int in [0, 2**32) in every process, e.g. a seed drawn at start-up
    (each process would draw its own). Every process must call it."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.uint32(value)))


def any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process, e.g. a stop signal that reached one of them: all
    processes must stop at the same step, or the others wait forever in the next collective.
    Every process must call it; it waits for the device work queued before it."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def global_batch(local: Any, mesh: jax.sharding.Mesh) -> Any:
    """This process's rows (B / process_count, ...) as its part of the global batch (B, ...),
    sharded along the mesh's 'data' axis; `local` is an array or a tuple of them (frames and their
    actions), each split alike. Process p's rows land on its own devices, so they are
    rows [p * B / n, (p + 1) * B / n) of the global batch when the mesh lists devices by process
    (jax.make_mesh does). With one process this is jax.device_put(local, P('data'))."""
    sharding = NamedSharding(mesh, P("data"))

    def one(rows: np.ndarray) -> jax.Array:
        batch = jax.make_array_from_process_local_data(sharding, rows)
        assert batch.shape[0] == rows.shape[0] * jax.process_count(), (batch.shape, rows.shape, jax.process_count())
        return batch

    return jax.tree.map(one, local)
