"""The client stays thin: importing it (and classifying ready-sized arrays) pulls in no heavy package."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "onnx", "PIL", "ortserve.serve", "ortserve.export")


def _loaded_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return eval(result.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def test_import_loads_no_heavy_package():
    assert _loaded_after("import ortserve.client") == []


def test_cli_dispatcher_import_loads_no_heavy_package():
    assert _loaded_after("import ortserve.client.cli, ortserve.client.commands") == []


def test_classifying_a_model_sized_array_needs_no_pillow(address: str):
    code = (
        "import numpy as np\n"
        "from ortserve.client import InferenceClient\n"
        f"with InferenceClient({address!r}) as client:\n"
        "    assert len(client.classify('image_u8', np.zeros((16, 16), np.uint8), top_k=2)) == 2\n"
    )
    assert _loaded_after(code) == []
