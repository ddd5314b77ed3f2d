"""The one table of what ortserve does with each config.pbtxt field and `parameters` key.

A model's parsed config is walked generically (ListFields, recursively) against these tables, so a field
added to model_config.proto is reported as not honoured until someone says here what ortserve does with
it. Fields that are set but not honoured are warned about at load (or refuse the load with
--strict-config-fields); unknown `parameters` keys are named with the closest known key.
"""

from __future__ import annotations

import difflib

from google.protobuf.message import Message

HONOURED, REFUSED = "honoured", "refused"

# Dotted field path -> (kind, what ortserve does). A path covers its whole subtree; a message path that is
# not listed is walked into when some listed path lies below it, and reported as not honoured otherwise.
FIELDS: dict[str, tuple[str, str]] = {
    "name": (HONOURED, "must match the model folder's name (or --model-name)"),
    "platform": (HONOURED, "onnxruntime_onnx only; anything else refuses the load"),
    "backend": (HONOURED, "onnxruntime only; anything else refuses the load"),
    "version_policy": (HONOURED, "latest (default 1), all, specific"),
    "max_batch_size": (HONOURED, "0 = not batched; completed from the ONNX model when absent"),
    "input.name": (HONOURED, "must name an ONNX graph input"),
    "input.data_type": (HONOURED, "checked against the ONNX type"),
    "input.dims": (HONOURED, "merged with the ONNX shape; requests are checked against them"),
    "input.format": (HONOURED, "reported in ModelConfig for clients laying out images; no conversion"),
    "input.optional": (HONOURED, "the input may be left out of a request"),
    "input.reshape": (REFUSED, "not supported: the load fails"),
    "output.name": (HONOURED, "must name an ONNX graph output"),
    "output.data_type": (HONOURED, "checked against the ONNX type"),
    "output.dims": (HONOURED, "merged with the ONNX shape"),
    "output.label_filename": (HONOURED, "labels for the classification extension, inside the model folder"),
    "output.reshape": (REFUSED, "not supported: the load fails"),
    "optimization.graph.level": (HONOURED, "onnxruntime graph optimization level (Triton's numbers)"),
    "dynamic_batching.preferred_batch_size": (
        HONOURED,
        "each size is warmed up at load; with a queue delay, the largest is what an idle instance waits for",
    ),
    "dynamic_batching.max_queue_delay_microseconds": (HONOURED, "how long a batch may wait to fill"),
    "dynamic_batching.priority_levels": (HONOURED, "request `priority` parameter, 1 = highest"),
    "dynamic_batching.default_priority_level": (HONOURED, "priority of requests that give none"),
    "dynamic_batching.default_queue_policy.timeout_action": (HONOURED, "REJECT or DELAY on queue timeout"),
    "dynamic_batching.default_queue_policy.default_timeout_microseconds": (HONOURED, "queue timeout"),
    "dynamic_batching.default_queue_policy.allow_timeout_override": (
        HONOURED,
        "request `timeout` parameter may shorten it",
    ),
    "dynamic_batching.default_queue_policy.max_queue_size": (HONOURED, "more queued requests: UNAVAILABLE"),
    "dynamic_batching.priority_queue_policy": (HONOURED, "a priority level's own queue policy"),
    "sequence_batching": (HONOURED, "stateful sequences (correlation id, start/end flags)"),
    "ensemble_scheduling": (REFUSED, "not supported: the load fails"),
    "instance_group.name": (HONOURED, "names the instance"),
    "instance_group.kind": (HONOURED, "KIND_CPU, KIND_GPU (CUDA, never a silent CPU fallback), KIND_AUTO"),
    "instance_group.count": (HONOURED, "onnxruntime sessions per device"),
    "instance_group.gpus": (HONOURED, "CUDA device ids"),
    "default_model_filename": (HONOURED, "file in each version folder (default model.onnx)"),
    "parameters": (HONOURED, "see PARAMETERS"),
}

# config `parameters` key -> (kind, what ortserve does). INFORMATIONAL keys are carried in ModelConfig for
# clients and change nothing in serving; SERVER_SET keys are written by the server (a value in config.pbtxt
# is replaced, so setting one is warned about).
INFORMATIONAL, SERVER_SET = "informational", "server-set"
PARAMETERS: dict[str, tuple[str, str]] = {
    "intra_op_thread_count": (HONOURED, "onnxruntime intra-op threads"),
    "inter_op_thread_count": (HONOURED, "onnxruntime inter-op threads (parallel execution mode)"),
    "graph_optimization_level": (HONOURED, "ORT_DISABLE_ALL .. ORT_ENABLE_ALL or Triton's -1/0/1"),
    "optimized_model_filepath": (HONOURED, "where onnxruntime saves the optimized graph"),
    "allow_spinning": (HONOURED, "auto, 0 or 1: how onnxruntime's threads wait"),
    "dynamic_block_base": (HONOURED, "onnxruntime's session.dynamic_block_base: smaller work shards"),
    "allow_zero_size_dims": (HONOURED, "the model declares zero-sized dimensions valid"),
    "max_input_dims": (HONOURED, "upper bounds of dynamic input dimensions"),
    "execution_provider": (SERVER_SET, "the providers in use, reported by the server"),
    "preprocessing": (INFORMATIONAL, "written by ortserve export: how clients prepare inputs"),
    "exporter": (INFORMATIONAL, "written by ortserve export"),
    "kind": (INFORMATIONAL, "written by ortserve export"),
    "precision": (INFORMATIONAL, "written by ortserve export"),
    "source": (INFORMATIONAL, "written by ortserve export"),
    "stateful": (INFORMATIONAL, "written by ortserve export --stateful: state mode and names, for clients"),
}


def _walks_into(path: str) -> bool:
    prefix = path + "."
    return any(known.startswith(prefix) for known in FIELDS)


def _walk(message: Message, prefix: str, found: dict[str, None]) -> None:
    for field, value in message.ListFields():
        path = prefix + field.name
        if path in FIELDS:
            continue
        is_message = field.message_type is not None and not field.message_type.GetOptions().map_entry
        if is_message and _walks_into(path):
            for item in value if field.is_repeated else [value]:
                _walk(item, path + ".", found)
        else:
            found[path] = None


def unhonoured_fields(config: Message) -> list[str]:
    """Dotted paths of the fields set in `config` that ortserve does not honour, in config order."""
    found: dict[str, None] = {}
    _walk(config, "", found)
    return list(found)


def parameter_notes(parameters) -> list[str]:
    """One note per `parameters` key that changes nothing: unknown (with the closest known key) or
    written by the server."""
    notes = []
    for key in parameters:
        known = PARAMETERS.get(key)
        if known is None:
            close = difflib.get_close_matches(key, PARAMETERS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(PARAMETERS))})"
            notes.append(f"parameter '{key}' is not known to ortserve{hint}")
        elif known[0] == SERVER_SET:
            notes.append(
                f"parameter '{key}' is set by the server ({known[1]}); the config's value is replaced"
            )
    return notes


def config_notes(config: Message) -> list[str]:
    """Everything in a parsed config.pbtxt that ortserve will not act on, one line each."""
    notes = [f"{path} is not honoured by ortserve and is ignored" for path in unhonoured_fields(config)]
    return notes + parameter_notes(config.parameters)
