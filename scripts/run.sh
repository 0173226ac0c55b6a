#!/usr/bin/env bash
# The main job: set up, index images into a collection, search it once, then serve the API.
#   scripts/run.sh [--collection NAME] [--port 8000] [--no-serve] PATH...   index PATH... with BLIPSEARCH_MODEL
#   scripts/run.sh --demo                          tiny *random* model + generated images: exercises
#                                                  the whole pipeline offline; results are meaningless
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
collection=images
demo=0
serve=1
port=8000
paths=()
while [ $# -gt 0 ]; do
  case "$1" in
    --collection) collection=$2; shift 2 ;;
    --demo) demo=1; shift ;;
    --no-serve) serve=0; shift ;;
    --port) port=$2; shift 2 ;;
    *) paths+=("$1"); shift ;;
  esac
done
if [ "$demo" = 1 ]; then
  export BLIPSEARCH_DATA_DIR=${BLIPSEARCH_DATA_DIR:-./blipsearch-data/demo}
  .venv/bin/python scripts/make_test_models.py "$BLIPSEARCH_DATA_DIR/models" >/dev/null
  .venv/bin/python scripts/make_demo_images.py "$BLIPSEARCH_DATA_DIR/images" 64
  export BLIPSEARCH_MODEL="$BLIPSEARCH_DATA_DIR/models/blip-itm"
  paths=("$BLIPSEARCH_DATA_DIR/images")
  collection=demo
  echo "demo: tiny RANDOM model at $BLIPSEARCH_MODEL (scores are meaningless; use a real checkpoint for real search)"
fi
if [ ${#paths[@]} -eq 0 ]; then
  echo "usage: scripts/run.sh [--collection NAME] PATH...   or   scripts/run.sh --demo" >&2
  exit 2
fi
.venv/bin/blipsearch index "${paths[@]}" --collection "$collection"
.venv/bin/blipsearch collections
.venv/bin/blipsearch search "a photo of a dog" --collection "$collection" -k 5
echo
env_hint=""
if [ "$demo" = 1 ]; then env_hint="BLIPSEARCH_DATA_DIR=$BLIPSEARCH_DATA_DIR "; fi
echo "search more:  ${env_hint}.venv/bin/blipsearch search \"TEXT\" --collection $collection [-k 10] [--rerank] [--json]"
echo "              ${env_hint}.venv/bin/blipsearch search --image FILE --collection $collection"
if [ "$serve" = 1 ]; then
  echo "serving the API on http://127.0.0.1:$port (OpenAPI docs at /docs); Ctrl-C to stop"
  exec .venv/bin/blipsearch serve --port "$port"
fi
