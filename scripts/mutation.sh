#!/bin/sh
# Planted-mutant testing (slow, minutes per mutant on 2 cores; not part of `make test` / CI).
#   scripts/mutation.sh                      every mutant against the tests of HEAD
#   scripts/mutation.sh --tests-rev REV      the same mutants against an older revision's tests
#   scripts/mutation.sh --only NAME,NAME     a few mutants;  --list: what they plant
# Results and the reasons of the survivors: docs/mutation.md.
cd "$(dirname "$0")/.." || exit 1
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/mutation.py "$@"
