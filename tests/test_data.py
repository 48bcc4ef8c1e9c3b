"""Tests of data.py: generators, the TF-free tfds builders on small local archives, the loaders."""

import dataclasses
import hashlib
import json
import pathlib
import socket
import subprocess
import sys
import time
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import builders
import config
import data
import dataspec
import generators


def Cfg(**overrides) -> config.Config:
    """The project's Config with small test sizes."""
    small = {"seq_len": 10, "eval_seq_len": 20, "batch_size": 4, "num_epochs": 2, "seed": 0}
    small |= {"num_gen_train": 6, "num_gen_test": 3}
    return dataclasses.replace(config.Config(), **{**small, **overrides})


def smooth_video(num_frames: int, channels: int, phase: float = 0.0) -> np.ndarray:
    """A slowly moving smooth pattern (mp4 keeps it well): (T, 64, 64, C) uint8."""
    yy, xx = np.mgrid[:64, :64] / 64.0
    frames = []
    for t in range(num_frames):
        base = 0.5 + 0.4 * np.sin(2 * np.pi * (xx + 0.05 * t + phase)) * np.cos(np.pi * yy)
        rgb = np.stack([base, 1 - base, 0.5 + 0 * base][:channels], -1)
        frames.append(np.clip(rgb * 255, 0, 255).astype(np.uint8))
    return np.stack(frames)


def mp4_bytes(video: np.ndarray, tmp_path: pathlib.Path) -> bytes:
    rgb = np.repeat(video, 3, -1) if video.shape[-1] == 1 else video
    path = tmp_path / "clip.mp4"
    iio.imwrite(path, rgb, plugin="FFMPEG", fps=10, codec="libx264", quality=10, macro_block_size=16)
    return path.read_bytes()


def write_archive(path: pathlib.Path, folders: dict, counts: dict, frames: dict, channels: int, top: str = ""):
    """A zip in the paper's layout: <top>/<folder>/<i>.mp4; returns the videos written per split."""
    videos = {}
    with zipfile.ZipFile(path, "w") as zf:
        for split, folder in folders.items():
            videos[split] = [smooth_video(frames[split], channels, phase=i / 7) for i in range(counts[split])]
            for i, video in enumerate(videos[split]):
                zf.writestr(f"{top}{folder}/{i:04d}.mp4", mp4_bytes(video, path.parent))
        zf.writestr(f"__MACOSX/{folder}/._0000.mp4", b"resource fork, not a video")
    return videos


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# --- paper archives through the tfds builders ------------------------------------------------


@pytest.mark.parametrize(
    "dataset, channels, top",
    [("mmnist", 1, ""), ("mazes", 3, "gqn_mazes/"), ("minerl", 3, "")],
)
def test_builder_prepares_manual_archive_offline(tmp_path, no_network, dataset, channels, top):
    archive = dataspec.get(dataset)
    cfg = Cfg(dataset=dataset, data_source="paper", datadir=str(tmp_path / "d"))
    builders.manual_dir(cfg).mkdir(parents=True)
    counts, frames = {"train": 3, "test": 2}, {"train": 6, "test": 8}
    written = write_archive(
        builders.manual_dir(cfg) / f"{archive.archive}.zip", archive.folders, counts, frames, channels, top
    )
    builder = builders.prepare_paper(cfg)
    for split in ("train", "test"):
        source = builder.as_data_source(split=split)
        assert len(source) == counts[split]
        got = sorted((source[i]["video"] for i in range(len(source))), key=lambda v: float(v[0, 0, 0, 0]))
        want = sorted(written[split], key=lambda v: float(v[0, 0, 0, 0]))
        for g, w in zip(got, want):
            assert g.shape == (frames[split], 64, 64, channels) and g.dtype == np.uint8
            assert np.abs(g.astype(float) - w).mean() < 4.0  # mp4 is lossy; smooth content stays close


@pytest.mark.parametrize("name", ["moving_mnist_2digit", "gqn_mazes", "minerl_navigate"])
def test_builders_resolve_by_name_after_importing_data(tmp_path, name):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(tmp_path), file_format="array_record")
    assert builder.name == name and isinstance(builder, builders._VideoZipBuilder)


