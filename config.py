"""One typed config for training, evaluation and benchmarks.

Values come from, in rising priority: the dataclass defaults below, the YAML file
given by ``--config``, the command line (``--key value`` or ``--key=value``, as a wandb
sweep agent passes them: ``None`` for null, ``16.0`` for an int), and wandb's run config
(sweeps). Every error in them is a ``ConfigError`` (errors.py) whose message names the key, file
or value and what is valid; the scripts print it on one line (cli.py). Each key is declared once,
with its default, its one-line help and its group in `--help` (`key`).

The model's keys live in ``ModelKeys``; the run's config (``Config``) inherits them as flat keys
(``--levels 3``), and the model's own config (``ModelConfig``) adds what the dataset fixes (frame
size, channels). This module is below the model: it imports no model module, nor JAX. What only the
model can check (the cell type, the convolution form) is checked there (``steps.check_model_keys``).

Keys are of two kinds: those that change what a run learns (the model, the loss, the
data, the optimisation, the seed), which identify the experiment and name its folder,
and the output-only keys in ``OUTPUT_ONLY`` (paths, how often to save, evaluation
settings), which may change when a run resumes.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import pathlib
import secrets
import sys
import types
import typing
from typing import Any, Union

import yaml

import dataspec
from errors import ConfigError

# The groups of keys in --help, in its order: what a key is about. Every key names one.
GROUPS = {
    "model": "model (the network and its loss)",
    "data": "data",
    "training": "training",
    "evaluation": "evaluation (training's validation, and eval.py)",
    "output": "output (where files go, how often, what is shown)",
    "eval": "eval.py only",
}


def key(default: Any, doc: str, group: str, added_later: bool = False) -> Any:
    """A config key: its default, the one line `--help` shows for it and its group there (GROUPS).
    `added_later`: a result-changing key added after runs were made; it enters a run's identity only
    when it differs from its default, so the folders of those runs keep their names."""
    assert group in GROUPS, f"group {group!r}; valid: {', '.join(GROUPS)}"
    return dataclasses.field(default=default, metadata={"doc": doc, "group": group, "added_later": added_later})


@dataclasses.dataclass(frozen=True)
class ModelKeys:
    """The model's keys, each declared here once: the run's config (Config) has them as flat keys, the
    model's config (ModelConfig) gets them with what the dataset fixes. A new model key is one line here."""

    levels: int = key(3, "levels of the hierarchy", "model")
    tmp_abs_factor: int = key(6, "clock factor k: level l ticks once every k**l frames", "model")
    dec_stddev: float = key(1.0, "std of the Gaussian decoder", "model")
    enc_dense_layers: int = key(3, "dense layers per level above 0 in the encoder", "model")
    enc_dense_embed_size: int = key(1000, "hidden width of those dense layers", "model")
    cell_type: str = key(
        "RSSMCell", "the cell of every level (cwvae.CELLS): RSSMCell, the official code's", "model", added_later=True
    )
    cell_stoch_size: int = key(20, "stochastic state size", "model")
    cell_deter_size: int = key(200, "GRU (deterministic) state size", "model")
    cell_embed_size: int = key(200, "hidden width in the prior/posterior nets", "model")
    cell_min_stddev: float = key(1e-4, "added to every stddev", "model")
    cell_mean_only: bool = key(False, "sample := mean (no sampling noise)", "model")
    cell_reset_state: bool = key(False, "reset the stochastic sample at each parent tick (VTA-like)", "model")
    channels_mult: int = key(1, "width multiplier of the encoder/decoder convs", "model")
    filters: int = key(32, "base conv width", "model")
    precision: str = key(
        "float32", "conv dtype: float32 or bfloat16 (GPU/TPU); params and dense layers stay float32", "model"
    )
    free_nats: float | None = key(None, "KL per level is max(0, KL - free_nats)", "model")
    kl_grad_post_perc: float | None = key(None, "KL balancing: share of the KL gradient to the posterior", "model")
    use_actions: bool = key(
        False, "condition each level's prior on the previous actions (mazes, minerl)", "model", added_later=True
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig(ModelKeys):
    """The keys that define the model's function: architecture, loss and precision; frozen and
    hashable, so compiled steps are cached per model. Built from a run's config by `from_config`;
    nothing else of the run (paths, logging, evaluation choices, the conv kernels) reaches the model."""

    frame_size: int = 64  # frames are frame_size x frame_size pixels: the dataset's (dataspec.py)
    channels: int = 1  # frame channels: the dataset's
    betas: tuple[float, ...] = (1.0, 1.0, 1.0)  # KL weight per level (level 0 first): key beta
    action_size: int = 0  # width of a frame's action vector: the dataset's with use_actions, else 0

    @classmethod
    def from_config(cls, config: Config) -> ModelConfig:
        """The model's keys of a run's config; the frame size, channels and action width from its dataset."""
        spec = dataspec.get(config.dataset)
        keys = {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelKeys)}
        actions = len(spec.actions) if config.use_actions else 0
        return cls(
            **keys,
            frame_size=spec.frame_size,
            channels=spec.channels,
            betas=tuple(config.beta_per_level()),
            action_size=actions,
        )


