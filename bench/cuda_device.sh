#!/usr/bin/env bash
# The CUDA sweep (`python -m bench.run --provider cuda`) on a GPU machine lent through the device tool.
#
# That machine has CUDA 13, PyTorch and a CPU-only onnxruntime, no network, and takes at most 64 MiB of files
# per call; onnxruntime-gpu's wheel is 256 MB. So the wheel travels in parts, one part per call, each call
# stashing its part outside the working tree, and the last call joins them, installs and runs the sweep.
# docs/performance.md ("The CUDA sweep") has the whole procedure and its device-time budget.
#
#   here:     bash bench/cuda_device.sh prepare      # .whl/pN/ (ignored by git): the parts, checksums
#   device:   bash bench/cuda_device.sh stash        # each call, carry=[".whl/pN"]: keep that part
#   device:   bash bench/cuda_device.sh run [FLAGS]  # after the last stash: join, install, sweep -> $OUT/cuda
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_GPU="onnxruntime-gpu==1.31.1"  # built for CUDA 13 (libcudart.so.13, libcublas.so.13), as that image is
# The server's health service; an old release, so its generated code accepts the image's protobuf.
HEALTH="grpcio-health-checking==1.66.2"
STASH=/root/ortserve-wheels
SITE=/tmp/ortserve-site
LIMIT_BYTES=$((64 * 1024 * 1024))

prepare() {
    rm -rf .whl && mkdir -p .whl/download
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl/download "$ORT_GPU" "$HEALTH"
    # What else travels with every call: the working tree (tracked and untracked files git does not ignore).
    local tree
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
    local part=$((LIMIT_BYTES - tree - 2 * 1024 * 1024))
    local big
    big=$(ls .whl/download/onnxruntime_gpu-*.whl)
    (cd .whl/download && sha256sum -- *.whl > ../SHA256SUMS)
    split -b "$part" -d -a 1 "$big" ".whl/$(basename "$big").part"
    local index=1
    for piece in .whl/*.part*; do
        mkdir -p ".whl/p$index" && mv "$piece" ".whl/p$index/"
        index=$((index + 1))
    done
    # The small wheel and the checksums ride with the first part.
    mv .whl/download/grpcio_health_checking-*.whl .whl/SHA256SUMS .whl/p1/
    rm -rf .whl/download
    echo "prepared $((index - 1)) part(s) of at most $((part / 1024 / 1024)) MiB: ${big##*/}"
    du -sh .whl/p*
}

stash() {
    mkdir -p "$STASH"
    cp .whl/p*/* "$STASH"/
    ls -l "$STASH"
}

run() {
    local workdir=/tmp/ortserve-wheels-joined
    rm -rf "$workdir" && mkdir -p "$workdir"
    local name
    name=$(basename "$(ls "$STASH"/onnxruntime_gpu-*.whl.part0)" .part0)
    cat "$STASH/$name".part* > "$workdir/$name"
    cp "$STASH"/grpcio_health_checking-*.whl "$STASH/SHA256SUMS" "$workdir/"
    (cd "$workdir" && sha256sum -c SHA256SUMS)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$workdir"/*.whl
    # ortserve without installing it: its packages are this tree's folders (pyproject's package-dir).
    mkdir -p "$SITE/ortserve"
    ln -sfn "$PWD/export" "$SITE/ortserve/export"
    ln -sfn "$PWD/serve" "$SITE/ortserve/serve"
    ln -sfn "$PWD/clients/python" "$SITE/ortserve/client"
    ln -sfn "$PWD/protos" "$SITE/ortserve/protos"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    # CUDA 13's libraries (cuBLAS, cuDNN, ...) come with the image's PyTorch as nvidia-* packages; the server
    # never imports torch, so onnxruntime's CUDA provider must find them on its own.
    local nvidia
    nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')
    LD_LIBRARY_PATH="$(find "$nvidia" -maxdepth 3 -type d -name lib | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    python3 - <<'PY'
import google.protobuf, grpc, numpy, onnxruntime, torch
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "grpcio", grpc.__version__,
      "protobuf", google.protobuf.__version__, "numpy", numpy.__version__)
import ortserve.serve.server  # noqa: F401  (fails here, not mid-run, if a dependency is missing)
PY
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    PYTHONUNBUFFERED=1 python3 -m bench.run --provider cuda --out "${OUT:-bench/results}/cuda" "$@"
}

case "${1:-}" in
    prepare) prepare ;;
    stash) stash ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash bench/cuda_device.sh prepare | stash | run [bench.run flags]" >&2; exit 2 ;;
esac