def test_prepared_archive_loads_through_eval_loader(tmp_path, no_network):
    cfg = Cfg(data_source="paper", datadir=str(tmp_path))
    builders.manual_dir(cfg).mkdir(parents=True)
    write_archive(
        builders.manual_dir(cfg) / "moving_mnist_2digit.zip",
        dataspec.get("mmnist").folders,
        {"train": 2, "test": 3},
        {"train": 12, "test": 9},
        1,
    )
    batches = list(data.make_eval_loader(cfg, seq_len=9, batch_size=2))
    assert [b.shape for b in batches] == [(2, 9, 64, 64, 1), (1, 9, 64, 64, 1)]
    train = data.make_train_loader(dataclasses.replace(cfg, seq_len=5, batch_size=2), 0, 1)
    assert next(train).shape == (2, 5, 64, 64, 1)
    assert "paper archive moving_mnist_2digit" in data.describe_source(cfg)


def test_unfinished_preparation_is_not_taken_as_complete(tmp_path, no_network):
    cfg = Cfg(data_source="paper", datadir=str(tmp_path))
    builders.manual_dir(cfg).mkdir(parents=True)
    (builders.manual_dir(cfg) / "moving_mnist_2digit.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(data.DataError):
        builders.prepare_paper(cfg)
    assert not builders.paper_builder(cfg).is_prepared()


def test_truncated_zip_names_the_file(tmp_path, no_network):
    cfg = Cfg(data_source="paper", datadir=str(tmp_path))
    builders.manual_dir(cfg).mkdir(parents=True)
    path = builders.manual_dir(cfg) / "moving_mnist_2digit.zip"
    write_archive(path, dataspec.get("mmnist").folders, {"train": 1, "test": 1}, {"train": 4, "test": 4}, 1)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(data.DataError, match="moving_mnist_2digit.zip"):
        builders.prepare_paper(cfg)


def test_corrupt_mp4_names_the_file(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/0001.mp4", mp4_bytes(smooth_video(4, 3), tmp_path)[:300])
    with pytest.raises(data.DataError, match=r"a\.zip:train/0001\.mp4") as e:
        list(builders.read_zip_videos(path, "train", 3))
    assert "\n" not in str(e.value)


def test_missing_split_folder_is_an_error(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("other/0001.mp4", b"x")
    with pytest.raises(data.DataError, match="no mp4 files in folder 'train'"):
        list(builders.read_zip_videos(path, "train", 3))


def test_blocked_download_fails_fast_with_one_line(tmp_path, no_network):
    cfg = Cfg(dataset="minerl", data_source="paper", datadir=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(data.DataError) as e:
        builders.prepare_paper(cfg)
    message = str(e.value)
    assert time.perf_counter() - start < 10
    assert "\n" not in message
    assert "minerl_navigate" in message and dataspec.get("minerl").url in message
    assert str(builders.manual_dir(cfg)) in message and "--data_source generated" in message


def test_generated_minerl_loads_through_the_train_loader(tmp_path):
    cfg = Cfg(dataset="minerl", datadir=str(tmp_path), num_gen_train=1, num_gen_test=1, seq_len=100)
    batch = next(data.make_train_loader(cfg, 0, 1))
    assert batch.shape == (4, 100, 64, 64, 3) and batch.dtype == np.uint8  # 5 clips of 100 from one video
    assert "generated voxel-world walks" in data.describe_source(cfg)


def test_check_source_fails_before_anything_is_built(tmp_path, no_network):
    cfg = Cfg(dataset="minerl", data_source="paper", datadir=str(tmp_path / "d"))
    with pytest.raises(data.DataError, match="--data_source generated"):
        data.check_source(cfg)
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataError, match="key 'datadir' got .*file'?, which is a file"):
        data.check_source(Cfg(datadir=str(tmp_path / "file")))


# --- generators -----------------------------------------------------------------------------


def test_generated_mmnist_is_deterministic_and_shaped():
    a = generators.generate("mmnist", 3, 20, seed=5)
    assert a.shape == (3, 20, 64, 64, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, generators.generate("mmnist", 3, 20, seed=5))
    np.testing.assert_array_equal(a[:2], generators.generate("mmnist", 2, 20, seed=5))  # prefix property
    assert not np.array_equal(a, generators.generate("mmnist", 3, 20, seed=6))
    assert a.max() > 200 and (a > 0).mean() < 0.5  # digits on a black background


def test_generated_mazes_are_deterministic_and_smooth():
    a = generators.generate("mazes", 2, 60, seed=3)
    assert a.shape == (2, 60, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, generators.generate("mazes", 2, 60, seed=3))
    assert a.min() < 60 and a.max() > 150  # a real range of colours
    frames = a.reshape(-1, 64, 64, 3).astype(float)
    consecutive = np.abs(np.diff(a.astype(float), axis=1)).mean(axis=(2, 3, 4))  # (N, T-1)
    assert (consecutive > 0).mean() > 0.9  # the camera keeps moving
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(frames), size=(2, 200))
    random_pairs = np.abs(frames[i] - frames[j]).mean()
    assert consecutive.mean() < 0.5 * random_pairs


def test_generated_split_is_written_once_and_reused(tmp_path):
    cfg = Cfg(datadir=str(tmp_path), num_gen_train=2)
    path = generators.ensure_generated(cfg, "train")
    assert path.parent == tmp_path / "generated" / "mmnist"
    stamp = path.stat().st_mtime_ns
    assert generators.ensure_generated(cfg, "train").stat().st_mtime_ns == stamp
    assert np.load(path).shape == (2, 100, 64, 64, 1)
    assert not list(path.parent.glob("*.tmp*"))
    assert "generated Moving MNIST" in data.describe_source(cfg)
    assert generators.generated_file(dataclasses.replace(cfg, seed=7), "train") == path  # not tied to the run's seed


# --- loaders (on a small fake generated file) ---------------------------------------------------


@pytest.fixture
def fake_mmnist(tmp_path):
    """Six 'generated' videos of 25 frames where pixel (0, 0) holds 10 * video + frame."""
    cfg = Cfg(datadir=str(tmp_path))
    videos = np.zeros((6, 25, 64, 64, 1), np.uint8)
    videos[:, :, 0, 0, 0] = 10 * np.arange(6)[:, None] + np.arange(25)[None]
    path = generators.generated_file(cfg, "train")
    path.parent.mkdir(parents=True)
    np.save(path, videos)
    np.save(generators.generated_file(cfg, "test"), videos[:3, :20])
    return cfg


def ids(batch: np.ndarray) -> np.ndarray:
    return batch[:, :, 0, 0, 0].astype(int)


def test_train_clips_are_consecutive_and_drop_the_remainder(fake_mmnist):
    cfg = dataclasses.replace(fake_mmnist, num_epochs=1, batch_size=2)
    batches = list(data.make_train_loader(cfg, 0, 1))
    assert all(b.shape == (2, 10, 64, 64, 1) and b.dtype == np.uint8 for b in batches)
    clips = np.concatenate([ids(b) for b in batches])
    assert len(clips) == 12  # 6 videos x 2 clips of 10 (5 frames dropped), 12 = 6 batches of 2
    starts = sorted(clips[:, 0].tolist())
    assert starts == sorted(10 * v + s for v in range(6) for s in (0, 10))
    assert (np.diff(clips, axis=1) == 1).all()


def test_train_order_depends_on_seed_and_epoch(fake_mmnist):
    def first_frames(seed):
        return np.concatenate(
            [ids(b)[:, 0] for b in data.make_train_loader(dataclasses.replace(fake_mmnist, seed=seed), 0, 1)]
        )

    a, b = first_frames(0), first_frames(1)
    assert len(a) == 24 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, first_frames(0))
    assert sorted(a[:12]) == sorted(a[12:]) and not np.array_equal(a[:12], a[12:])  # reshuffled per epoch


def test_processes_read_disjoint_rows_of_the_same_global_batches(fake_mmnist):
    cfg = dataclasses.replace(fake_mmnist, num_epochs=1)
    whole = [ids(b)[:, 0] for b in data.make_train_loader(cfg, 0, 1)]
    parts = [[ids(b)[:, 0] for b in data.make_train_loader(cfg, p, 2)] for p in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3  # 12 clips, global batches of 4
    for step, batch in enumerate(whole):  # process p holds rows [p*b, (p+1)*b) of global batch s
        np.testing.assert_array_equal(np.concatenate([parts[0][step], parts[1][step]]), batch)


def test_resume_matches_uninterrupted_run(fake_mmnist):
    cfg = dataclasses.replace(fake_mmnist, num_epochs=3)  # 9 batches; the resumed part crosses an epoch
    loader = data.make_train_loader(cfg, 0, 1)
    for _ in range(3):
        next(loader)
    state = json.loads(json.dumps(loader.get_state()))
    expected = [next(loader) for _ in range(4)]
    resumed = data.make_train_loader(cfg, 0, 1)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed), want)


