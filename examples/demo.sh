#!/usr/bin/env bash
# Show trainsafe's main job on the bundled examples: the linter on the buggy and
# fixed scripts, then the plugin watching the same buggy scripts run.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/trainsafe ] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'; } || exit 2

echo "== static: trainsafe lint examples/bad examples/fixed =="
.venv/bin/trainsafe lint --statistics examples/bad examples/fixed
echo
echo "== runtime: pytest --trainsafe runs every buggy example =="
.venv/bin/python -m pytest --trainsafe -q -p no:cacheprovider --no-header -rN --tb=short examples/demo
echo
echo "== runtime: the example model repository, correct code, under pytest --trainsafe =="
(cd examples/model_repo && ../../.venv/bin/python -m pytest --trainsafe -q -p no:cacheprovider)
