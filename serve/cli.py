"""`ortserve serve`: parse settings, set up logging, run the server; start-up errors exit with code 2."""

from __future__ import annotations

import logging
import os
import sys

from .settings import SettingsError, load_settings

LISTENING = "ORTSERVE_LISTENING"


def _announce(grpc_address: str, metrics_address: str | None, http_address: str | None = None) -> None:
    """The start-up contract: one line on stdout once the listeners are bound and the models loaded."""
    sys.stdout.write(
        f"{LISTENING} grpc={grpc_address} metrics={metrics_address or 'none'} http={http_address or 'none'}\n"
    )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        sys.stderr.write(f"ortserve serve: error: {exc}\n")
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.logging_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported here so that `--help` and settings errors stay fast.
    from .idle_loop import run
    from .server import EXIT_TIMED_OUT, StartupError, serve

    try:
        code = run(serve(settings, _announce))
    except StartupError as exc:
        sys.stderr.write(f"ortserve serve: error: {exc}\n")
        return 2
    if code == EXIT_TIMED_OUT:
        # onnxruntime runs still going would hold the interpreter's exit (it joins its worker threads).
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code
