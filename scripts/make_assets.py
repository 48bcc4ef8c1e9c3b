"""Write the README's figures: eight frames of one generated walk per dataset, side by side.

python scripts/make_assets.py            # writes assets/maze_walk.png (and the other walks)
"""

from __future__ import annotations

import pathlib
import sys

import imageio.v3 as iio
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import generators  # noqa: E402

# dataset -> (file, every n-th frame, which train video): chosen to show each world's variety
WALKS = {"mazes": ("maze_walk.png", 4, 0), "minerl": ("minerl_walk.png", 30, 2)}


def walk_strip(dataset: str, every: int, index: int = 0) -> np.ndarray:
    """Eight frames (every `every`-th) of generated train video `index`, with 2-pixel white gaps."""
    video = generators.generate(dataset, index + 1, 8 * every, generators.GEN_SEEDS["train"])[index]
    frames = video[::every][:8]
    gap = np.full((frames.shape[1], 2, frames.shape[-1]), 255, np.uint8)
    return np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)


def main() -> None:
    for dataset, (name, every, index) in WALKS.items():
        path = ROOT / "assets" / name
        path.parent.mkdir(exist_ok=True)
        iio.imwrite(path, walk_strip(dataset, every, index))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
