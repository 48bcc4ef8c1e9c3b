"""The numbers of a tiny training run and its evaluation, to prove a refactoring changes none of them.

    python scripts/fingerprint.py --out before.json [--conv_impl xla]   # on the old commit
    python scripts/fingerprint.py --out after.json  [--conv_impl xla]   # on the new one
    cmp before.json after.json

Runs `train.py` on configs/tiny.yml (seed 1, wandb off, scalars and validation at every step) in a
temporary folder, then `eval.py` on it, each as the user would (a fresh process, the command line
only), and reads what they wrote: every scalar of metrics.jsonl (train/, val/), a hash of the final
checkpoint's parameters and optimizer state, and the evaluation's metrics.json, curves.csv and arrays
(hashes of every .npz). It imports none of the project's modules, so the same script fingerprints any
commit. Files are compared bit for bit: run both sides on the same machine with the same conv_impl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIPPED = ("time", "per_sec", "seconds", "dir")  # when and where it ran, and how fast: differ run to run


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)  # an empty optimizer state restores as an object array of None: hash what it holds
        h.update(repr(a.tolist()).encode() if a.dtype == object else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _run(script: str, args: list[str]) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / script), *args]
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def _scalars(metrics_file: pathlib.Path) -> dict[str, dict[str, float]]:
    """{step: {key: value}} of metrics.jsonl, later lines for a step overriding earlier ones."""
    out: dict[str, dict[str, float]] = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        step = str(record.pop("step"))
        out.setdefault(step, {}).update({k: v for k, v in record.items() if not any(w in k for w in SKIPPED)})
    return out


def _checkpoint_digest(run_dir: pathlib.Path) -> tuple[int, dict[str, str]]:
    """The newest checkpoint's step and a hash of each of its arrays (params and optimizer state)."""
    import warnings

    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.PyTreeCheckpointer() as checkpointer, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no sharding given: the arrays come back to the host
        state = checkpointer.restore((run_dir / "checkpoints" / str(step) / "state").absolute())
    return step, {name: _digest([leaf]) for name, leaf in sorted(_flat(state).items())}


def _flat(tree, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}/{i}").items()}
    return {prefix: np.asarray(tree)}


def fingerprint(tmp: pathlib.Path, extra: list[str]) -> dict:
    logdir = tmp / "logs"
    args = ["--config", "configs/tiny.yml", "--logdir", str(logdir), "--datadir", str(tmp / "data"), "--seed", "1"]
    args += ["--progress", "false", "--save_scalars_every", "1", *extra]
    _run("train.py", args)
    (run_dir,) = (p.parent for p in logdir.glob("*/*/config.yml"))
    scalars = _scalars(run_dir / "metrics.jsonl")
    step, state = _checkpoint_digest(run_dir)
    out = {
        "losses": {k: v["train/loss"] for k, v in scalars.items() if "train/loss" in v},
        "logged": scalars,
        "final_step": step,
        "state": state,
    }
    _run("eval.py", ["--logdir", str(run_dir), *extra])
    (metrics_file,) = run_dir.glob("eval*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    out["eval_metrics"] = {k: v for k, v in metrics.items() if not any(w in k for w in SKIPPED)}
    out["eval_curves"] = (metrics_file.parent / "curves.csv").read_text()
    out["eval_arrays"] = {
        str(p.relative_to(metrics_file.parent)): _digest(np.load(p)[k] for k in sorted(np.load(p).files))
        for p in sorted(metrics_file.parent.rglob("*.npz"))
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = fingerprint(pathlib.Path(tmp), extra)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{args.out}: {len(out['losses'])} losses, {len(out['logged'])} logged steps, {len(out['state'])} arrays")


if __name__ == "__main__":
    main()
