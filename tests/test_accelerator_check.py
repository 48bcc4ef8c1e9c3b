"""scripts/accelerator_check.sh: its --tiny run writes every row of the table with a sane value, a spent
budget still writes the table, a hung measurement is stopped; pyproject.toml mirrors requirements.txt
and lists every module, so `pip install -e .` installs what the scripts import."""

import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import accelerator_check  # noqa: E402


def _numbers(row: str) -> list[str]:
    """The cells of a markdown table row."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _positive(cell: str) -> bool:
    try:
        value = float(cell.replace(",", ""))
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def test_tiny_check_writes_every_row_with_sane_values(tmp_path):
    out = tmp_path / "check.md"
    script = ROOT / "scripts" / "accelerator_check.sh"
    env = {**os.environ, "XLA_FLAGS": ""}  # one device, as on the GPU (not the suite's two simulated ones)
    command = [str(script), "--tiny", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.with_suffix(".json").read_text())
    errors = {part: r["error"] for part, r in results.items() if isinstance(r, dict) and "error" in r}
    assert not errors, errors
    text = out.read_text()
    rows = {_numbers(line)[0]: _numbers(line) for line in text.splitlines() if line.startswith("| ")}
    for name in ("mmnist", "mazes", "minerl"):  # batch, seq_len, compile s, step s, frames/s, GFLOP, % of limit
        assert all(_positive(cell) for cell in rows[name][1:8]), rows[name]
        assert rows[name][8] == "n/a" or _positive(rows[name][8]), rows[name]  # CPUs report no peak memory
    assert re.search(r"MineRL, 600 epochs .* \*\*[0-9.]+ h\*\*", text)
    rollout = next(cells for key, cells in rows.items() if key.isdigit())  # batch | 36 + N | compile | ...
    assert rollout[1] == "36 + 24" and all(_positive(cell) for cell in rollout[2:6]), rollout
    assert rows["step"][1:] == ["10", "20", "30", "40", "50"]
    assert all(_positive(cell) for cell in rows["train loss"][1:]), rows["train loss"]
    assert 0 < float(rows["ssim_mean"][1]) <= 1 and 0 < float(rows["psnr_mean"][1]) < 100, text


def test_spent_budget_writes_the_table_of_what_did_not_start(tmp_path):
    out = tmp_path / "check.md"
    accelerator_check.main(["--budget", "0", "--out", str(out)])
    text = out.read_text()
    for name in ("mmnist", "mazes", "minerl"):
        assert f"| {name} | not started: the budget was spent |" in text
    for part in ("rollout", "training", "eval"):
        assert f"{part}: not started: the budget was spent" in text
    assert "MineRL, 600 epochs" not in text  # no step time, no estimate


def test_a_measurement_past_its_time_is_stopped_and_named():
    start = time.monotonic()
    code, _ = accelerator_check.run_command([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert code is None and time.monotonic() - start < 30
    assert accelerator_check.worker_result(code, "", 1)["error"].startswith("stopped at the budget's end")
    crashed = accelerator_check.worker_result(1, "compiling ...\nRESOURCE_EXHAUSTED: out of memory\n", 100)
    assert crashed == {"error": "exit 1: RESOURCE_EXHAUSTED: out of memory"}
    done = accelerator_check.worker_result(0, 'noise\nRESULT {"step_s": 0.5}\n', 100)
    assert done == {"step_s": 0.5}


def _pins(path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_pyproject_mirrors_requirements_and_lists_every_module():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]
    assert sorted(declared) == sorted(_pins(ROOT / "requirements.txt"))
    setuptools = project["tool"]["setuptools"]
    assert set(setuptools["py-modules"]) == {path.stem for path in ROOT.glob("*.py")}
    assert set(setuptools["packages"]) == {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}


def test_bad_flags_and_an_unwritable_out_end_in_one_line_before_measuring(tmp_path, capsys, monkeypatch):
    import pytest

    import bench

    monkeypatch.setattr(accelerator_check, "measure_all", lambda *a, **k: pytest.fail("measured first"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (accelerator_check.main, ["--tiny", "--out", str(blocker / "check.md")], f"'{blocker}' is a file"),
        (accelerator_check.main, ["--bogus"], "unrecognized arguments: --bogus"),
        (bench.parse_args, ["--skip", "nope"], "--skip got nope; valid: train,convs,profile,rollout"),
        (bench.parse_args, ["--out", str(blocker / "bench.json")], f"'{blocker}' is a file"),
    ]
    for main, argv, words in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err and err.count("\n") == 1, err
