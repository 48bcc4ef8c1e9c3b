#!/usr/bin/env bash
# The accelerator check: this code on one CUDA GPU in about 8 minutes, as one table.
#
# Needs: an NVIDIA GPU and its driver, Python 3.11 or newer, requirements.txt, and the GPU build of its jax pin
# (jax==X there):  pip install -r requirements.txt "jax[cuda12]==X"   (jax[cuda13]==X with a CUDA 13 driver)
# Where pip reaches a package index the script makes that environment itself (below).
#
# Writes accelerator_check.md (--out PATH) and accelerator_check.json beside it: the device and the versions it
# ran with (they may differ from requirements.txt's pins), the train step of the paper's three configs at their
# config batch sizes (compile time, step time, frames/s, peak device memory), the 36 + 964 frame mmnist
# open-loop rollout, a 50-step mmnist training run's losses and a short eval.py of it, and the paper's 600
# MineRL epochs in hours at the measured step time (the earlier JAX port's figure: 6 h on one TPU v3).
# scripts/accelerator_check.py measures while its budget lasts (--budget, default 480 s) and writes what it has.
#
#   scripts/accelerator_check.sh [--out PATH] [--budget SECONDS] [--steps N]
#       makes a venv once (~/.cache/clockwork-vae-jax/venv-gpu, or --venv DIR; again when requirements.txt
#       changes) with requirements.txt and jax[cuda12] or jax[cuda13] as the driver allows (a few GB of CUDA
#       wheels), then measures
#   scripts/accelerator_check.sh --python PY ...      no install: PY with the packages it has
#   scripts/accelerator_check.sh --wheels DIR ...     no package index: python3 (with JAX for its GPU already)
#                                                      plus the wheels in DIR, installed into a folder on PYTHONPATH
#   scripts/accelerator_check.sh --fetch-wheels DIR   where an index is reachable: download into DIR the wheels
#                                                      of IMAGE_EXTRAS (< 40 MB) for --wheels
#   scripts/accelerator_check.sh --tiny --out PATH    on CPU at configs/tiny.yml's sizes with the project's .venv,
#                                                      about a minute: the code paths, not the speed (the tests)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# For --fetch-wheels and --wheels: what the check imports beyond a CUDA image that has JAX, flax, optax, orbax,
# numpy, scipy, scikit-image, matplotlib, imageio, pillow, PyYAML, tqdm, absl-py and protobuf: the pins of
# requirements.txt and the dependencies such an image lacks. promise has no wheel; it is built here.
# WHEEL_PYTHON (default 3.12) is the image's Python version.
IMAGE_EXTRAS=(
  grain==0.2.18 array_record==0.8.6 tensorflow-datasets==4.9.10 mlxtend==0.25.0 wandb==0.31.0
  importlib_resources==7.1.0 cwevals==0.0.1b1 opentelemetry-api==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-common==0.66b2 opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2
  opentelemetry-exporter-http-transport==0.66b2 pydantic==2.14.4 pydantic_core==2.50.5 dm-tree==0.1.10
  immutabledict==4.3.1 platformdirs==4.14.9 portpicker==1.6.0 simple-parsing==0.1.9 tensorflow-metadata==1.21.0
  termcolor==3.3.0 toml==0.10.2 annotated-types==0.8.0 distro==1.9.0 docstring_parser==0.18.0
  googleapis-common-protos==1.76.0 typing-inspection==0.4.5 sniffio==1.3.1 tzdata==2026.6
)
IMAGE_SDISTS=(promise==2.3)

TINY=0 PY="" VENV="${XDG_CACHE_HOME:-$HOME/.cache}/clockwork-vae-jax/venv-gpu" WHEELS="" FETCH=""
ARGS=()
while (($#)); do
  case "$1" in
    --tiny) TINY=1 ARGS+=("$1") ;;
    --python) PY="$2" && shift ;;
    --venv) VENV="$2" && shift ;;
    --wheels) WHEELS="$2" && shift ;;
    --fetch-wheels) FETCH="$2" && shift ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

# The CUDA major version the driver supports (nvidia-smi's header), 12 where it cannot tell.
cuda_major() {
  local version
  version="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)"
  echo "${version:-12}"
}

# A venv with the pinned requirements and the GPU plugin of the pinned jax, made once (again when
# requirements.txt changes).
install_venv() {
  if [[ -f "$VENV/.installed" && "$VENV/.installed" -nt requirements.txt ]]; then
    return
  fi
  local cuda=12 jax_pin
  (($(cuda_major) >= 13)) && cuda=13
  jax_pin="$(sed -n 's/^jax==\([^ #]*\).*/\1/p' requirements.txt)"
  echo "installing requirements.txt and jax[cuda$cuda]==$jax_pin into $VENV ..."
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r requirements.txt "jax[cuda$cuda]==$jax_pin"
  touch "$VENV/.installed"
}

# IMAGE_EXTRAS as wheels for the image's Python (WHEEL_PYTHON, default 3.12) on x86-64 Linux.
fetch_wheels() {
  local platforms=() p
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
  done
  mkdir -p "$FETCH"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
    --implementation cp "${platforms[@]}" --platform any -d "$FETCH" "${IMAGE_EXTRAS[@]}"
  python3 -m pip wheel -q --no-deps -w "$FETCH" "${IMAGE_SDISTS[@]}"
  du -sh "$FETCH"
}

if [[ -n "$FETCH" ]]; then
  fetch_wheels
  exit 0
fi
if [[ -n "$WHEELS" ]]; then
  PY="${PY:-python3}"
  SITE="${TMPDIR:-/tmp}/clockwork-vae-jax-site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
elif ((TINY)); then
  PY="${PY:-.venv/bin/python}"
elif [[ -z "$PY" ]]; then
  install_venv
  PY="$VENV/bin/python"
fi
((TINY)) && export JAX_PLATFORMS=cpu
export PYTHONUNBUFFERED=1
exec "$PY" scripts/accelerator_check.py ${ARGS[@]+"${ARGS[@]}"}
