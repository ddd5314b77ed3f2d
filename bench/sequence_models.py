"""Export the streaming benchmark's two models from one random LSTM (run as a subprocess: torch stays out of
the load generator's process).

    python -m bench.sequence_models --repository DIR [--hidden 64 --layers 1]

- `lstm_step`: the step graph, state as inputs h_in_0/c_in_0 and outputs h_out_0/c_out_0 ([B, layers,
  hidden]), with Triton's implicit-state sequence_batching config: the server holds the state.
- `lstm`: the same network as a stateless model (zero initial state inside), what a user serves today.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.sequences import FEATURES, HIDDEN, LAYERS

CLASSES = 10


def step_config(hidden: int, layers: int) -> str:
    return f"""max_batch_size: 64
sequence_batching {{
  max_sequence_idle_microseconds: 600000000
  oldest {{ max_candidate_sequences: 20000 max_queue_delay_microseconds: 0 }}
  state [
    {{ input_name: "h_in_0" output_name: "h_out_0" data_type: TYPE_FP32 dims: [{layers}, {hidden}]
      initial_state {{ data_type: TYPE_FP32 dims: [{layers}, {hidden}] zero_data: true name: "zeros" }} }},
    {{ input_name: "c_in_0" output_name: "c_out_0" data_type: TYPE_FP32 dims: [{layers}, {hidden}]
      initial_state {{ data_type: TYPE_FP32 dims: [{layers}, {hidden}] zero_data: true name: "zeros" }} }}
  ]
}}
"""


STATELESS_CONFIG = "max_batch_size: 64\ndynamic_batching { }\n"


class Step(torch.nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.layers = hidden, layers
        self.rnn = torch.nn.LSTM(FEATURES, hidden, layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, CLASSES)

    def forward(self, x, h, c):
        out, (h, c) = self.rnn(x, (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()))
        return self.head(out[:, -1]), h.transpose(0, 1), c.transpose(0, 1)


class Stateless(torch.nn.Module):
    def __init__(self, step: Step) -> None:
        super().__init__()
        self.step = step

    def forward(self, x):
        zeros = torch.zeros(x.shape[0], self.step.layers, self.step.hidden)
        return self.step(x, zeros, zeros)[0]


def export(repository: Path, hidden: int = HIDDEN, layers: int = LAYERS) -> None:
    step = Step(hidden, layers).eval()
    state = torch.zeros(1, layers, hidden)
    for name, module, inputs, outputs, example, config in (
        (
            "lstm_step",
            step,
            ["input", "h_in_0", "c_in_0"],
            ["output", "h_out_0", "c_out_0"],
            (torch.zeros(1, 2, FEATURES), state, state),
            step_config(hidden, layers),
        ),
        (
            "lstm",
            Stateless(step).eval(),
            ["input"],
            ["output"],
            (torch.zeros(1, 2, FEATURES),),
            STATELESS_CONFIG,
        ),
    ):
        path = repository / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        axes = {n: {0: "batch"} for n in (*inputs, *outputs)}
        axes["input"] = {0: "batch", 1: "time"}
        torch.onnx.export(
            module, example, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=17, dynamo=False,
        )  # fmt: skip
        (repository / name / "config.pbtxt").write_text(config, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--layers", type=int, default=LAYERS)
    args = parser.parse_args()
    export(args.repository, args.hidden, args.layers)


if __name__ == "__main__":
    main()