def test_eval_loader_is_ordered_and_keeps_the_last_batch(fake_mmnist):
    batches = list(data.make_eval_loader(fake_mmnist, seq_len=20, batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([ids(b) for b in batches]), 10 * np.arange(3)[:, None] + np.arange(20))
    assert len(list(data.make_eval_loader(fake_mmnist, seq_len=20, batch_size=2, num_videos=1))) == 1


def test_eval_loader_rejects_short_videos(fake_mmnist):
    with pytest.raises(data.DataError, match=r"key 'eval_seq_len' got 30; the mmnist test videos have 20 frames"):
        data.make_eval_loader(fake_mmnist, seq_len=30, batch_size=2)


def test_import_does_not_load_tensorflow():
    code = "import sys, data, train, eval, bench; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# --- actions ----------------------------------------------------------------------------------


def add_metadata(path: pathlib.Path, folders: dict, counts: dict, frames: dict, width: int, top: str = "") -> None:
    """The archive's metadata.json in each split folder of the zip at `path`: per video file, its actions,
    where action t of video i is (i, t, 0, ...)."""
    with zipfile.ZipFile(path, "a") as zf:
        for split, folder in folders.items():
            metadata = {
                f"{i:04d}.mp4": {"actions": [[i, t] + [0] * (width - 2) for t in range(frames[split])], "angle": [0]}
                for i in range(counts[split])
            }
            zf.writestr(f"{top}{folder}/{builders.METADATA}", json.dumps(metadata))


def test_builder_reads_the_actions_of_the_minerl_archive_from_its_metadata(tmp_path, no_network):
    archive = dataspec.get("minerl")
    cfg = Cfg(dataset="minerl", data_source="paper", datadir=str(tmp_path / "d"), use_actions=True, seq_len=6)
    builders.manual_dir(cfg).mkdir(parents=True)
    path = builders.manual_dir(cfg) / f"{archive.archive}.zip"
    counts, frames = {"train": 2, "test": 1}, {"train": 6, "test": 8}
    written = write_archive(path, archive.folders, counts, frames, 3)
    add_metadata(path, archive.folders, counts, frames, len(archive.actions))
    data.check_source(cfg)
    builder = builders.prepare_paper(cfg)
    assert builder.version == builders.ACTIONS_VERSION and builder.has_actions
    for split in ("train", "test"):
        source = builder.as_data_source(split=split)
        for record in (source[i] for i in range(len(source))):
            actions, i = record["actions"], int(record["actions"][0, 0])  # the video it belongs to
            assert actions.shape == (frames[split], 11) and actions.dtype == np.float32
            np.testing.assert_array_equal(actions[:, 1], np.arange(frames[split]))
            assert np.abs(record["video"].astype(float) - written[split][i]).mean() < 4.0  # beside its own video
    batch_frames, batch_actions = next(data.make_train_loader(dataclasses.replace(cfg, batch_size=2), 0, 1))
    assert batch_frames.shape == (2, 6, 64, 64, 3) and batch_actions.shape == (2, 6, 11)


def test_an_archive_without_actions_still_prepares_and_refuses_a_run_asking_for_them(tmp_path, no_network, capsys):
    archive = dataspec.get("minerl")
    cfg = Cfg(dataset="minerl", data_source="paper", datadir=str(tmp_path / "d"))
    builders.manual_dir(cfg).mkdir(parents=True)
    path = builders.manual_dir(cfg) / f"{archive.archive}.zip"
    write_archive(path, archive.folders, {"train": 1, "test": 1}, {"train": 6, "test": 6}, 3)  # no metadata.json
    record = builders.prepare_paper(cfg).as_data_source(split="train")[0]
    assert record["video"].shape == (6, 64, 64, 3) and record["actions"].shape == (0, 11)
    assert "1 of 1 videos in 'minerl_navigate/train' without actions (no metadata.json" in capsys.readouterr().out
    with pytest.raises(data.DataError) as e:
        data.check_source(dataclasses.replace(cfg, use_actions=True))
    assert str(e.value).endswith("held no 'actions' of one action per frame); use_actions needs them")


def test_an_archive_prepared_before_its_actions_were_read_stays_in_use_and_refuses_actions(tmp_path, no_network):
    import tensorflow_datasets as tfds

    archive = dataspec.get("minerl")
    cfg = Cfg(dataset="minerl", data_source="paper", datadir=str(tmp_path / "d"))
    builders.manual_dir(cfg).mkdir(parents=True)
    write_archive(
        builders.manual_dir(cfg) / f"{archive.archive}.zip",
        archive.folders,
        {"train": 1, "test": 1},
        {"train": 6, "test": 6},
        3,
    )
    # The builder as it was before it read actions: version 1.0.0, the video alone (tfds prepares no older version).
    body = {"name": archive.archive, "ARCHIVE": dataclasses.replace(archive, archive_actions=False)}
    before = type("MinerlNavigate", (builders._VideoZipBuilder,), body, skip_registration=True)
    old = before(data_dir=cfg.datadir, file_format="array_record")
    old.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(builders.manual_dir(cfg))))
    builder = builders.paper_builder(cfg)
    assert (str(builder.version), builder.has_actions, builder.data_dir) == ("1.0.0", False, old.data_dir)  # kept
    assert next(iter(data.make_eval_loader(cfg, seq_len=6, batch_size=1))).shape == (1, 6, 64, 64, 3)
    with pytest.raises(data.DataError) as e:
        data.check_source(dataclasses.replace(cfg, use_actions=True))
    message = str(e.value)
    assert "\n" not in message and "prepared before the archive's actions were read" in message
    assert f"rm -r {old.data_dir}" in message and "python data.py prepare --config configs/minerl.yml" in message
    assert builders.paper_builder(cfg).data_dir == old.data_dir  # nothing was prepared over it


