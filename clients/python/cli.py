"""The `ortserve` command: dispatches to subcommands that live in the package owning them.

Subcommand modules are imported by name only when chosen, so the client-only install keeps
working (and stays light) while `export` and `serve` ask for their extras with a clear message.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with `main(argv) -> int`, extra it needs, one-line help)
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "export": ("ortserve.export.cli", "export", "export a PyTorch checkpoint to a validated ONNX model"),
    "train": (
        "ortserve.export.recipes.cli",
        "export",
        "train the bundled digits models (real data, offline)",
    ),
    "serve": ("ortserve.serve.cli", "serve", "serve a model repository over KServe v2 gRPC and REST"),
    "classify": ("ortserve.client.commands", None, "classify images with a served model"),
    "infer": ("ortserve.client.commands", None, "run raw inference on .npy tensors"),
    "models": ("ortserve.client.commands", None, "list the server's model repository"),
    "health": ("ortserve.client.commands", None, "check server (and model) liveness and readiness"),
    "quickstart": (
        "ortserve.export.quickstart",
        "export,serve",
        "train, export, serve and query the digits models",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: ortserve COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `ortserve COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage() + "\n")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"ortserve: unknown command {name!r}\n\n{_usage()}\n")
        return 2
    module_name, extra, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (install it with: pip install 'ortserve[{extra}]')" if extra else ""
        sys.stderr.write(f"ortserve {name}: missing dependency {exc.name or exc}{hint}\n")
        return 2
    # Client commands share one module; they dispatch on the command name.
    return int(module.main(rest, command=name) if extra is None else module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
