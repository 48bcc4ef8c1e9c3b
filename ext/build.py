"""Build ext/_onednn_conv.so: oneDNN convolutions as XLA FFI custom calls (see onednn_conv.cc, kernels/onednn.py).

    python ext/build.py            # with the venv's python; prints the .so's path on success

Needs g++ (C++17), the headers and library of the pip wheels onednn-devel-cpu-gomp / onednn-cpu-gomp
(installed under the environment's prefix: include/oneapi/dnnl, lib/libdnnl.so) and JAX's XLA FFI
headers (jax.ffi.include_dir()). The .so gets an rpath to the library's folder, so it finds libdnnl
at run time. Where anything is missing it prints one line on stderr and exits 0: the project then
runs with its pure-JAX convolutions (onednn.available() is False).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "onednn_conv.cc"
TARGET = HERE / "_onednn_conv.so"


def _notice(message: str) -> int:
    print(f"ext/build.py: not building {TARGET.name}: {message}", file=sys.stderr)
    return 0


def _onednn_dirs() -> tuple[pathlib.Path, pathlib.Path] | None:
    """(include dir, lib dir) of the oneDNN wheels: the data scheme's prefix of this environment."""
    prefixes = [pathlib.Path(sysconfig.get_paths()["data"]), pathlib.Path(sys.prefix)]
    for prefix in dict.fromkeys(prefixes):
        include, lib = prefix / "include", prefix / "lib"
        if (include / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and (lib / "libdnnl.so").exists():
            return include, lib
    return None


def build(verbose: bool = True) -> pathlib.Path | None:
    """Compile TARGET if it is missing or older than its inputs; its path, or None where it cannot be built."""
    compiler = os.environ.get("CXX") or shutil.which("g++")
    if not compiler:
        _notice("no C++ compiler (g++) found")
        return None
    dirs = _onednn_dirs()
    if dirs is None:
        _notice("oneDNN headers/library not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp)")
        return None
    include, lib = dirs
    try:
        import jax.ffi
    except ImportError as err:
        _notice(f"jax not importable ({err})")
        return None
    ffi_include = pathlib.Path(jax.ffi.include_dir())
    if not (ffi_include / "xla" / "ffi" / "api" / "ffi.h").is_file():
        _notice(f"XLA FFI headers not found in {ffi_include}")
        return None
    inputs = [SOURCE, lib / "libdnnl.so", pathlib.Path(__file__)]
    if TARGET.exists() and TARGET.stat().st_mtime >= max(p.stat().st_mtime for p in inputs):
        return TARGET
    tmp = TARGET.with_suffix(f".{os.getpid()}.tmp")
    cmd = [
        compiler,
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
        f"-I{include}",
        f"-I{ffi_include}",
        str(SOURCE),
        "-o",
        str(tmp),
        f"-L{lib}",
        "-ldnnl",
        f"-Wl,-rpath,{lib}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        _notice(f"compiler failed to run ({err})")
        return None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        first_error = next((line for line in lines if "error" in line), lines[-1])
        _notice(f"compilation failed: {first_error.strip()}")
        return None
    tmp.replace(TARGET)  # atomic: a concurrent loader sees the old file or the new one
    if verbose:
        print(TARGET)
    return TARGET


def main() -> int:
    try:
        build()
    except Exception as err:  # never a traceback: the project works without the extension
        return _notice(f"{type(err).__name__}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
