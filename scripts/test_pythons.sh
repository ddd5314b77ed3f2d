#!/usr/bin/env bash
# Runs the client, server and protos tests that need no torch under every other supported Python
# (3.10, 3.12, 3.13; 3.11 is the main venv's and runs the whole suite). Each interpreter comes from pyenv
# (or PATH) and gets its own .venv-pyXY with the `serve` and `test` extras; a missing interpreter is
# skipped with a printed reason. Exits non-zero when any interpreter's tests fail.
#
#   bash scripts/test_pythons.sh            # 3.10 3.12 3.13
#   bash scripts/test_pythons.sh 3.10       # just one
set -uo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.10 3.12 3.13)
# Not run here: the tests that import torch (they need the 3.11 venv), the slow ones (trained digits), and
# the ones that build venvs of their own (oldest client pins, tritonclient): they test packaging, not the
# interpreter, and run in the main suite.
IGNORE=(tests/client/test_client_oldest_pins.py tests/serve/test_tritonclient_conformance.py
    tests/serve/test_http_tritonclient.py)
while IFS= read -r file; do IGNORE+=("$file"); done < <(
    grep -lE '^(import torch|from torch)' -r tests/client tests/serve tests/protos --include='test_*.py')

find_python() {
    # pyenv's shims run only the active version: look in its versions folder (newest patch release first),
    # then on PATH (an interpreter that runs, not a shim that refuses).
    local candidate
    for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".* 2>/dev/null | sort -rV); do
        if [ -x "$candidate/bin/python$1" ]; then
            echo "$candidate/bin/python$1"
            return
        fi
    done
    if candidate=$(command -v "python$1") && "$candidate" -c '' 2>/dev/null; then
        echo "$candidate"
    fi
}

failed=()
for version in "${VERSIONS[@]}"; do
    python=$(find_python "$version")
    if [ -z "$python" ]; then
        echo "test_pythons: SKIPPED Python $version: no python$version interpreter (pyenv or PATH)"
        continue
    fi
    start=$(date +%s)
    venv=".venv-py${version/./}"
    # The main venv's pip fills the new one (`pip --python`): no ensurepip, no bytecode compiled up front.
    pip=("$venv/bin/python" -m pip)
    venv_args=()
    if [ -x .venv/bin/python ]; then
        pip=(.venv/bin/python -m pip --python "$venv/bin/python")
        venv_args=(--without-pip)
    fi
    if ! { [ -x "$venv/bin/python" ] || "$python" -m venv "${venv_args[@]}" "$venv"; } ||
        ! "${pip[@]}" install --quiet --no-compile --disable-pip-version-check -e '.[serve,test]' \
            >"$venv/pip-install.log" 2>&1; then
        cat "$venv/pip-install.log" 2>/dev/null
        echo "test_pythons: FAILED Python $version: cannot set up $venv"
        failed+=("$version")
        continue
    fi
    echo "test_pythons: Python $version ($("$venv/bin/python" -V 2>&1)) set up in $(( $(date +%s) - start ))s"
    args=()
    for file in "${IGNORE[@]}"; do args+=("--ignore=$file"); done
    if "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" --durations=15 "${args[@]}" \
        tests/protos tests/client tests/serve; then
        echo "test_pythons: Python $version passed in $(( $(date +%s) - start ))s"
    else
        echo "test_pythons: FAILED Python $version ($(( $(date +%s) - start ))s)"
        failed+=("$version")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "test_pythons: failed on Python ${failed[*]}"
    exit 1
fi
