"""Transparent huge pages for XLA:CPU's per-step memory (Linux, glibc).

XLA:CPU allocates a compiled step's temporaries as one block when the step starts and frees
it when the step ends: 4.7 GB for the paper's batch-50 train step, 0.8 GB at batch 8. glibc
serves a block that large with ``mmap`` and gives it back with ``munmap``, so every step
faults its whole working set in again, 4 KiB at a time: 1.2 million page faults per batch-50
step, about a quarter of the step's time on a 2-core CPU (docs/benchmarks.md). With glibc's
tunable ``glibc.malloc.hugetlb=1`` malloc asks the kernel for transparent huge pages, and a
step takes a few thousand 2 MiB faults instead. Memory use is unchanged: blocks are still
returned after each step. (TensorFlow keeps its own buffers, so the official code does not
have this cost.)

glibc reads tunables only when a process starts, so :func:`reexec` starts the running script
again with the tunable added: same process ID, interpreter, options and arguments. The entry
scripts call it first thing, before JAX allocates anything. It changes nothing where huge pages
cannot help or are already decided: not Linux with glibc 2.35 or newer, the kernel's THP mode
not ``madvise`` (``always`` gives huge pages anyway, ``never`` none), or ``glibc.malloc.hugetlb``
already in ``GLIBC_TUNABLES``, so ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` opts out.
"""

from __future__ import annotations

import os
import re
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
    try:
        with open(THP_MODE_FILE) as f:
            found = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if name == "glibc" and found else None


def tunables(environ: dict[str, str], mode: str | None, glibc: tuple[int, int] | None) -> str | None:
    """The GLIBC_TUNABLES value that adds huge pages to `environ`'s, or None when there is nothing
    to add (see the module docstring for when)."""
    current = environ.get("GLIBC_TUNABLES", "")
    if mode != "madvise" or glibc is None or glibc < (2, 35) or TUNABLE in current:
        return None
    return ":".join(filter(None, [current, f"{TUNABLE}=1"]))


def enabled(environ: dict[str, str] = os.environ) -> bool:
    """Whether this process runs with glibc's huge-page tunable on, or the kernel's THP mode is
    'always' (for bench.py's report)."""
    settings = dict(item.split("=", 1) for item in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in item)
    return thp_mode() == "always" or settings.get(TUNABLE, "0") != "0"


def reexec() -> None:
    """Start this script again with huge pages on, if that helps here; returns if not (or if the
    restart fails, which only costs speed)."""
    value = tunables(dict(os.environ), thp_mode(), glibc_version())
    if value is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": value})
    except OSError:
        pass
