#!/usr/bin/env bash
# Wheels that bench/gpu.py needs on a lent GPU machine whose Python (3.12, CUDA torch, torchvision,
# numpy, scipy, opencv, Pillow, matplotlib, tqdm) lacks them: faiss-cpu and utm. Downloaded here
# (only the package registry is reachable from this side) into .whl/, which git ignores locally.
#
#   bash bench/gpu_wheels.sh            # then carry .whl to the machine (see bench/gpu.py)
#   bash bench/gpu_wheels.sh faiss-gpu-cu12==1.14.1.post1   # extra wheels by name (faiss-gpu-cu12
#       also needs CUDA 12's cuBLAS and runtime: nvidia-cublas-cu12 alone is ~600 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    "faiss-cpu==$(sed -n 's/^faiss-cpu==//p' constraints.txt)" "utm==$(sed -n 's/^utm==//p' constraints.txt)" "$@"
ls -la .whl
du -sh .whl
