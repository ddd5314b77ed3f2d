import sys
from pathlib import Path

import pytest

# export_models must be importable by name: --factory paths and pickled modules refer to it.
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "models"
