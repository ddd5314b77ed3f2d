#!/usr/bin/env bash
# Sets up ./.venv with everything ortserve needs (export, serve, client, dev tools), offline-friendly.
# torch/torchvision are installed first, pinned to the pair that pip finds on this machine's disk,
# so that no other requirement can pull a different (multi-GB) torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --no-compile torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet --no-compile -e '.[export,serve,dev]'
# The bytecode pip would compile one file at a time (about a minute of CPU here), compiled on every core
# instead. A file this Python cannot compile (a py312-only torch test helper) stays source, as with pip.
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages >/dev/null || true
echo "ortserve is set up in .venv (activate with: . .venv/bin/activate)"
