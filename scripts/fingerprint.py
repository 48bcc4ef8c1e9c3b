"""The numbers of a tiny training run and its evaluation, to prove a refactoring changes none of them.

    python scripts/fingerprint.py --out before.json [--conv_impl blocks]   # on the old commit
    python scripts/fingerprint.py --out after.json  [--conv_impl blocks]   # on the new one
    cmp before.json after.json

Trains configs/tiny.yml (seed 1, wandb off) in a temporary folder, then runs `eval.py` on it, and
writes: every training loss, every scalar the run logged (train/ and val/), a hash of the final
parameters' bytes, and the evaluation's metrics.json and arrays (hashes of every .npz). Files are
compared bit for bit: run both sides on the same machine with the same conv_impl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Recorder:
    """Stands in for the wandb run: keeps every numeric value logged."""

    def __init__(self):
        self.logged: dict[str, dict[str, float]] = {}
        self.config = self

    def log(self, values: dict, step: int) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and not k.endswith("per_sec"):  # speeds differ run to run
                self.logged.setdefault(str(step), {})[k] = float(v)

    def update(self, *args, **kwargs) -> None:
        pass

    def finish(self) -> None:
        pass


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def fingerprint(logdir: pathlib.Path, extra: list[str]) -> dict:
    import jax
    import numpy as np

    import config as cfg_lib
    import runs
    import train

    recorder = _Recorder()
    runs.init_wandb = lambda *args, **kwargs: recorder
    argv = ["--config", str(ROOT / "configs/tiny.yml"), "--logdir", str(logdir), "--seed", "1"]
    argv += ["--datadir", str(logdir / "data"), "--progress", "false", *extra]
    result = train.train(cfg_lib.parse(argv, jax.device_count()))
    out = {
        "losses": {str(k): v for k, v in sorted(result.losses.items())},
        "logged": recorder.logged,
        "params": _digest(np.asarray(x) for x in jax.tree.leaves(result.params)),
    }
    cmd = [sys.executable, str(ROOT / "eval.py"), "--logdir", str(result.exp_dir), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    (metrics_file,) = result.exp_dir.glob("eval*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    timings = ("time", "dir", "seconds")  # when and where it ran, and how long each phase took
    out["eval_metrics"] = {k: v for k, v in metrics.items() if not any(word in k for word in timings)}
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
    print(f"{args.out}: {len(out['losses'])} losses, {len(out['logged'])} logged steps, params {out['params'][:12]}")


if __name__ == "__main__":
    main()