@dataclasses.dataclass(frozen=True)
class Config(ModelKeys):
    """A run's config: the model's keys (ModelKeys), then those of the data, training, evaluation and output."""

    beta: float | list | None = key(None, "KL weight: one number or one per level; null: 1", "model")
    # --- data --------------------------------------------------------------------
    config: str | None = key(None, "YAML file with the dataset's overrides (configs/<dataset>.yml)", "data")
    datadir: str = key("data", "root of the prepared (and generated) datasets", "data")
    dataset: str = key("mmnist", "a dataset of dataspec.py: mmnist, mazes or minerl", "data")
    data_source: str = key("generated", "generated (offline stand-in) or paper (the paper's archives)", "data")
    num_gen_train: int = key(1000, "generated source: training videos", "data")
    num_gen_test: int = key(100, "generated source: test videos", "data")
    seq_len: int = key(100, "training sequence length (frames)", "data")
    # --- training ----------------------------------------------------------------
    lr: float = key(3e-4, "Adam learning rate (Adam eps 1e-4)", "training")
    adam: str = key(
        "keras", "keras: the official code's (Keras legacy) Adam; optax: optax.adam (eps after bias fix)", "training"
    )
    batch_size: int = key(50, "global batch, split over all devices", "training")
    num_epochs: int = key(300, "passes over the training split", "training")
    max_steps: int | None = key(None, "stop after this many steps (demos, benchmarks); null: no bound", "training")
    clip_grad_norm_by: float = key(10000.0, "global-norm gradient clipping", "training")
    seed: int | None = key(None, "one seed fixes the whole run; null: drawn once and saved", "training")
    val_seq_len: int | None = key(
        None, "validation clip (frames); null: open_loop_ctx + 100, at most eval_seq_len", "training"
    )
    num_val_batches: int = key(1, "validation batches per summary", "training")
    conv_impl: str = key(
        "auto", "auto: xla on GPU/TPU, onednn (else blocks) on CPU; xla, blocks or onednn (kernels/)", "training"
    )
    # --- evaluation: training's validation, and eval.py ---------------------------
    open_loop_ctx: int = key(36, "context frames before open-loop prediction", "evaluation")
    use_obs: str | None = key(
        None, "per level, whether the posterior sees observations ('TTF'); null: all", "evaluation"
    )
    eval_seq_len: int = key(1000, "evaluation sequence length (frames)", "evaluation")
    eval_batch_size: int = key(10, "videos per compiled rollout batch", "evaluation")
    ssim_data_range: float = key(
        2.0, "SSIM data range; the default reproduces the official protocol, 1.0 is usual", "evaluation"
    )
    # --- output ------------------------------------------------------------------
    logdir: str = key("logs", "root of the experiment folders (eval.py: the run or checkpoint folder)", "output")
    run_name: str | None = key(
        None, "the run's folder under logdir/dataset; null: main keys + hash of the result keys", "output"
    )
    save_gifs: bool = key(True, "log open-loop prediction videos", "output")
    save_scalars_every: int = key(1000, "steps between scalar summaries", "output")
    save_gifs_every: int = key(1000, "steps between video summaries", "output")
    save_model_every: int = key(1000, "steps between (latest) checkpoints", "output")
    save_named_model_every: int = key(5000, "steps between permanent checkpoints", "output")
    wandb_project: str = key("cwvae", "wandb project", "output")
    wandb_mode: str | None = key(
        None, "online, offline or disabled; null: $WANDB_MODE, else offline without API key", "output"
    )
    progress: bool = key(True, "show a tqdm progress bar", "output")
    # --- eval.py only --------------------------------------------------------------
    num_examples: int = key(100, "test videos", "eval")
    num_samples: int = key(1, "samples per video", "eval")
    no_save_grid: bool = key(False, "skip PNG grids", "eval")
    eval_videos: int = key(10, "labelled prediction videos (MP4) for the first N test videos; 0: none", "eval")
    fvd: bool = key(False, "also compute FVD with I3D (slow on CPU)", "eval")
    lpips: bool = key(False, "also compute LPIPS (AlexNet) per frame, best sample per video by it", "eval")
    references: bool = key(True, "also score the trivial predictors of references.py (no rollout: cheap)", "eval")
    protocol: str | None = key(None, "'paper' presets the official evaluation (PROTOCOLS); keys given too win", "eval")
    eval_actions: str = key(
        "given", "use_actions runs: predict given the videos' true actions (given) or none (zero: all zeros)", "eval"
    )

    # --- derived ---------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Frame channels: the dataset's (a key once; files that still name it must agree)."""
        return dataspec.get(self.dataset).channels

    @property
    def frame_size(self) -> int:
        """Frames are frame_size x frame_size pixels: the dataset's."""
        return dataspec.get(self.dataset).frame_size

    def use_obs_per_level(self) -> list[bool]:
        """Per level, whether its posterior sees observations (level 0 first)."""
        if self.use_obs is None:
            return [True] * self.levels
        return [c == "T" for c in self.use_obs]

    def validation_frames(self) -> int:
        """Clip length of training-time validation: val_seq_len, or by default the context plus 100
        predicted frames (the paper's eval_seq_len, up to 1000 frames, is eval.py's)."""
        return self.val_seq_len or min(self.eval_seq_len, self.open_loop_ctx + 100)

    def beta_per_level(self) -> list[float]:
        """KL weight per level (level 0 first)."""
        if self.beta is None:
            return [1.0] * self.levels
        if isinstance(self.beta, list):
            return [float(b) for b in self.beta]
        return [float(self.beta)] * self.levels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def result_keys(self) -> dict[str, Any]:
        """The keys that change what the run learns (every key but the output-only ones; a key added
        after runs were made only when it differs from its default, so their folder names stay), and
        the dataset's channels (a key when the first runs were named)."""
        keys = {
            k: v
            for k, v in self.to_dict().items()
            if k not in OUTPUT_ONLY and not (FIELDS[k].metadata["added_later"] and v == FIELDS[k].default)
        }
        return {**keys, "channels": self.channels}

    def run_name_prefix(self) -> str:
        """The readable part of the run folder's name: the main keys."""
        parts = [
            f"L{self.levels}",
            f"k{self.tmp_abs_factor}",
            f"T{self.seq_len}",
            f"B{self.batch_size}",
            f"lr{self.lr:g}",
            f"z{self.cell_stoch_size}",
            f"h{self.cell_deter_size}",
            self.data_source,
        ]
        if self.use_actions:
            parts.append("actions")
        return "_".join(parts)

    def run_hash(self) -> str:
        """8 hex digits of every result-changing key (the seed only when it was given)."""
        text = json.dumps(self.result_keys(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def default_run_name(self) -> str:
        return f"{self.run_name_prefix()}_{self.run_hash()}"


# Keys that do not change what a run learns: where files go, how often to save or log, how
# validation and evaluation are done. They are left out of the run's identity and may change on resume.
OUTPUT_ONLY = frozenset(
    {
        "config",
        "datadir",
        "logdir",
        "run_name",
        "max_steps",
        "use_obs",
        "num_gen_test",
        "eval_seq_len",
        "open_loop_ctx",
        "num_val_batches",
        "val_seq_len",
        "save_gifs",
        "save_scalars_every",
        "save_gifs_every",
        "save_model_every",
        "save_named_model_every",
        "wandb_project",
        "wandb_mode",
        "progress",
        "num_examples",
        "num_samples",
        "eval_batch_size",
        "no_save_grid",
        "eval_videos",
        "ssim_data_range",
        "fvd",
        "lpips",
        "references",
        "protocol",
        "conv_impl",
        "eval_actions",
    }
)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# Keys that were once set by the user and are now fixed by something else; older config.yml files and
# YAMLs that still name one load when its value agrees. `channels`: the dataset's (dataspec.py).
RETIRED = frozenset({"channels"})

# Named evaluation settings. 'paper': the official eval.py's defaults (num_examples 100, num_samples
# 1, open_loop_ctx 36, every level observing the context) on whole test videos (eval_seq_len: the
# dataset's test video length, the official configs' value), SSIM on float frames as scikit-image
# guessed their range (the key's default). The official reduction (eval.py) is fixed in code, not keys.
PROTOCOLS = {
    "paper": lambda dataset: {
        "num_examples": 100,
        "num_samples": 1,
        "open_loop_ctx": 36,
        "use_obs": None,
        "eval_seq_len": dataspec.get(dataset).test_frames,
        "ssim_data_range": FIELDS["ssim_data_range"].default,
    }
}
DATASETS = tuple(dataspec.DATASETS)
DATA_SOURCES = ("generated", "paper")
PRECISIONS = ("float32", "bfloat16")
ADAMS = ("keras", "optax")
WANDB_MODES = ("online", "offline", "disabled")
EVAL_ACTIONS = ("given", "zero")  # eval.py: the videos' actions, or none (zeros)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str", list: "list", type(None): "null"}
    args = typing.get_args(tp) or (tp,)
    return " or ".join(names.get(a, str(a)) for a in args)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check `value` against the type of `key`, converting int to float where the key is a float."""
    tp = typing.get_type_hints(Config)[key]
    allowed = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, float) and int in allowed and float not in allowed and value.is_integer():
        return int(value)  # wandb sweeps pass ints as 16.0
    elif isinstance(value, (int, float)) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    elif isinstance(value, (list, tuple)) and list in allowed:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
    raise ConfigError(f"{source}: key '{key}' got {value!r} ({type(value).__name__}); expected {_type_name(tp)}")


def parse_cli(argv: list[str]) -> dict[str, str]:
    """`--key value` and `--key=value` pairs; a bare flag before another flag (or at the end) means true."""
    out, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {arg!r}; expected --key value or --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            else:
                value = "true"
        if key not in FIELDS and key not in RETIRED:
            raise ConfigError(f"command line: unknown key '--{key}'{_suggest(key)}; see --help for valid keys")
        out[key] = value
        i += 1
    return out


def _yaml_value(text: str) -> Any:
    """A CLI string as YAML would read it, plus numbers YAML 1.1 leaves as strings (1e-3)."""
    if text in ("None", "none"):  # Python's spelling of null, as wandb writes it
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_yaml(path: str) -> dict[str, Any]:
    """The overrides in a YAML config file; errors name the file."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass --config configs/<dataset>.yml")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of key: value, got {type(data).__name__}")
    for key in data:
        if key not in FIELDS and key not in RETIRED:
            raise ConfigError(f"config file '{path}': unknown key '{key}'{_suggest(key)}")
    return data


def apply(config: Config, overrides: dict[str, Any], source: str) -> Config:
    """A copy of `config` with typed overrides (strings from the CLI are parsed as YAML scalars)."""
    values = {}
    for key, value in overrides.items():
        if key in RETIRED:
            continue
        if key not in FIELDS:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggest(key)}")
        if isinstance(value, str) and typing.get_type_hints(Config)[key] is not str:
            value = _yaml_value(value)
        values[key] = _coerce(key, value, source)
    config = dataclasses.replace(config, **values)
    if "channels" in overrides:
        _check_channels(config, overrides["channels"], source)
    return config


