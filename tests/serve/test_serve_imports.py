"""The dependency direction: the server never imports torch (nor the exporter)."""

from __future__ import annotations

import subprocess
import sys


def test_serving_a_repository_never_imports_torch():
    modules = [
        "ortserve.serve.cli",
        "ortserve.serve.server",
        "ortserve.serve.service",
        "ortserve.serve.batcher",
    ]
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in modules)
        + "print(sorted(m for m in ('torch', 'torchvision', 'ortserve.export') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
