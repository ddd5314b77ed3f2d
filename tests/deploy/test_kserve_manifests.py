"""deploy/kserve/: validated strictly against KServe's CRD schemas (vendored), checked against the facts
KServe relies on, and the runtime's own args start a real ortserve on what KServe puts at /mnt/models.

Strict means what `kubectl apply --validate=strict` does: a field the schema does not declare is an error
(CRD schemas are structural, so the API server would otherwise drop it silently).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import json
import sys
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import onnx_models as models  # noqa: E402
from serverproc import start_server  # noqa: E402

ROOT = TESTS.parent
KSERVE = ROOT / "deploy" / "kserve"
CRDS = Path(__file__).resolve().parent / "kserve_crds"
SCHEMA_FILES = {
    "ServingRuntime": "servingruntimes.json.gz",
    "ClusterServingRuntime": "clusterservingruntimes.json.gz",
    "InferenceService": "inferenceservices.json.gz",
}
TAKEN_ONNX_PRIORITIES = {1: "Triton", 2: "OpenVINO"}
# Enough of ObjectMeta for these manifests (the CRD schema leaves metadata to the API server).
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(schema):
    """The schema with unknown fields refused wherever it lists properties and does not say otherwise."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    if result.get("x-kubernetes-int-or-string") and "type" not in result and "anyOf" not in result:
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return result


