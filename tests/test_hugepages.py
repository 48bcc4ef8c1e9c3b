"""hugepages.py: when the entry scripts restart with glibc's huge-page tunable, and that it works."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

import hugepages

HUGE = "glibc.malloc.hugetlb=1"
CAN_HELP = hugepages.thp_mode() == "madvise" and (hugepages.glibc_version() or (0, 0)) >= (2, 35)


@pytest.mark.parametrize(
    "environ, mode, glibc, expected",
    [
        ({}, "madvise", (2, 36), HUGE),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 36), f"glibc.malloc.arena_max=2:{HUGE}"),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), None),  # the user's opt-out
        ({"GLIBC_TUNABLES": HUGE}, "madvise", (2, 39), None),  # already restarted: no loop
        ({}, "always", (2, 36), None),
        ({}, "never", (2, 36), None),
        ({}, None, (2, 36), None),  # no THP file (not Linux)
        ({}, "madvise", (2, 34), None),  # glibc without the tunable
        ({}, "madvise", None, None),  # musl, macOS
    ],
)
def test_tunables(environ, mode, glibc, expected):
    assert hugepages.tunables(environ, mode, glibc) == expected


def test_enabled_reads_the_tunable():
    if hugepages.thp_mode() == "always":
        pytest.skip("THP mode 'always': huge pages regardless of the tunable")
    assert hugepages.enabled({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE}"})
    assert not hugepages.enabled({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert not hugepages.enabled({})


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not CAN_HELP, reason="needs Linux with glibc >= 2.35 and THP mode 'madvise'")
def test_reexec_restarts_the_same_process_with_the_same_arguments():
    code = (
        "import os, sys, hugepages\n"
        "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True)\n"
        "hugepages.reexec()\n"
        "print('after', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n"
    )
    out = _python(code, "--seed", "a b").stdout.splitlines()
    pid = out[0].split()[0]
    assert out == [
        f"{pid} None ['--seed', 'a b']",  # before: no tunable
        f"{pid} {HUGE} ['--seed', 'a b']",  # started again: same process, same arguments
        f"after {pid} {HUGE} ['--seed', 'a b']",  # and it went on, once
    ]
    opted_out = _python(code, GLIBC_TUNABLES="glibc.malloc.hugetlb=0").stdout.splitlines()
    assert len(opted_out) == 2 and opted_out[1].startswith("after"), opted_out


@pytest.mark.skipif(not CAN_HELP, reason="needs Linux with glibc >= 2.35 and THP mode 'madvise'")
def test_huge_pages_cut_the_page_faults_of_a_large_block():
    """What the restart is for: a 256 MiB block malloc'ed, written and freed 5 times (as XLA:CPU does
    with a step's temporaries) faults in 4 KiB pages (65,536 each time) without the tunable, in
    2 MiB pages with it. (numpy asks for huge pages itself, so plain malloc is used here.)"""
    code = (
        "import ctypes, resource\n"
        "libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p\n"
        "start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    block = libc.malloc(1 << 28); ctypes.memset(block, 1, 1 << 28); libc.free(ctypes.c_void_p(block))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)\n"
    )
    small = int(_python(code).stdout)
    huge = int(_python(code, GLIBC_TUNABLES=HUGE).stdout)
    assert small > 5 * 65536 * 0.9, small
    assert huge < small / 20, (huge, small)
