#!/usr/bin/env bash
# The issue-6 GPU check, prepared to run in one call on a lent GPU machine.
#
#   benchmarks/gpu_check.sh fetch   # here (package registries reachable): wheels -> wheels/
#   benchmarks/gpu_check.sh run     # there, from the repo root, with `carry: ["wheels"]`
#
# The GPU image has python3 with a CUDA torch, JAX with its CUDA plugin, numpy, PyYAML, tqdm
# and tensorboard, but not Gymnasium, MuJoCo, MJX or pydantic, and nothing can be fetched
# there; `fetch` downloads those
# (pinned as in constraints.txt) for its Python 3.12 / x86-64, `run` installs them into a venv
# that sees the image's packages and writes the tables under $OUT (default: runs/gpu_check).
# It times a Navigation2D MAML-TRPO iteration (paper batch, port network) on CPU and GPU, and
# HalfCheetahVel 40 x 20 x 100 with the learner on the GPU (sampling in CPU workers, then
# batched MuJoCo on CPU threads, then MJX on the GPU: the whole iteration there), and the MJX
# sampler's env steps/s at 4k-64k parallel envs against batched MuJoCo on the CPU cores.
# Compare the GPU Navigation2D time with benchmarks/RESULTS.md's CPU figure for the 2-core
# machine as well as with the GPU machine's own CPU row.
set -euo pipefail
cd "$(dirname "$0")/.."

pin() { grep -i "^$1==" constraints.txt; }

case "${1:-}" in
fetch)
    mkdir -p wheels
    pip download --no-deps --only-binary=:all: -d wheels \
        --python-version 3.12 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        "$(pin gymnasium)" "$(pin mujoco)" "$(pin glfw)" "$(pin PyOpenGL)" \
        "$(pin farama-notifications)" "$(pin pydantic)" "$(pin pydantic_core)" \
        "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin mujoco-mjx)" "$(pin trimesh)"
    ;;
run)
    out="${OUT:-runs/gpu_check}"
    mkdir -p "$out"
    python3 -m venv --system-site-packages /tmp/gpu_check_env
    /tmp/gpu_check_env/bin/pip install --no-index --no-deps --find-links wheels wheels/*.whl
    py=/tmp/gpu_check_env/bin/python
    export PYTHONUNBUFFERED=1 MUJOCO_GL=egl XLA_PYTHON_CLIENT_PREALLOCATE=false
    "$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
    "$py" -m benchmarks --out "$out" iteration --family nav --net port --iterations 5 \
        --variants fast-autograd fast fast+fisher20% --devices cpu cuda 2>&1 | grep -v "it/s" | tee "$out/nav.txt"
    "$py" -m benchmarks --out "$out" iteration --family cheetah --net port --tasks 40 \
        --episodes 20 --horizon 100 --iterations 2 --variants fast --devices cpu cuda 2>&1 \
        | grep -v "it/s" | tee "$out/cheetah.txt"
    "$py" -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/device.txt"
    "$py" -m benchmarks --out "$out" mjx --device cuda --envs 4096 16384 65536 --repeats 2 \
        2>&1 | tee "$out/mjx.txt"
    "$py" -m benchmarks --out "$out" iteration --family cheetah --net port --tasks 40 \
        --episodes 20 --horizon 100 --iterations 2 --variants fast+mujoco fast+mjx \
        --devices cuda 2>&1 | grep -v "it/s" | tee "$out/mjx_iteration.txt"
    ;;
*)
    echo "usage: $0 fetch|run" >&2
    exit 2
    ;;
esac
