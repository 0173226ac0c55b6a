#!/usr/bin/env bash
# Download, here, the wheels scripts/gpu_check.sh needs on the device machine (Python 3.12, no
# network there) into .whl/ (git-ignored; the device tool carries it: `carry: [".whl"]`).
# The device image has torch, transformers, numpy, pillow, pyarrow and pytest; it lacks FAISS and
# a few of blipsearch's pure-Python dependencies. FAISS: the CPU wheel travels (the reference
# the GPU numbers are compared with). The GPU wheels do not fit the device tool's 64 MiB carry
# limit (faiss-gpu 1.15.1 is 135 MB; faiss-gpu-cu12 needs nvidia-cublas-cu12, 581 MB), so on such
# a machine scripts/bench/gpu.py measures a torch brute-force search on the GPU against FAISS CPU
# and records that FAISS has no GPU there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d .whl faiss-cpu==1.15.1 pydantic-settings==2.16.3 python-dotenv==1.2.1
du -sh .whl
