#!/usr/bin/env bash
# The whole test suite from a fresh clone: set up, lint, type-check, test.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
# Then the numeric test modules run again with the kernels of other x86-64 CPUs (see isa_pass below);
# BLIPSEARCH_TEST_ISA_PASSES=0 skips those passes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter]); fails on an upward import
scripts/ensure_chromium.sh  # Debian's headless Chromium for the page test
scripts/ensure_fonts.sh  # Debian's fonts and Tesseract for the OCR tests and bench
scripts/ensure_azurite.sh  # Azurite (npm) for the az:// source tests
export HF_HUB_OFFLINE=1  # tests build their own tiny checkpoints; never reach for a hub
# A throwaway PostgreSQL on loopback for the catalog / full-text tests (skipped if none can run).
scripts/with_postgres.sh .venv/bin/python -m pytest "$@"
# OpenCLIP checkpoints need torchvision, which pairs with another torch build: their tests run in
# their own venv (built once, then reused while pyproject.toml is unchanged).
scripts/openclip_tests.sh "$@"

# Float results differ between kernels (AVX-512 vs AVX2 vs plain SSE, bf16 dot products, batch
# sizes), so no test may depend on float ties. Prove it whatever this CPU is: re-run the numeric
# modules with PyTorch's own kernels (ATEN_CPU_CAPABILITY), MKL's and oneDNN's capped to what an
# AVX2-only CPU, and then a CPU without vector extensions, would run. (These caps only lower.)
isa_pass() {  # NAME ATEN MKL ONEDNN TEST_FILE...
  local name=$1 aten=$2 mkl=$3 onednn=$4
  shift 4
  echo "== numeric tests with $name kernels (ATEN_CPU_CAPABILITY=$aten MKL_ENABLE_INSTRUCTIONS=$mkl ONEDNN_MAX_CPU_ISA=$onednn)"
  ATEN_CPU_CAPABILITY=$aten MKL_ENABLE_INSTRUCTIONS=$mkl ONEDNN_MAX_CPU_ISA=$onednn \
    .venv/bin/python -m pytest -q -m "not slow" -p no:cacheprovider "$@"
}
if [[ "${BLIPSEARCH_TEST_ISA_PASSES:-1}" != "0" ]]; then
  isa_pass avx2 avx2 AVX2 AVX2 tests/test_moderation.py tests/test_embeddings.py tests/test_itm.py tests/test_fast_itm.py \
    tests/test_search_exact.py tests/test_eval_retrieval.py tests/test_eval_formats.py tests/test_rerank.py \
    tests/test_topk.py tests/test_filters.py tests/test_delete.py tests/test_captions.py tests/test_decode_draft.py
  # Scalar kernels are slow: the core tests only.
  isa_pass default default SSE4_2 SSE41 tests/test_moderation.py tests/test_embeddings.py tests/test_itm.py \
    tests/test_search_exact.py tests/test_eval_retrieval.py::test_itc_metrics_equal_brute_force \
    tests/test_eval_formats.py::test_lavis_file_itc_equals_transformers_on_pre_captioned_text
fi
