#!/usr/bin/env bash
# The main job: set up, index images into a collection, search it once, then serve the API.
#   scripts/run.sh [--collection NAME] [--port 8000] [--no-serve] PATH...   index PATH... with BLIPSEARCH_MODEL
#   scripts/run.sh --demo                          tiny *random* model + generated images: exercises
#                                                  the whole pipeline offline; results are meaningless
# The data dir remembers its models (DATA_DIR/blipsearch.toml, see docs/cli.md), so the one
# `export` line printed at the end is all a later command needs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "${BLIPSEARCH_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh  # tests skip it: the venv is already there
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
data=${BLIPSEARCH_DATA_DIR:-./blipsearch-data}
if [ "$demo" = 1 ]; then data=${BLIPSEARCH_DATA_DIR:-./blipsearch-data/demo}; fi
mkdir -p "$data"
data=$(cd "$data" && pwd)  # absolute, so the export line works from any folder
export BLIPSEARCH_DATA_DIR=$data
index_flags=()
if [ "$demo" = 1 ]; then
  # Only the two models the demo uses (retrieval + captions), built once and kept on re-runs.
  .venv/bin/python scripts/make_test_models.py "$data/models" --only blip-itm,blip-caption --keep-existing >/dev/null
  [ -d "$data/images" ] || .venv/bin/python scripts/make_demo_images.py "$data/images" 64
  # The data dir remembers them: `index`, `search`, `caption`, `serve` need no --model / variable.
  .venv/bin/blipsearch config set model "$data/models/blip-itm" caption_model "$data/models/blip-caption" >/dev/null
  unset BLIPSEARCH_MODEL BLIPSEARCH_CAPTION_MODEL
  paths=("$data/images")
  collection=demo
  index_flags=(--captions)
  echo "demo: tiny RANDOM models in $data/models (scores and captions are meaningless; use a real checkpoint for real search)"
fi
if [ ${#paths[@]} -eq 0 ]; then
  echo "usage: scripts/run.sh [--collection NAME] PATH...   or   scripts/run.sh --demo" >&2
  exit 2
fi
.venv/bin/blipsearch index "${paths[@]}" --collection "$collection" ${index_flags[@]+"${index_flags[@]}"}
.venv/bin/blipsearch collections
.venv/bin/blipsearch search "a photo of a dog" --collection "$collection" -k 5
echo
echo "to go on in another shell, run this once:"
echo "  export BLIPSEARCH_DATA_DIR=\"$data\" PATH=\"$root/.venv/bin:\$PATH\""
echo "then e.g.:  blipsearch search \"TEXT\" -c $collection [-k 10] [--rerank] [--json]"
echo "            blipsearch search --image FILE -c $collection"
echo "            blipsearch index MORE_IMAGES -c $collection      blipsearch caption FILE"
echo "            blipsearch config show      (the settings this data dir remembers)"
if [ "$serve" = 1 ]; then
  echo "serving the API on http://127.0.0.1:$port (OpenAPI docs at /docs); Ctrl-C to stop"
  exec .venv/bin/blipsearch serve --port "$port"
fi