def _check_channels(config: Config, value: Any, source: str) -> None:
    """`channels` comes from the dataset; a file (or command line) that still names it must agree."""
    value = _yaml_value(value) if isinstance(value, str) else value
    if config.dataset in dataspec.DATASETS and value != config.channels:  # an unknown dataset: validate says so
        raise ConfigError(
            f"{source}: key 'channels' got {value!r}; channels come from the dataset ('{config.dataset}' has "
            f"{config.channels}): drop the key"
        )


def validate(config: Config, num_devices: int | None = None) -> Config:
    """Cross-key checks; returns the config unchanged or raises ConfigError. The keys that only the
    model can check (cell_type, conv_impl) are checked by steps.check_model_keys."""
    c = config

    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    check(c.dataset in DATASETS, f"key 'dataset' got {c.dataset!r}; valid: {', '.join(DATASETS)}")
    check(c.data_source in DATA_SOURCES, f"key 'data_source' got {c.data_source!r}; valid: {', '.join(DATA_SOURCES)}")
    check(c.precision in PRECISIONS, f"key 'precision' got {c.precision!r}; valid: {', '.join(PRECISIONS)}")
    check(c.adam in ADAMS, f"key 'adam' got {c.adam!r}; valid: {', '.join(ADAMS)}")
    check(
        c.protocol is None or c.protocol in PROTOCOLS,
        f"key 'protocol' got {c.protocol!r}; valid: {', '.join(PROTOCOLS)} or null",
    )
    if c.run_name is not None:
        parts = c.run_name.split("/")
        check(
            all(part not in ("", ".", "..") and "\\" not in part for part in parts)
            and (len(parts) == 1 or (len(parts) == 2 and parts[0].startswith("sweep-"))),
            f"key 'run_name' got {c.run_name!r}; must be a plain folder name (or sweep-<id>/<name> in a sweep)",
        )
    check(
        c.wandb_mode is None or c.wandb_mode in WANDB_MODES,
        f"key 'wandb_mode' got {c.wandb_mode!r}; valid: {', '.join(WANDB_MODES)} or null",
    )
    _check_actions(c)
    for key in (
        "levels",
        "tmp_abs_factor",
        "enc_dense_layers",
        "enc_dense_embed_size",
        "cell_stoch_size",
        "cell_deter_size",
        "cell_embed_size",
        "channels_mult",
        "filters",
        "batch_size",
        "num_epochs",
        "save_scalars_every",
        "save_gifs_every",
        "save_model_every",
        "save_named_model_every",
        "num_examples",
        "num_samples",
        "eval_batch_size",
        "num_val_batches",
        "eval_seq_len",
    ):
        check(getattr(c, key) >= 1, f"key '{key}' got {getattr(c, key)}; must be >= 1")
    check(c.seq_len >= 1, f"key 'seq_len' got {c.seq_len}; must be >= 1")
    check(
        c.seed is None or 0 <= c.seed < 2**32,
        f"key 'seed' got {c.seed}; must be an integer in [0, 2**32) = [0, {2**32 - 1}] or null (drawn and saved)",
    )
    check(c.max_steps is None or c.max_steps >= 0, f"key 'max_steps' got {c.max_steps}; must be >= 0 or null")
    check(c.eval_videos >= 0, f"key 'eval_videos' got {c.eval_videos}; must be >= 0 (0: no videos)")
    check(c.lr > 0, f"key 'lr' got {c.lr}; must be > 0")
    check(c.dec_stddev > 0, f"key 'dec_stddev' got {c.dec_stddev}; must be > 0")
    check(c.ssim_data_range > 0, f"key 'ssim_data_range' got {c.ssim_data_range}; must be > 0")
    if c.use_obs is not None:
        check(
            len(c.use_obs) == c.levels and set(c.use_obs) <= {"T", "F"},
            f"key 'use_obs' got {c.use_obs!r}; expected {c.levels} letters T or F, one per level (levels={c.levels})",
        )
    if isinstance(c.beta, list):
        check(len(c.beta) == c.levels, f"key 'beta' got {c.beta}; expected one number or {c.levels} (one per level)")
    if c.kl_grad_post_perc is not None:
        p = c.kl_grad_post_perc
        check(0.0 <= p <= 1.0, f"key 'kl_grad_post_perc' got {p}; must be in [0, 1] or null")
    if c.free_nats is not None:
        check(c.free_nats >= 0, f"key 'free_nats' got {c.free_nats}; must be >= 0 or null")
    top = c.tmp_abs_factor ** (c.levels - 1)
    check(
        c.open_loop_ctx % top == 0 and c.open_loop_ctx >= top,
        f"key 'open_loop_ctx' got {c.open_loop_ctx}; must be a positive multiple of "
        f"tmp_abs_factor**(levels-1) = {c.tmp_abs_factor}**{c.levels - 1} = {top}",
    )
    check(
        c.eval_seq_len > c.open_loop_ctx,
        f"key 'eval_seq_len' got {c.eval_seq_len}; must be greater than open_loop_ctx = {c.open_loop_ctx}",
    )
    if c.val_seq_len is not None:
        check(
            c.val_seq_len > c.open_loop_ctx,
            f"key 'val_seq_len' got {c.val_seq_len}; must be greater than open_loop_ctx = {c.open_loop_ctx}",
        )
    if num_devices is not None:
        check(
            c.batch_size % num_devices == 0,
            f"key 'batch_size' got {c.batch_size}; must be divisible by the number of devices ({num_devices})",
        )
    return c


