"""Experiment folders: where a run lives, its saved config, its checkpoints and its wandb run.

Training writes, and evaluation reads, one folder per experiment under ``logdir/<dataset>/``:
``config.yml`` (the resolved config), ``checkpoints/<step>/`` (orbax: parameters and optimizer
state under ``state/``, the data loader's position under ``data/``) and the summaries.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

import config as cfg_lib
import steps
from config import Config, ConfigError


def run_dir(config: Config) -> pathlib.Path:
    """logdir/dataset/<run name>: where checkpoints, config.yml and summaries live."""
    return pathlib.Path(config.logdir) / config.dataset / config.run_name_prefix()


def checkpoint_manager(exp_dir: pathlib.Path, config: Config) -> ocp.CheckpointManager:
    """Latest checkpoint kept, plus a permanent one every save_named_model_every steps;
    orbax writes each to a temporary folder and renames it (atomic)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        keep_period=config.save_named_model_every,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(exp_dir.absolute() / "checkpoints", options=options)


def save_checkpoint(manager, step: int, params, opt_state, data_state: dict) -> None:
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
            data=ocp.args.JsonSave(data_state),
        ),
        force=True,
    )
    manager.wait_until_finished()


def restore_checkpoint(manager, step: int, params, opt_state) -> tuple[Any, Any, dict]:
    """Restore into the structure (and shardings) of the given params and opt_state."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
    try:
        out = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"checkpoint {manager.directory}/{step} does not match the config's model: {str(e).splitlines()[0][:200]}"
        ) from None
    return out.state["params"], out.state["opt_state"], out.data


def check_shapes(state_dir: pathlib.Path, params) -> None:
    """Compare the stored parameter shapes with the model's before restoring, so a wrong
    config.yml gives a one-line error naming the first parameter that differs."""

    def name(path) -> str:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

    stored = ocp.PyTreeCheckpointer().metadata(state_dir.absolute()).item_metadata["params"]
    stored = {name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(stored)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params)):
        want = stored.get(name(path))
        if want != leaf.shape:
            raise ConfigError(
                f"checkpoint '{state_dir.parent}' does not match config.yml's model: parameter {name(path)} "
                f"is {want} in the checkpoint and {leaf.shape} in the model"
            )


def load_params(checkpoint_dir: pathlib.Path, config: Config, step: int | None = None) -> tuple[nnx.GraphDef, Any, int]:
    """The model of a run for evaluation: (graphdef, params, step) from its checkpoints folder."""
    graphdef, params = steps.abstract_model(config)  # shapes only
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
    options = ocp.CheckpointManagerOptions(create=False)
    with ocp.CheckpointManager(pathlib.Path(checkpoint_dir).absolute(), options=options) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f"no checkpoint in '{checkpoint_dir}'; train first or pass the experiment folder")
        check_shapes(pathlib.Path(checkpoint_dir) / str(step) / "state", params)
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), abstract)
        args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=args))
        except (ValueError, KeyError, TypeError) as e:
            reason = str(e).splitlines()[0].split(". Truncating")[0][:200]
            raise ConfigError(
                f"checkpoint '{checkpoint_dir}/{step}' does not match config.yml's model: {reason}"
            ) from None
    return graphdef, restored.state["params"], step


def resolve_run_config(config: Config) -> Config:
    """Take the seed of an existing run in the experiment folder when none was given, so
    rerunning the same command resumes that run; otherwise draw one and save it."""
    saved = run_dir(config) / "config.yml"
    if config.seed is None and saved.exists():
        seed = cfg_lib.load_yaml(str(saved)).get("seed")
        config = dataclasses.replace(config, seed=seed)
    return cfg_lib.resolve_seed(config)


def init_wandb(config: Config):
    """A wandb run that never prompts; sweeps' run config overrides the config."""
    import wandb

    config = cfg_lib.resolve_wandb_mode(config)
    pathlib.Path(config.logdir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        dir=config.logdir,
        config=config.to_dict(),
        settings=wandb.Settings(silent=True),
    )
    return run, cfg_lib.with_wandb(config, dict(run.config), jax.device_count())
