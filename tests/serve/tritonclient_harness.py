"""What the tritonclient check scripts share (gRPC: tritonclient_checks.py, REST:
tritonclient_http_checks.py): the check registry, the run that turns checks into the JSON report, and the
linear model's reference answer.

Standalone like them (they run in the tritonclient virtual environment): numpy and the standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable

import numpy as np

RTOL, ATOL = 1e-5, 1e-5


class Skip(Exception):  # noqa: N818 - a signal, not an error
    """The spec lacks what this check needs."""


class Checks:
    """Named checks in registration order; each returns a detail string or raises (AssertionError, the
    client's error, or Skip)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Callable]] = []

    def __call__(self, name: str):
        def register(function):
            self.entries.append((name, function))
            return function

        return register

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    def run(self, ctx: object, client_error: type) -> list[dict]:
        """Every check against `ctx`: [{"name", "ok", "detail"}, ...]; one check's failure stops none."""
        report = []
        for name, function in self.entries:
            try:
                report.append({"name": name, "ok": True, "detail": function(ctx)})
            except Skip as exc:
                report.append({"name": name, "ok": True, "detail": f"skipped: {exc}"})
            except (AssertionError, client_error) as exc:
                report.append({"name": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
            except Exception:  # noqa: BLE001 - a check that crashes is reported, the others still run
                report.append({"name": name, "ok": False, "detail": traceback.format_exc(limit=3)})
        return report


def read_spec(argv: list[str] | None, description: str) -> dict:
    """The JSON spec named on the command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("spec", help="path of the JSON spec")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as handle:
        return json.load(handle)


def emit(report: list[dict]) -> int:
    """Print the report on stdout; the exit status: 1 if any check failed."""
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0 if all(entry["ok"] for entry in report) else 1


def linear_input(linear: dict, rows: int, seed: int) -> np.ndarray:
    """`rows` rows for the spec's linear model, the same for the same seed."""
    features = len(linear["weight"])
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(rows, features)).astype(np.float32)


def linear_expected(linear: dict, x: np.ndarray) -> np.ndarray:
    """What the spec's linear model answers for `x`: x @ weight + bias."""
    return x @ np.asarray(linear["weight"], dtype=np.float32) + np.asarray(linear["bias"], dtype=np.float32)


def close(got: np.ndarray | None, expected: np.ndarray, what: str) -> None:
    assert got is not None, f"{what}: output missing from the response"
    assert got.shape == expected.shape, f"{what}: shape {list(got.shape)}, expected {list(expected.shape)}"
    assert np.allclose(got, expected, rtol=RTOL, atol=ATOL), (
        f"{what}: max abs error {float(np.max(np.abs(got - expected)))}"
    )


def expect_error(call: Callable[[], object], client_error: type, status: str | tuple[str, ...]) -> str:
    """Run `call`, require a tritonclient error with `status` (or one of them); return 'status: message'."""
    wanted = (status,) if isinstance(status, str) else status
    try:
        call()
    except client_error as exc:
        got = exc.status()
        assert got in wanted, f"expected {' or '.join(wanted)}, got {got}: {exc.message()}"
        return f"{got}: {exc.message()}"
    raise AssertionError(f"expected {' or '.join(wanted)}, the call succeeded")