def _check_actions(c: Config) -> None:
    """use_actions needs a dataset (and source) with actions; eval_actions is one of EVAL_ACTIONS and other
    than the default only for a run with actions."""
    spec = dataspec.get(c.dataset)
    with_actions = ", ".join(name for name, d in dataspec.DATASETS.items() if d.actions)
    if c.use_actions and not spec.actions:
        raise ConfigError(
            f"key 'use_actions' is true, but dataset '{c.dataset}' ({spec.description}) has no actions; "
            f"datasets with actions: {with_actions}"
        )
    if c.use_actions and c.data_source == "paper" and not spec.archive_actions:
        raise ConfigError(
            f"key 'use_actions' is true, but the paper's {spec.archive} archive has no actions; "
            f"pass --data_source generated (the {c.dataset} stand-in records them)"
        )
    if c.eval_actions not in EVAL_ACTIONS:
        raise ConfigError(f"key 'eval_actions' got {c.eval_actions!r}; valid: {', '.join(EVAL_ACTIONS)}")
    if c.eval_actions != FIELDS["eval_actions"].default and not c.use_actions:
        raise ConfigError(
            f"key 'eval_actions' got {c.eval_actions!r}, but the run has no actions (use_actions is false): "
            "drop the key"
        )


class ScriptHelp(typing.NamedTuple):
    """What a script's --help says: its usage line, where values come from, the groups of keys it reads
    (in this order), and a word on the other keys (train.py lists them, as carried for eval.py)."""

    usage: str
    priority: str
    groups: tuple[str, ...]
    rest: str


