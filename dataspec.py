"""The datasets: one entry each, read by the config's validation, the model (frame size), the offline
generators, the tfds builders of the paper's archives and the loaders.

Adding a dataset is one entry here, a generator module in generators/ and a configs/<name>.yml.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str  # the config key `dataset`
    description: str  # what the videos show, for messages
    channels: int  # frame channels (frames are frame_size x frame_size x channels, uint8)
    train_frames: int  # frames per training video
    test_frames: int  # frames per test video
    generator: str  # module of the offline stand-in: video(num_frames, rng, split) -> (T, S, S, C) uint8 (generators/)
    archive: str  # the paper's archive: its tfds builder's name and its zip file's name
    url: str  # where the archive is downloaded from
    folders: Mapping[str, str]  # split -> folder of mp4 files inside the zip
    frame_size: int = 64  # frames are frame_size x frame_size pixels
    actions: tuple[str, ...] = ()  # the fields of a frame's action vector (see below); () for a dataset without
    archive_actions: bool = False  # whether the paper's archive ships them too (else only the generated stand-in)


# Actions: actions[t] is the action taken after frame t, the one that moves the camera from frame t to
# frame t + 1, as MineRL's data pairs them (the last frame's action leads out of the video: zeros in the
# stand-ins). MineRL Navigate's action dict flattened in its (sorted) key order, its camera [pitch, yaw]
# in place: 0/1 keys, the camera's changes in degrees (pitch > 0 looks down, yaw > 0 turns right). The
# minerl stand-in's walker presses forward, jumps up steps and turns the camera; the other keys stay 0.
MINERL_ACTIONS = (
    "attack",
    "back",
    "camera_pitch",
    "camera_yaw",
    "forward",
    "jump",
    "left",
    "place",
    "right",
    "sneak",
    "sprint",
)
# The mazes stand-in's own moves: turn (degrees, > 0 to the right) and forward (the distance walked as a
# share of the full walking speed, 0 to 1).

DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "mmnist",
            "Moving MNIST",
            channels=1,
            train_frames=100,
            test_frames=1000,
            generator="generators.mmnist",
            archive="moving_mnist_2digit",
            url="https://archive.org/download/moving_mnist/moving_mnist_2digit.zip",
            folders={"train": "train-seq100", "test": "test-seq1000"},
        ),
        Dataset(
            "mazes",
            "maze walks",
            channels=3,
            train_frames=300,
            test_frames=300,
            generator="generators.mazes",
            archive="gqn_mazes",
            url="https://archive.org/download/gqn_mazes/gqn_mazes.zip",
            folders={"train": "train", "test": "test"},
            actions=("turn", "forward"),
        ),
        Dataset(
            "minerl",
            "voxel-world walks",
            channels=3,
            train_frames=500,
            test_frames=500,
            generator="generators.minerl",
            archive="minerl_navigate",
            url="https://archive.org/download/minerl_navigate/minerl_navigate.zip",
            folders={"train": "minerl_navigate/train", "test": "minerl_navigate/test"},
            actions=MINERL_ACTIONS,
            archive_actions=True,
        ),
    )
}


def get(name: str) -> Dataset:
    """The entry of dataset `name` (the config has validated it)."""
    assert name in DATASETS, f"dataset {name!r}; valid: {', '.join(DATASETS)}"
    return DATASETS[name]
