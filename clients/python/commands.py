"""The client subcommands of `ortserve`: classify, infer, models, health.

Output goes to stdout; a failure prints one line `ortserve COMMAND: CODE: message` to stderr and
returns non-zero (1 for server and connection errors, bad inputs and files; 2 for usage errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .errors import InferenceServerError
from .sync_client import InferenceClient

DEFAULT_URL = "localhost:8001"
DEFAULT_TIMEOUT_S = 30.0


def _common_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=os.environ.get("ORTSERVE_URL", DEFAULT_URL),
        help=f"server gRPC address HOST:PORT (default: $ORTSERVE_URL or {DEFAULT_URL})",
    )
    group.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per call (default: %(default)s)"
    )
    group.add_argument("--ssl", action="store_true", help="use TLS (implied by the certificate options)")
    group.add_argument("--root-cert", type=Path, help="PEM root certificates to verify the server with")
    group.add_argument("--client-cert", type=Path, help="PEM client certificate chain (mutual TLS)")
    group.add_argument("--client-key", type=Path, help="PEM client private key (mutual TLS)")
    return parser


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"ortserve {command}", parents=[_common_parser()])
    if command == "classify":
        parser.description = "Classify images with a served image model (top-k labels and scores)."
        parser.add_argument("--model", required=True, help="model name")
        parser.add_argument("--top-k", type=int, default=5, help="classes per image (default: %(default)s)")
        parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    elif command == "infer":
        parser.description = "Run raw inference on tensors stored as .npy files."
        parser.add_argument("--model", required=True, help="model name")
        parser.add_argument(
            "--input",
            action="append",
            required=True,
            metavar="NAME=FILE.npy",
            help="an input tensor (repeat per input; a bare FILE.npy for a one-input model)",
        )
        parser.add_argument(
            "--output", action="append", metavar="NAME", help="an output to return (default: all)"
        )
        parser.add_argument("--save-dir", type=Path, help="save every output to DIR/NAME.npy")
    elif command == "models":
        parser.description = "List the server's model repository (name, version, state, reason)."
    elif command == "health":
        parser.description = "Check that the server (and a model) is live and ready; exit 1 when not."
        parser.add_argument("--model", help="also check that this model is ready")
    else:
        raise ValueError(f"unknown client command {command!r}")
    return parser


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


def _classify(client: InferenceClient, args: argparse.Namespace) -> int:
    results = client.classify(args.model, list(args.images), top_k=args.top_k)
    rows = [["IMAGE", "RANK", "LABEL", "SCORE"]]
    for path, top in zip(args.images, results, strict=True):
        rows += [[str(path), str(rank), label, f"{score:.4f}"] for rank, (label, score) in enumerate(top, 1)]
    sys.stdout.write(_table(rows))
    return 0


def _load_inputs(specs: list[str]) -> dict[str, np.ndarray] | np.ndarray:
    if len(specs) == 1 and "=" not in specs[0]:
        return np.load(specs[0], allow_pickle=False)
    inputs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input {spec!r} is not NAME=FILE.npy")
        inputs[name] = np.load(path, allow_pickle=False)
    return inputs


def _preview(array: np.ndarray, items: int = 6) -> str:
    flat = array.reshape(-1)
    shown = ", ".join(repr(v) if isinstance(v, bytes) else f"{v:.6g}" for v in flat[:items].tolist())
    return f"[{shown}{', ...' if flat.size > items else ''}]"


def _infer(client: InferenceClient, args: argparse.Namespace) -> int:
    outputs = client.infer(args.model, _load_inputs(args.input), outputs=args.output)
    rows = [["OUTPUT", "SHAPE", "DTYPE", "VALUES"]]
    rows += [[name, str(list(a.shape)), str(a.dtype), _preview(a)] for name, a in outputs.items()]
    sys.stdout.write(_table(rows))
    if args.save_dir is not None:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        for name, array in outputs.items():
            path = args.save_dir / f"{name}.npy"
            np.save(path, array, allow_pickle=array.dtype == object)
            sys.stdout.write(f"saved {path}\n")
    return 0


def _models(client: InferenceClient, args: argparse.Namespace) -> int:
    rows = [["NAME", "VERSION", "STATE", "REASON"]]
    rows += [[m.name, m.version or "-", m.state or "-", m.reason or "-"] for m in client.models()]
    sys.stdout.write(_table(rows))
    return 0


def _health(client: InferenceClient, args: argparse.Namespace) -> int:
    checks = [("server live", client.is_server_live()), ("server ready", client.is_server_ready())]
    if args.model:
        checks.append((f"model {args.model} ready", client.is_model_ready(args.model)))
    sys.stdout.write("".join(f"{what}: {'yes' if ok else 'no'}\n" for what, ok in checks))
    return 0 if all(ok for _, ok in checks) else 1


HANDLERS = {"classify": _classify, "infer": _infer, "models": _models, "health": _health}


def main(argv: list[str] | None, command: str) -> int:
    """Run client subcommand `command` with `argv` (its options); returns the exit code."""
    try:
        args = _parser(command).parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse has printed the usage error (2) or --help (0)
        return int(exc.code or 0)
    try:
        with InferenceClient(
            args.url,
            ssl=args.ssl,
            root_certificates=args.root_cert,
            private_key=args.client_key,
            certificate_chain=args.client_cert,
            timeout=args.timeout,
        ) as client:
            return HANDLERS[command](client, args)
    except InferenceServerError as exc:
        sys.stderr.write(f"ortserve {command}: {exc}\n")
    except ImportError as exc:
        sys.stderr.write(f"ortserve {command}: {exc}\n")
    except (OSError, ValueError, TypeError) as exc:
        sys.stderr.write(f"ortserve {command}: {type(exc).__name__}: {exc}\n")
    return 1
