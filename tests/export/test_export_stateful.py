"""Stateful (streaming) export: the step graph, its proof by streamed chunks, refusals, config.pbtxt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_models import (
    files_under,
    make_averaging_lstm,
    make_per_step_tagger,
    make_rnn,
    make_two_recurrent,
)
from google.protobuf import text_format

from ortserve.export.api import export_model
from ortserve.export.cli import main
from ortserve.export.errors import SpecError
from ortserve.export.recipes import digits
from ortserve.export.spec import ExportSpec
from ortserve.export.stateful import state_tensors
from ortserve.export.stateful_proof import NOT_STREAMABLE, StreamingProofError, load_session
from ortserve.export.streaming import CarriedState, onnxruntime_sequences, stream_rows
from ortserve.protos import model_config_pb2

FEATURES = 6


def spec(**options) -> ExportSpec:
    """Small validation grid (the streaming proof's own chunks and batches are fixed) for a fast export."""
    options.setdefault("exporter", "torchscript")
    return ExportSpec.sequence(
        10, FEATURES, stateful=True, batch_sizes=(1, 5), time_lengths=(1, 9), **options
    )


def config_of(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert "forward" not in vars(module)


def stream_against_torch(path: Path, model: torch.nn.Module, states, chunks=(2, 1, 5), batch=3) -> float:
    """Stream a random sequence through the file with the state carried; the worst gap to PyTorch."""
    session = load_session(path)
    sequence = np.random.default_rng(7).standard_normal((batch, sum(chunks), FEATURES), dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    stream = CarriedState(
        lambda feeds: dict(zip(names, session.run(None, feeds), strict=True)), [s.to_dict() for s in states]
    )
    worst, end = 0.0, 0
    for length in chunks:
        end += length
        got = stream.step(sequence[:, end - length : end])["output"]
        with torch.no_grad():
            want = model(torch.from_numpy(sequence[:, :end])).numpy()
        if want.ndim == 3:
            want = want[:, end - length : end]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize(
    ("cell", "layers"), [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 3)], ids=lambda v: str(v)
)
def test_lstm_and_gru_step_graph_streams_like_pytorch(repo: Path, cell: str, layers: int) -> None:
    model = make_rnn(cell=cell, features=FEATURES, hidden=8, num_layers=layers)
    before = snapshot(model)
    result = export_model(model, spec(), repository=repo, name=f"{cell}{layers}")

    assert_unchanged(model, before)
    report = result.report
    assert report.ok
    streamed = [check for check in report.checks if check.output.endswith("(streamed)")]
    assert len(streamed) == 3 * 4  # batch 1, 2, 7 x chunks of 1, 3, 1, 17 steps
    session = load_session(result.model_path)
    names = ["h_in_0", "c_in_0"] if cell == "lstm" else ["h_in_0"]
    assert [i.name for i in session.get_inputs()] == ["input", *names]
    assert [o.name for o in session.get_outputs()] == ["output", *(n.replace("_in_", "_out_") for n in names)]
    for tensor in session.get_inputs()[1:]:
        assert tensor.type == "tensor(float)"
        assert isinstance(tensor.shape[0], str) and tensor.shape[1:] == [layers, 8]
    assert stream_against_torch(result.model_path, model, state_tensors(model)) < 1e-4

    config = config_of(repo / f"{cell}{layers}")
    assert [t.name for t in config.input] == ["input"]  # the state tensors are the server's business
    assert [t.name for t in config.output] == ["output"]
    assert config.max_batch_size > 0
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    batching = config.sequence_batching
    assert batching.max_sequence_idle_microseconds == 60_000_000
    assert batching.oldest.max_candidate_sequences == 1024
    assert batching.oldest.max_queue_delay_microseconds == 0
    assert [(s.input_name, s.output_name) for s in batching.state] == [
        (n, n.replace("_in_", "_out_")) for n in names
    ]
    for state in batching.state:
        assert state.data_type == model_config_pb2.TYPE_FP32
        assert list(state.dims) == [layers, 8]
        (initial,) = state.initial_state
        assert initial.zero_data and initial.name == "zeros"
        assert initial.data_type == model_config_pb2.TYPE_FP32 and list(initial.dims) == [layers, 8]


def test_two_recurrent_modules_carry_three_states(repo: Path) -> None:
    model = make_two_recurrent(features=FEATURES)
    result = export_model(model, spec(), repository=repo, name="two")
    states = state_tensors(model)
    assert [(s.input_name, s.module, s.dims) for s in states] == [
        ("h_in_0", "encoder", (1, 8)),
        ("c_in_0", "encoder", (1, 8)),
        ("h_in_1", "decoder", (2, 10)),
    ]
    assert [s.input_name for s in config_of(repo / "two").sequence_batching.state] == [
        "h_in_0",
        "c_in_0",
        "h_in_1",
    ]
    assert stream_against_torch(result.model_path, model, states) < 1e-4


def test_per_step_outputs_are_compared_on_the_chunk_steps(repo: Path) -> None:
    # A time-major GRU given its own zero h0 by the user's forward: the carried state replaces it.
    model = make_per_step_tagger(features=FEATURES)
    result = export_model(model, spec(), repository=repo, name="tagger")
    assert result.report.ok
    assert stream_against_torch(result.model_path, model, state_tensors(model), chunks=(1, 4, 2)) < 1e-4


def test_averaging_model_is_refused_and_nothing_is_written(repo: Path) -> None:
    model = make_averaging_lstm(features=FEATURES)
    before = snapshot(model)
    with pytest.raises(StreamingProofError) as caught:
        export_model(model, spec(), repository=repo, name="averaging")
    message = str(caught.value)
    assert NOT_STREAMABLE in message
    assert "not a function of its recurrent state and the current chunk" in message
    assert "chunk 2 of 4" in message and "prefix of 4 steps" in message
    assert files_under(repo) == {}
    assert_unchanged(model, before)


def test_bidirectional_is_refused_with_the_reason(repo: Path) -> None:
    model = make_rnn(cell="gru", features=FEATURES, bidirectional=True)
    with pytest.raises(SpecError, match="bidirectional GRU.* cannot stream"):
        export_model(model, spec(), repository=repo, name="bi")
    assert files_under(repo) == {}


def test_model_without_recurrent_module_is_refused(repo: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 3))
    with pytest.raises(SpecError, match="no nn.LSTM, nn.GRU or nn.RNN"):
        export_model(model, spec(), repository=repo, name="linear")


def test_fixed_time_axis_and_image_models_are_refused(repo: Path) -> None:
    model = make_rnn(features=FEATURES)
    fixed = spec(dynamic_axes={"input": {0: "batch"}})
    with pytest.raises(SpecError, match="dynamic time axis"):
        export_model(model, fixed, repository=repo, name="fixed")
    with pytest.raises(SpecError, match="sequence model"):
        ExportSpec.image(32, stateful=True)
    with pytest.raises(SpecError, match="state must be one of"):
        spec(state="nowhere")


def test_client_carried_state_config(repo: Path) -> None:
    model = make_rnn(cell="lstm", features=FEATURES, num_layers=2)
    result = export_model(model, spec(state="client"), repository=repo, name="carried")
    config = config_of(repo / "carried")
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert [(t.name, list(t.dims)) for t in config.input] == [
        ("input", [-1, FEATURES]),
        ("h_in_0", [2, 8]),
        ("c_in_0", [2, 8]),
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [
        ("output", [4]),
        ("h_out_0", [2, 8]),
        ("c_out_0", [2, 8]),
    ]
    assert '"state": "client"' in config.parameters["stateful"].string_value
    assert [t.name for t in result.inputs] == ["input", "h_in_0", "c_in_0"]


def test_fp16_step_graph_keeps_float32_state(repo: Path) -> None:
    model = make_rnn(cell="gru", features=FEATURES)
    result = export_model(model, spec(precision="fp16"), repository=repo, name="half")
    session = load_session(result.model_path)
    assert [i.type for i in session.get_inputs()] == ["tensor(float)", "tensor(float)"]
    assert stream_against_torch(result.model_path, model, state_tensors(model)) < 0.05


FRESH_PROCESS = "ORTSERVE_TEST_FRESH_PROCESS"


@pytest.mark.slow
def test_dynamo_step_graph(repo: Path) -> None:
    if os.environ.get(FRESH_PROCESS) != "1":
        # In a fresh process, as `ortserve export` runs: after test_export_rnn exported an LSTM of the same
        # size with dynamo in this process, dynamo traced the step graph's time axis as fixed (validation
        # refuses that graph, and exporter "auto" falls back to TorchScript; not yet root-caused).
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_dynamo_step_graph",
        ]
        done = subprocess.run(
            command, env={**os.environ, FRESH_PROCESS: "1"}, capture_output=True, text=True, timeout=1500
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        return
    model = make_two_recurrent(features=FEATURES)
    result = export_model(model, spec(exporter="dynamo"), repository=repo, name="two_dynamo")
    assert result.exporter == "dynamo" and result.report.ok
    assert stream_against_torch(result.model_path, model, state_tensors(model)) < 1e-4


def cli(repo: Path, factory: str, name: str, *extra: str) -> int:
    argv = ["--factory", f"export_models:{factory}", "--factory-kwargs", '{"features": 6}', "--input-shape"]
    argv += ["10,6", "--stateful", "--exporter", "torchscript", "--repository", str(repo), "--name", name]
    return main([*argv, *extra, "-q"])


def test_cli_stateful_server_and_client_configs(repo: Path, capsys) -> None:
    assert cli(repo, "make_two_recurrent", "two") == 0
    assert "two" in capsys.readouterr().out
    assert [s.input_name for s in config_of(repo / "two").sequence_batching.state] == [
        "h_in_0",
        "c_in_0",
        "h_in_1",
    ]
    assert cli(repo, "make_two_recurrent", "two_carried", "--state", "client") == 0
    carried = config_of(repo / "two_carried")
    assert not carried.HasField("sequence_batching")
    assert [t.name for t in carried.input] == ["input", "h_in_0", "c_in_0", "h_in_1"]


def test_cli_refuses_a_model_that_cannot_stream(repo: Path, capsys) -> None:
    assert cli(repo, "make_averaging_lstm", "averaging") == 1
    err = capsys.readouterr().err
    assert "not a function of its recurrent state and the current chunk" in err
    assert files_under(repo) == {}
    assert cli(repo, "make_rnn", "bi", "--factory-kwargs", '{"features": 6, "bidirectional": true}') == 1
    assert "cannot stream" in capsys.readouterr().err
    assert files_under(repo) == {}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lstm", "gru"])
def test_digits_model_streams_row_by_row_like_pytorch(trained_digits, repo: Path, which: str) -> None:
    model = trained_digits.torch_model(which)
    stream_spec = ExportSpec.sequence(8, 8, stateful=True, exporter="torchscript")
    result = export_model(model, stream_spec, repository=repo, name=f"digits_{which}_stream")
    sequences = digits.load_sequence_split().x_test
    agreement = stream_rows(onnxruntime_sequences(result.model_path), model, sequences, name=result.name)
    assert agreement.steps == len(sequences) * 8
    assert agreement.agrees, agreement.summary()
    assert agreement.max_abs < 1e-4


def test_stream_rows_notices_a_stream_that_forgets_its_state(repo: Path) -> None:
    # Steps sent as if each row began a new sequence: the running prediction must be caught out.
    model = make_rnn(cell="gru", features=FEATURES, hidden=8)
    result = export_model(model, spec(), repository=repo, name="gru")
    open_sequence = onnxruntime_sequences(result.model_path)
    sequences = np.random.default_rng(3).standard_normal((4, 6, FEATURES), dtype=np.float32)

    class Forgetful:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return None

        def step(self, chunk):
            with open_sequence() as fresh:
                return fresh.step(chunk)

    assert stream_rows(open_sequence, model, sequences, name="gru").agrees
    forgetful = stream_rows(Forgetful, model, sequences, name="gru")
    assert forgetful.max_abs > 1e-3 and "DIFFERS" in forgetful.summary()


class TwiceCalled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(FEATURES, FEATURES, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.rnn(x)[0])[0][:, -1]


def test_recurrent_module_called_twice_is_refused(repo: Path) -> None:
    model = TwiceCalled()
    with pytest.raises(SpecError, match="called more than once in one forward"):
        export_model(model, spec(), repository=repo, name="twice")
    assert files_under(repo) == {}
    assert_unchanged(model, snapshot(model))


def test_lstm_with_projection_carries_projected_hidden_state(repo: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.LSTM(FEATURES, 8, num_layers=2, proj_size=3, batch_first=True)
    states = state_tensors(model)
    assert [(s.input_name, s.dims, s.module) for s in states] == [
        ("h_in_0", (2, 3), "<model>"),
        ("c_in_0", (2, 8), "<model>"),
    ]


class LearnedStart(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(FEATURES, 4, batch_first=True)
        self.h0 = torch.nn.Parameter(torch.full((1, 1, 4), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x, self.h0.expand(1, x.shape[0], 4).contiguous())[0][:, -1]


def test_model_with_its_own_initial_state_is_refused(repo: Path) -> None:
    with pytest.raises(SpecError, match="non-zero initial state"):
        export_model(LearnedStart(), spec(), repository=repo, name="learned")
    assert files_under(repo) == {}


def test_client_carried_state_streams_through_the_server(repo: Path, start_ortserve) -> None:
    import functools
    import json

    from ortserve.client import InferenceClient

    model = make_rnn(cell="lstm", features=FEATURES, num_layers=2)
    export_model(model, spec(state="client"), repository=repo, name="carried")
    sequences = np.random.default_rng(5).standard_normal((6, 5, FEATURES), dtype=np.float32)
    with start_ortserve(repo) as server, InferenceClient(server.grpc_address, timeout=60) as client:
        states = json.loads(client.model_config("carried").parameters["stateful"].string_value)["states"]
        infer = functools.partial(client.infer, "carried")
        agreement = stream_rows(lambda: CarriedState(infer, states), model, sequences, name="carried")
    assert agreement.steps == 30 and agreement.agrees, agreement.summary()
    assert agreement.max_abs < 1e-4


@pytest.mark.parametrize("state", ["server", "client"])
def test_client_sequence_streams_an_export_like_pytorch(repo: Path, start_ortserve, state: str) -> None:
    import functools

    from ortserve.client import InferenceClient

    model = make_two_recurrent(features=FEATURES)
    export_model(model, spec(state=state), repository=repo, name="streamed")
    sequences = np.random.default_rng(6).standard_normal((4, 5, FEATURES), dtype=np.float32)
    with start_ortserve(repo) as server, InferenceClient(server.grpc_address, timeout=60) as client:
        open_sequence = functools.partial(client.sequence, "streamed")
        agreement = stream_rows(open_sequence, model, sequences, name="streamed", batched=False)
    assert agreement.steps == 20 and agreement.agrees, agreement.summary()
    assert agreement.max_abs < 1e-4
