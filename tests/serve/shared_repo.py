"""The repository most server tests share (written once per session by tests/serve/conftest.py)."""

from __future__ import annotations

import onnx_models as models

from ortserve.protos.datatypes import KSERVE_TO_NUMPY

DATATYPES = tuple(KSERVE_TO_NUMPY)
LABELS = ["cat", "dog", "bird"]

CLASSIFIER_CONFIG = """
max_batch_size: 8
output [ { name: "probabilities" label_filename: "labels.txt" } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 2000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def write_shared_repository(repo) -> None:
    """classifier (+ copies owned by single tests), identity_<DATATYPE>, add_two, time_series, fixed."""
    for name in ("classifier", "classifier_metrics", "classifier_stats", "classifier_batching"):
        models.write_model(repo, name, models.linear_classifier(), CLASSIFIER_CONFIG, labels=LABELS)
    for datatype in DATATYPES:
        models.write_model(repo, f"identity_{datatype.lower()}", models.identity(datatype))
    models.write_model(repo, "add_two", models.add_two(), "max_batch_size: 4\ndynamic_batching {}")
    models.write_model(repo, "time_series", models.time_series())
    models.write_model(repo, "fixed", models.fixed_shape())
