#!/usr/bin/env bash
# The OpenCLIP tests (tests/test_openclip.py), in their own virtual environment `.venv-openclip`.
#
# open_clip imports torchvision, and PyPI's torchvision does not pair with the torch build the
# main venv carries (torch==2.13.0, CPU). torch==2.14.1 + torchvision==0.29.1 pair (a CUDA build,
# ~5.5 GB), so they live here, apart from .venv; a constraints file pins them while blipsearch's
# own dependencies install, so nothing re-resolves torch. The venv is reused while its
# requirements are unchanged (a stamp file); BLIPSEARCH_OPENCLIP_VENV names another place.
# Extra arguments go to pytest. OPENCLIP_SETUP_ONLY=1 builds the venv and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BLIPSEARCH_OPENCLIP_VENV:-.venv-openclip}
PY=${PYTHON:-python3}
PINS="torch==2.14.1 torchvision==0.29.1"
EXTRA="open_clip_torch==3.3.0 pytest>=8 pytest-timeout>=2.3 httpx>=0.27 sentencepiece>=0.2"
STAMP="$VENV/.blipsearch-openclip-stamp"
WANT="$(printf '%s\n' "$PINS" "$EXTRA"; sha256sum pyproject.toml | cut -d' ' -f1)"

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "== building $VENV (torch 2.14.1 + torchvision 0.29.1 + open_clip)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  constraints="$VENV/constraints.txt"
  printf '%s\n' $PINS >"$constraints"
  "$VENV/bin/python" -m pip install -q $PINS
  # blipsearch's dependencies (not blipsearch itself: the tests import the working tree), torch pinned
  "$VENV/bin/python" -m pip install -q -c "$constraints" $EXTRA
  deps=$("$VENV/bin/python" - <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
)
  mapfile -t dep_list <<<"$deps"
  "$VENV/bin/python" -m pip install -q -c "$constraints" "${dep_list[@]}"
  "$VENV/bin/python" - <<'PY'
import torch, torchvision, open_clip
assert torch.__version__.startswith("2.14.1"), torch.__version__
print("torch", torch.__version__, "torchvision", torchvision.__version__, "open_clip", open_clip.__version__)
PY
  echo "$WANT" >"$STAMP"
fi
[[ "${OPENCLIP_SETUP_ONLY:-0}" == "1" ]] && exit 0

export HF_HUB_OFFLINE=1 BLIPSEARCH_PRECISION=exact
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_openclip.py "$@"