@pytest.fixture
def fake_mazes(tmp_path):
    """Six 'generated' maze videos of 25 frames and their actions: pixel (0, 0) and action field 0 hold
    10 * video + frame."""
    cfg = Cfg(dataset="mazes", datadir=str(tmp_path), num_gen_test=6)
    videos = np.zeros((6, 25, 64, 64, 3), np.uint8)
    videos[:, :, 0, 0, 0] = 10 * np.arange(6)[:, None] + np.arange(25)[None]
    actions = np.zeros((6, 25, 2), np.float32)
    actions[..., 0] = videos[:, :, 0, 0, 0]
    for split in ("train", "test"):
        path = generators.generated_file(cfg, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, videos)
        np.save(generators.actions_file(cfg, split), actions)
    return cfg


def test_loaders_yield_each_clip_with_its_actions_only_when_asked(fake_mazes):
    frames_only = next(data.make_train_loader(fake_mazes, 0, 1))
    assert isinstance(frames_only, np.ndarray) and frames_only.shape == (4, 10, 64, 64, 3)
    cfg = dataclasses.replace(fake_mazes, use_actions=True)
    for frames, actions in [next(data.make_train_loader(cfg, 0, 1)), next(iter(data.make_eval_loader(cfg, 20, 3)))]:
        assert actions.dtype == np.float32 and actions.shape == (*frames.shape[:2], 2)
        np.testing.assert_array_equal(actions[..., 0], ids(frames))  # each frame with its own action
    assert "with their actions" in data.describe_source(cfg)


