#!/usr/bin/env bash
# The main job, end to end, on a local registry folder (./demo-registry, made afresh each run):
# compile two optimized versions of examples/qa_program.py offline, publish them, see what the optimizer changed,
# promote v1.1 to staging and then staging to prod, roll prod back, and show where everything points.
set -euo pipefail
cd "$(dirname "$0")/.."
export DSPYREG_REGISTRY=demo-registry
# Print each command as one could paste it (words with spaces or quotes stay quoted), then run it.
step() {
  local line="" word
  for word in "$@"; do
    if [[ $word =~ ^[][A-Za-z0-9_./:=+,@%-]+$ ]]; then line+=" $word"; else line+=" '${word//\'/\'\\\'\'}'"; fi
  done
  if [[ -t 1 ]]; then printf '\n\033[1m$%s\033[0m\n' "$line"; else printf '\n$%s\n' "$line"; fi
  "$@"
}

rm -rf demo-registry examples/build
step python examples/optimize.py examples/build
step dspyreg init
# The dev scores below are illustrative: the example is compiled against DSPy's DummyLM, not a real model.
step dspyreg publish examples/qa_program.py:DocsQA --state examples/build/qa-v1.0.json --name qa --version v1.0 \
  --optimizer BootstrapFewShot --trainset-size 8 --dev-score 0.62 --notes "first optimization"
step dspyreg publish examples/qa_program.py:DocsQA --state examples/build/qa-v1.1.json --name qa --version v1.1 \
  --optimizer COPRO+BootstrapFewShot --trainset-size 7 --dev-score 0.71 --notes "new instructions, more demos"
step dspyreg diff v1.0 v1.1
step dspyreg promote v1.0 --to prod --reason "first release"
step dspyreg promote v1.1 --reason "candidate"
step dspyreg promote staging --reason "v1.1 passed staging"
step dspyreg list
step dspyreg rollback --reason "prod answers regressed"
step dspyreg list
step dspyreg log
step dspyreg show prod
step python examples/run_prod.py
