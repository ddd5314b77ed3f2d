"""Re-vendor KServe's CRD schemas into tests/deploy/kserve_crds/ (run by hand when KServe is upgraded).

    python tests/deploy/vendor_kserve_crds.py PATH/TO/kserve/config/crd/full

Keeps each CRD's one served version's `openAPIV3Schema`, without `description` texts (most of the size),
as gzipped compact JSON (reproducible: sorted keys, mtime 0), plus the CRD's group, kind and version.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / "kserve_crds"
CRDS = ("servingruntimes", "clusterservingruntimes", "inferenceservices")


def _strip(value):
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key != "description"}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def vendor(source: Path) -> None:
    for plural in CRDS:
        crd = yaml.safe_load((source / f"serving.kserve.io_{plural}.yaml").read_text(encoding="utf-8"))
        (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
        document = {
            "apiVersion": f"{crd['spec']['group']}/{version['name']}",
            "kind": crd["spec"]["names"]["kind"],
            "openAPIV3Schema": _strip(version["schema"]["openAPIV3Schema"]),
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        (OUT / f"{plural}.json.gz").write_bytes(gzip.compress(text, mtime=0))


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
