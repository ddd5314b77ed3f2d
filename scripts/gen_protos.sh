#!/usr/bin/env bash
# Regenerate the Python bindings in protos/ from protos/*.proto.
#
#   scripts/gen_protos.sh          regenerate and overwrite the committed files
#   scripts/gen_protos.sh --check  regenerate into a temp dir; exit 1 if the
#                                  committed files differ (used by CI)
#
# The generator is pinned on purpose: code emitted by an old protoc runs on
# every newer protobuf runtime, not the other way round. grpcio-tools 1.66.2
# bundles protoc 27.x (protobuf Python 5.27), the oldest runtime we support
# (pyproject: protobuf>=5.27.2). It lives in its own venv, .venv-protoc, so it
# never constrains the project's environment. Override with GEN_PROTOS_VENV /
# GRPCIO_TOOLS_SPEC (e.g. a local wheel path) if needed.
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.66.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="$ROOT/protos"
VENV="${GEN_PROTOS_VENV:-$ROOT/.venv-protoc}"
SPEC="${GRPCIO_TOOLS_SPEC:-grpcio-tools==$GRPCIO_TOOLS_VERSION}"
PROTOS=(model_config.proto grpc_service.proto)
GENERATED=(
  model_config_pb2.py model_config_pb2.pyi
  grpc_service_pb2.py grpc_service_pb2.pyi grpc_service_pb2_grpc.py
)

mode="write"
case "${1:-}" in
  "") ;;
  --check) mode="check" ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# --- generator venv --------------------------------------------------------
installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true
}
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "gen_protos: creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
if [[ "$(installed_version)" != "$GRPCIO_TOOLS_VERSION" ]]; then
  echo "gen_protos: installing $SPEC into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC"
fi
if [[ "$(installed_version)" != "$GRPCIO_TOOLS_VERSION" ]]; then
  echo "gen_protos: $VENV has grpcio-tools '$(installed_version)', need $GRPCIO_TOOLS_VERSION" >&2
  exit 1
fi

# --- generate ---------------------------------------------------------------
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# Run from protos/ with relative paths so nothing machine-specific ends up in
# the output.
(
  cd "$PROTO_DIR"
  "$VENV/bin/python" -m grpc_tools.protoc -I . \
    --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
    "${PROTOS[@]}"
)

# protoc emits top-level imports (`import model_config_pb2 as ...`); the
# modules live in the package ortserve.protos, so make them package-relative.
for f in "${GENERATED[@]}"; do
  [[ -f "$OUT/$f" ]] || { echo "gen_protos: protoc did not produce $f" >&2; exit 1; }
  sed -i -E \
    -e 's/^import (model_config_pb2|grpc_service_pb2) as /from . import \1 as /' \
    -e 's/^import (model_config_pb2|grpc_service_pb2)$/from . import \1/' \
    "$OUT/$f"
done

# --- write or compare ---------------------------------------------------------
if [[ "$mode" == "check" ]]; then
  status=0
  for f in "${GENERATED[@]}"; do
    if [[ ! -f "$PROTO_DIR/$f" ]]; then
      echo "gen_protos --check: protos/$f is missing" >&2
      status=1
    elif ! cmp -s "$OUT/$f" "$PROTO_DIR/$f"; then
      echo "gen_protos --check: protos/$f is out of date:" >&2
      diff -u "$PROTO_DIR/$f" "$OUT/$f" | head -n 40 >&2 || true
      status=1
    fi
  done
  if [[ $status -ne 0 ]]; then
    echo "gen_protos --check: FAILED - generated code does not match protos/*.proto;" \
         "run scripts/gen_protos.sh and commit the result." >&2
    exit 1
  fi
  echo "gen_protos --check: OK (grpcio-tools $GRPCIO_TOOLS_VERSION)"
else
  for f in "${GENERATED[@]}"; do
    cp "$OUT/$f" "$PROTO_DIR/$f"
  done
  echo "gen_protos: wrote ${GENERATED[*]} to protos/ (grpcio-tools $GRPCIO_TOOLS_VERSION)"
fi