SCRIPTS = {
    "train.py": ScriptHelp(
        "python train.py --config configs/<dataset>.yml [--key value ...]",
        "defaults < --config YAML < command line < wandb (sweeps)",
        ("model", "data", "training", "evaluation", "output"),
        "carried: saved with the run for eval.py (train.py does not read them)",
    ),
    "eval.py": ScriptHelp(
        "python eval.py --logdir <run or checkpoint folder> [--key value ...]",
        "the run's saved config.yml < --protocol's preset < command line",
        ("eval", "evaluation"),
        "Every other key comes from the run's saved config.yml and can be overridden the same way (for\n"
        "example --datadir <folder> or --conv_impl xla); python train.py --help lists them.",
    ),
    "data.py": ScriptHelp(
        "python data.py prepare --config configs/<dataset>.yml [--key value ...]",
        "defaults < --config YAML < command line",
        ("data",),
        "Other keys are accepted and ignored, so a training command line works as is.",
    ),
}


def help_text(script: str = "train.py") -> str:
    """`script`'s --help (SCRIPTS): its usage line, the keys it reads by group (GROUPS), then the rest."""
    shown = SCRIPTS[script]
    lines = [f"usage: {shown.usage}", "", f"Each key is --key value or --key=value; priority: {shown.priority}."]
    for group in shown.groups:
        lines += ["", f"{GROUPS[group]}:", *_key_lines(group)]
    if script == "train.py":
        carried = [line for group in GROUPS if group not in shown.groups for line in _key_lines(group)]
        lines += ["", f"{shown.rest}:", *carried]
    else:
        lines += ["", shown.rest]
    return "\n".join(lines)