def test_data_generated_before_actions_were_recorded_is_refused_in_one_line_and_kept(fake_mazes):
    cfg = dataclasses.replace(fake_mazes, use_actions=True)
    train, test = (generators.generated_file(cfg, split) for split in ("train", "test"))
    for split in ("train", "test"):
        generators.actions_file(cfg, split).unlink()
    stamps = [p.stat().st_mtime_ns for p in (train, test)]
    with pytest.raises(data.DataError) as e:
        data.check_source(cfg)
    assert str(e.value) == (
        f"{train.name} and {test.name} in {train.parent} were generated before actions were recorded; to use "
        f"actions, delete them (rm {train} {test}) and run the command again: generated anew, with the same "
        "frames and their actions"
    )
    with pytest.raises(data.DataError) as e:
        data.open_videos(cfg, "test")
    assert str(e.value).startswith(f"{test.name} in {test.parent} was generated before actions were recorded")
    assert f"delete it (rm {test})" in str(e.value)
    assert [p.stat().st_mtime_ns for p in (train, test)] == stamps  # kept, and usable without actions
    assert data.open_videos(fake_mazes, "test").length == 25


def test_a_generated_split_records_its_actions_beside_its_frames(tmp_path):
    cfg = Cfg(dataset="mazes", datadir=str(tmp_path), num_gen_test=2)
    generators.ensure_generated(cfg, "test", progress=False)
    frames, actions = generators.generate("mazes", 2, 300, generators.GEN_SEEDS["test"], "test", with_actions=True)
    np.testing.assert_array_equal(np.load(generators.generated_file(cfg, "test")), frames)
    np.testing.assert_array_equal(np.load(generators.actions_file(cfg, "test")), actions)
    assert not list(tmp_path.rglob("*.tmp*"))


