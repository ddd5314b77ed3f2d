#!/usr/bin/env bash
# Runs the client, server and protos tests that need no torch under every other supported Python
# (3.10, 3.12, 3.13; 3.11 is the main venv's and runs the whole suite). Each interpreter comes from pyenv
# (or PATH) and gets its own .venv-pyXY with the `serve` and `test` extras; a missing interpreter is
# skipped with a printed reason. Exits non-zero when any interpreter's tests fail.
#
# The venvs are set up one after another. Each interpreter's test files are run as two halves (every other
# file), as soon as its venv is ready, TEST_PYTHONS_JOBS halves at a time (default 2: a half mostly waits
# on its server processes, so two keep 2 cores about busy); each half's output is printed whole when it ends.
#
#   bash scripts/test_pythons.sh                       # 3.10 3.12 3.13
#   bash scripts/test_pythons.sh 3.10                  # just one
#   TEST_PYTHONS_JOBS=1 bash scripts/test_pythons.sh   # one half after another
set -uo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.10 3.12 3.13)
JOBS=${TEST_PYTHONS_JOBS:-2}
[ "$JOBS" -ge 1 ] 2>/dev/null || JOBS=1
# The venvs are filled without bytecode (quicker set-up), so each module must be compiled once where it is
# first imported: with PYTHONDONTWRITEBYTECODE set, every server process the tests start would compile
# grpc, numpy and onnxruntime from source again (about 2 s of CPU each time).
unset PYTHONDONTWRITEBYTECODE
# Not run here: the tests that import torch (they need the 3.11 venv), the slow ones (trained digits), and
# the ones that build venvs of their own (oldest client pins, tritonclient): they test packaging, not the
# interpreter, and run in the main suite.
IGNORE=(tests/client/test_client_oldest_pins.py tests/serve/test_tritonclient_conformance.py
    tests/serve/test_http_tritonclient.py)
while IFS= read -r file; do IGNORE+=("$file"); done < <(
    grep -lE '^(import torch|from torch)' -r tests/client tests/serve tests/protos --include='test_*.py')
HALVES=("" "")
index=0
while IFS= read -r file; do
    [[ " ${IGNORE[*]} " == *" $file "* ]] && continue
    HALVES[index % 2]+=" $file"
    index=$((index + 1))
done < <(find tests/protos tests/client tests/serve -name 'test_*.py' | sort)
PYTEST_ARGS=(-q -p no:cacheprovider -m "not slow" --durations=15)

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

set_up() {  # set_up VERSION PYTHON VENV
    local version=$1 python=$2 venv=$3
    # The main venv's pip fills the new one (`pip --python`): no ensurepip, no bytecode compiled up front.
    local pip=("$venv/bin/python" -m pip) venv_args=()
    if [ -x .venv/bin/python ]; then
        pip=(.venv/bin/python -m pip --python "$venv/bin/python")
        venv_args=(--without-pip)
    fi
    if ! { [ -x "$venv/bin/python" ] || "$python" -m venv "${venv_args[@]}" "$venv"; } ||
        ! "${pip[@]}" install --quiet --no-compile --disable-pip-version-check -e '.[serve,test]' \
            >"$venv/pip-install.log" 2>&1; then
        cat "$venv/pip-install.log" 2>/dev/null
        echo "test_pythons: FAILED Python $version: cannot set up $venv"
        return 1
    fi
}

failed=()
declare -A job_of=() log_of=() started_at=() halves_left=() half_failed=()
finish_one() {
    # Waits for one of the running halves, prints its whole log and records its result.
    local pid status job version
    wait -n -p pid "${!job_of[@]}"
    status=$?
    job=${job_of[$pid]}
    version=${job% *}
    unset "job_of[$pid]"
    echo "test_pythons: ---- Python $version, half ${job#* } of 2 ----"
    cat "${log_of[$job]}"
    [ "$status" -eq 0 ] || half_failed[$version]=1
    halves_left[$version]=$((halves_left[$version] - 1))
    if [ "${halves_left[$version]}" -eq 0 ]; then
        if [ -z "${half_failed[$version]:-}" ]; then
            echo "test_pythons: Python $version passed in $(( $(date +%s) - ${started_at[$version]} ))s"
        else
            echo "test_pythons: FAILED Python $version ($(( $(date +%s) - ${started_at[$version]} ))s)"
            failed+=("$version")
        fi
    fi
}
# Background runs ignore the terminal's Ctrl-C: stop them with the script.
trap 'kill -TERM "${!job_of[@]}" 2>/dev/null; exit 130' INT TERM

for version in "${VERSIONS[@]}"; do
    python=$(find_python "$version")
    if [ -z "$python" ]; then
        echo "test_pythons: SKIPPED Python $version: no python$version interpreter (pyenv or PATH)"
        continue
    fi
    start=$(date +%s)
    venv=".venv-py${version/./}"
    if ! set_up "$version" "$python" "$venv"; then
        failed+=("$version")
        continue
    fi
    echo "test_pythons: Python $version ($("$venv/bin/python" -V 2>&1)) set up in $(( $(date +%s) - start ))s"
    started_at[$version]=$start
    halves_left[$version]=2
    for half in 1 2; do
        while [ ${#job_of[@]} -ge "$JOBS" ]; do finish_one; done
        job="$version $half"
        log_of[$job]="$venv/pytest-half$half.log"
        # shellcheck disable=SC2086 # the half's file list, split on spaces (test paths have none)
        "$venv/bin/python" -m pytest "${PYTEST_ARGS[@]}" ${HALVES[half - 1]} >"${log_of[$job]}" 2>&1 &
        job_of[$!]=$job
    done
done
while [ ${#job_of[@]} -gt 0 ]; do finish_one; done

if [ ${#failed[@]} -gt 0 ]; then
    echo "test_pythons: failed on Python ${failed[*]}"
    exit 1
fi