def _key_lines(group: str) -> list[str]:
    return [
        f"  --{name:<24} {f.metadata['doc']} [default: {f.default!r}]"
        for name, f in FIELDS.items()
        if f.metadata["group"] == group
    ]


def parse(argv: list[str] | None = None, num_devices: int | None = None, script: str = "train.py") -> Config:
    """Defaults < YAML (--config) < command line; validated. `--help` prints `script`'s help and exits."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text(script))
        raise SystemExit(0)
    cli = parse_cli(argv)
    config = Config()
    if "config" in cli:
        config = apply(config, load_yaml(cli["config"]), f"config file '{cli['config']}'")
    config = apply(config, cli, "command line")
    return validate(config, num_devices)


def trial_name(argv: list[str] | None = None) -> str | None:
    """A sweep trial's folder name from the result-changing values on its command line (what the
    sweep varies), e.g. beta0.5_free_natsNone; None when the command line sets none. Rerunning the
    trial's command (even with another max_steps) lands in the same folder, so the trial resumes."""
    argv = sys.argv[1:] if argv is None else argv
    values = {k: v for k, v in sorted(parse_cli(argv).items()) if k not in OUTPUT_ONLY}
    if not values:
        return None
    name = "_".join(f"{k}{v}" for k, v in values.items())
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
    if len(name) > 100:  # file names are limited; the hash keeps long ones apart
        name = name[:91] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def with_wandb(config: Config, run_config: dict[str, Any], num_devices: int | None = None) -> Config:
    """Apply the keys a wandb sweep set in the run config (highest priority)."""
    known = FIELDS.keys() | RETIRED
    overrides = {k: v for k, v in dict(run_config).items() if k in known and v != getattr(config, k)}
    unknown = [k for k in dict(run_config) if k not in known and not k.startswith("_")]
    if unknown:
        raise ConfigError(f"wandb config: unknown key '{unknown[0]}'{_suggest(unknown[0])}")
    return validate(apply(config, overrides, "wandb config"), num_devices)


def resolve_seed(config: Config) -> Config:
    """Draw a seed once when none was given, so it can be saved with the run."""
    if config.seed is not None:
        return config
    return dataclasses.replace(config, seed=secrets.randbelow(2**31))