# sha256 (first 16 hex digits) of generators.generate(dataset, 2, 30, seed=1) as the code before actions were
# recorded made them (generators/ of commit f100482, on a 2-core AMD EPYC): recording actions changes no frame.
FRAMES_BEFORE_ACTIONS = {"minerl": "1b757056c42c944a", "mazes": "be0c04f83b33cb7c"}


@pytest.mark.parametrize("dataset", ["minerl", "mazes"])
def test_recording_actions_changes_no_generated_frame(dataset):
    frames, actions = generators.generate(dataset, 2, 30, seed=1, with_actions=True)
    assert hashlib.sha256(frames.tobytes()).hexdigest()[:16] == FRAMES_BEFORE_ACTIONS[dataset]
    np.testing.assert_array_equal(frames, generators.generate(dataset, 2, 30, seed=1))
    assert actions.shape == (2, 30, len(dataspec.get(dataset).actions))


def test_maze_actions_integrate_to_the_walk_that_was_rendered():
    from generators import mazes

    rng = np.random.default_rng([2, 0])
    maze = mazes.random_maze(rng)
    positions, headings = mazes.maze_walk(maze.walls, 60, rng)
    frames, actions = mazes.video(60, np.random.default_rng([2, 0]), "test", with_actions=True)
    np.testing.assert_array_equal(frames, mazes.render_maze(maze, positions, headings))
    turned = headings[0] + np.cumsum(np.radians(actions[:-1, 0], dtype=np.float64))
    np.testing.assert_allclose(np.angle(np.exp(1j * (turned - headings[1:]))), 0, atol=1e-5)
    walked = np.hypot(*np.diff(positions, axis=0).T)
    np.testing.assert_allclose(actions[:-1, 1] * mazes._WALK_SPEED, walked, rtol=1e-6, atol=1e-7)
    assert np.abs(actions[:, 0]).max() > 1 and not actions[-1].any()  # it turns; the last leads out of the video