@functools.cache
def load_validator(kind: str) -> jsonschema.Draft7Validator:
    vendored = json.loads(gzip.decompress((CRDS / SCHEMA_FILES[kind]).read_bytes()))
    assert vendored["kind"] == kind
    schema = strict(vendored["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": vendored["apiVersion"]}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def documents(name: str) -> list[dict]:
    return list(yaml.safe_load_all((KSERVE / name).read_text(encoding="utf-8")))


def errors_of(document: dict) -> list[str]:
    validator = load_validator(document["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


ALL_DOCUMENTS = [
    pytest.param(doc, id=f"{name}:{doc['metadata']['name']}")
    for name in ("servingruntime.yaml", "clusterservingruntime.yaml", "inferenceservice.yaml")
    for doc in documents(name)
]
RUNTIMES = documents("servingruntime.yaml")


@pytest.mark.parametrize("document", ALL_DOCUMENTS)
def test_manifest_validates_strictly_against_the_crd(document):
    assert errors_of(document) == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ((), "bogus"),
        (("spec",), "supportedModelFormat"),  # a typo of supportedModelFormats
        (("spec", "containers", 0), "portz"),
        (("spec", "containers", 0, "readinessProbe", "httpGet"), "paht"),
        (("spec", "supportedModelFormats", 0), "autoselect"),
    ],
)
def test_unknown_fields_are_refused(path, field):
    document = copy.deepcopy(RUNTIMES[0])
    target = document
    for key in path:
        target = target[key]
    target[field] = "x"
    problems = errors_of(document)
    assert any(f"'{field}' was unexpected" in problem for problem in problems), problems


def test_unknown_inferenceservice_field_and_wrong_types_are_refused():
    document = copy.deepcopy(documents("inferenceservice.yaml")[0])
    document["spec"]["predictor"]["model"]["storageURI"] = "gs://x"  # the field is storageUri
    document["spec"]["predictor"]["minReplicas"] = "one"
    problems = errors_of(document)
    assert any("'storageURI' was unexpected" in p for p in problems), problems
    assert any("minReplicas" in p and "'one' is not of type 'integer'" in p for p in problems), problems


def _args(container) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r["metadata"]["name"])
def test_runtime_follows_kserve_rules(runtime):
    spec = runtime["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    (onnx,) = [f for f in spec["supportedModelFormats"] if f["name"] == "onnx"]
    assert onnx["autoSelect"] is True and onnx["priority"] not in TAKEN_ONNX_PRIORITIES, onnx
    args = _args(container)
    assert args["model-repository"] == "/mnt/models" and args["model-name"] == "{{.Name}}"
    for listener in ("grpc", "http", "metrics"):
        assert args[f"{listener}-address"] == "0.0.0.0", f"--{listener}-address must bind all interfaces"
    (port,) = container["ports"]  # Knative: exactly one port
    if spec["protocolVersions"] == ["grpc-v2"]:
        assert port == {"name": "h2c", "containerPort": int(args["grpc-port"]), "protocol": "TCP"}
        assert container["readinessProbe"]["grpc"]["port"] == port["containerPort"]
    else:
        assert spec["protocolVersions"] == ["v2"]
        assert port == {"name": "http1", "containerPort": int(args["http-port"]), "protocol": "TCP"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
        assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    annotations = spec["annotations"]
    assert annotations["prometheus.kserve.io/port"] == args["metrics-port"]
    assert annotations["prometheus.io/port"] == args["metrics-port"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


def test_both_protocols_offered_without_a_priority_clash():
    offered = [v for runtime in RUNTIMES for v in runtime["spec"]["protocolVersions"]]
    assert sorted(offered) == ["grpc-v2", "v2"], "each protocol in exactly one runtime (one port each)"


def test_cluster_runtimes_are_twins_of_the_namespaced_ones():
    cluster = documents("clusterservingruntime.yaml")
    assert [c["kind"] for c in cluster] == ["ClusterServingRuntime"] * len(RUNTIMES)
    assert [(c["metadata"], c["spec"]) for c in cluster] == [(r["metadata"], r["spec"]) for r in RUNTIMES]


def test_inference_services_pick_our_runtimes():
    names = {r["metadata"]["name"]: r["spec"]["protocolVersions"] for r in RUNTIMES}
    for service in documents("inferenceservice.yaml"):
        model = service["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] == "onnx"
        assert model["protocolVersion"] in names[model["runtime"]], "an unset protocolVersion means v1"
        assert model["storageUri"]


# --- the runtime's args start a real server ------------------------------------------------------------

LAYOUTS = ["repository_root", "model_directory", "bare_model"]


def write_layout(layout: str, root: Path) -> None:
    """What KServe's storage initializer leaves at /mnt/models for each storageUri layout."""
    model, config = models.linear_classifier(), "max_batch_size: 8"
    if layout == "repository_root":  # NAME/config.pbtxt, NAME/1/model.onnx
        models.write_model(root, "classifier", model, config)
    elif layout == "model_directory":  # config.pbtxt, 1/model.onnx
        (root / "1").mkdir()
        (root / "1" / "model.onnx").write_bytes(model.SerializeToString())
        (root / "config.pbtxt").write_text(config, encoding="utf-8")
    elif layout == "bare_model":  # model.onnx, no config.pbtxt
        (root / "model.onnx").write_bytes(model.SerializeToString())
    else:
        raise ValueError(layout)


def runtime_args(runtime: dict, name: str, repository: Path) -> list[str]:
    """The container args as KServe renders them, with free ports and the test's repository."""
    rendered = []
    for arg in runtime["spec"]["containers"][0]["args"]:
        flag, _, value = arg.partition("=")
        value = value.replace("{{.Name}}", name)
        if flag.endswith("-port"):
            value = "0"
        elif flag == "--model-repository":
            value = str(repository)
        rendered.append(f"{flag}={value}")
    return rendered


def _known_flags(args: list[str]) -> list[str]:
    from ortserve.serve.settings import ServerSettings

    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    return [arg for arg in args if arg.partition("=")[0][2:].replace("-", "_") in fields]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_runtime_args_serve_the_layout(layout, tmp_path):
    (runtime,) = [r for r in RUNTIMES if r["metadata"]["name"] == "ortserve"]
    repository = tmp_path / "mnt-models"
    repository.mkdir()
    write_layout(layout, repository)
    args = runtime_args(runtime, "classifier", repository)
    known = _known_flags(args)
    if known != args and layout != "repository_root":  # --model-name comes with the /mnt/models layouts work
        pytest.skip(f"this server lacks {sorted(set(args) - set(known))}, which the {layout} layout needs")
    with start_server(repository, *known) as server:
        host, port = server.http_address.rsplit(":", 1)
        assert host == "0.0.0.0"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=30) as answer:
            assert answer.status == 200
        x = np.ones((1, 4), np.float32)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]}
        request = urllib.request.Request(
            f"{base}/v2/models/classifier/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            outputs = {o["name"]: o["data"] for o in json.loads(answer.read())["outputs"]}
        expected = models.classifier_reference(x)["logits"].reshape(-1)
        np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-5, atol=1e-6)
