"""Tiny stateful step models for the sequence tests: a PyTorch LSTM and GRU exported with their state as
extra inputs/outputs (batch-first [B, layers, hidden]), as `ortserve export --stateful` writes them, and the
config.pbtxt of Triton's implicit state.

    net = write_step_model(repo, "lstm", "lstm", idle_us=60_000_000)
    net.prefix_output(x[:, :t])   # PyTorch's answer on a whole prefix, to compare each step with
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

FEATURES, HIDDEN, LAYERS, CLASSES = 4, 8, 2, 3


class StepNet(torch.nn.Module):
    """The user's model: a recurrent module and a head on its last output step."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(7 if kind == "lstm" else 11)
        module = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
        self.kind = kind
        self.rnn = module(FEATURES, HIDDEN, LAYERS, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, *state):
        # State arrives batch-first [B, layers, hidden]; torch wants [layers, B, hidden].
        layer_first = tuple(s.transpose(0, 1).contiguous() for s in state)
        out, final = self.rnn(x, layer_first if self.kind == "lstm" else layer_first[0])
        finals = final if self.kind == "lstm" else (final,)
        return (self.head(out[:, -1]), *(f.transpose(0, 1) for f in finals))

    def prefix_output(self, prefix: np.ndarray) -> np.ndarray:
        """The output on a whole prefix [B, T, F] from zero state."""
        rows = prefix.shape[0]
        zeros = [torch.zeros(rows, LAYERS, HIDDEN) for _ in self.state_names()[0]]
        with torch.no_grad():
            return self(torch.from_numpy(prefix), *zeros)[0].numpy()

    def state_names(self) -> tuple[list[str], list[str]]:
        kinds = ("h", "c") if self.kind == "lstm" else ("h",)
        return [f"{k}_in_0" for k in kinds], [f"{k}_out_0" for k in kinds]


def sequence_config(net: StepNet, idle_us: int, max_sequences: int = 64, max_batch_size: int = 32) -> str:
    states = ",".join(
        f"""
    {{ input_name: "{i}" output_name: "{o}" data_type: TYPE_FP32 dims: [{LAYERS}, {HIDDEN}]
      initial_state {{ data_type: TYPE_FP32 dims: [{LAYERS}, {HIDDEN}] zero_data: true name: "zeros" }} }}"""
        for i, o in zip(*net.state_names(), strict=True)
    )
    return f"""max_batch_size: {max_batch_size}
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  oldest {{ max_candidate_sequences: {max_sequences} max_queue_delay_microseconds: 0 }}
  state [{states}
  ]
}}
"""


def export_step(net: StepNet, path: Path) -> None:
    inputs, outputs = net.state_names()
    example = (torch.zeros(1, 2, FEATURES), *(torch.zeros(1, LAYERS, HIDDEN) for _ in inputs))
    axes = {"input": {0: "batch", 1: "time"}, "output": {0: "batch"}}
    axes.update({name: {0: "batch"} for name in (*inputs, *outputs)})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        example,
        str(path),
        input_names=["input", *inputs],
        output_names=["output", *outputs],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def write_step_model(
    repository: Path, name: str, kind: str, idle_us: int | None = 60_000_000, **config
) -> StepNet:
    """NAME/1/model.onnx and, unless idle_us is None (a plain model: visible state), its sequence config."""
    net = StepNet(kind).eval()
    export_step(net, Path(repository) / name / "1" / "model.onnx")
    if idle_us is not None:
        (Path(repository) / name / "config.pbtxt").write_text(sequence_config(net, idle_us, **config))
    return net
