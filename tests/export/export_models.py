"""Small random-weight models for the exporter tests (importable by --factory and by pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class RnnClassifier(nn.Module):
    """Batch-first LSTM/GRU classifier: [B, T, F] -> logits [B, C] from the last step (both directions)."""

    def __init__(
        self,
        cell: str = "lstm",
        features: int = 6,
        hidden: int = 8,
        num_layers: int = 1,
        bidirectional: bool = False,
        classes: int = 4,
    ) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.rnn = rnn(features, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        if self.bidirectional:
            # Forward direction ends at the last step, the backward one at the first.
            last = torch.cat([out[:, -1, : self.hidden], out[:, 0, self.hidden :]], dim=1)
        else:
            last = out[:, -1]
        return self.fc(last)


def make_rnn(**kwargs) -> RnnClassifier:
    torch.manual_seed(0)
    return RnnClassifier(**kwargs)


def not_a_module() -> str:
    return "nope"


class FrozenTime(nn.Module):
    """Reshapes with Python ints read from x.shape: the TorchScript exporter bakes in the trace-time T."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, time_steps, features = x.shape
        flat = x.reshape(-1, int(time_steps) * int(features))
        return self.fc(flat.reshape(-1, int(time_steps), int(features)).mean(dim=1))


class FrozenTimeDataDependent(FrozenTime):
    """Also branches on data, which torch.export refuses: auto falls back to TorchScript, which freezes T."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 2
        return super().forward(x)


class TinyCnn(nn.Module):
    """A few-kilobyte image classifier, for fast image-path tests."""

    def __init__(self, classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def make_tiny_cnn(classes: int = 5) -> TinyCnn:
    torch.manual_seed(0)
    return TinyCnn(classes)


def files_under(path: Path) -> dict[str, bytes]:
    """Every file below path (relative name -> content), to prove what an export did or did not touch."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


class TwoRecurrent(nn.Module):
    """An LSTM feeding a 2-layer GRU, read at the last step: two recurrent modules, three carried states."""

    def __init__(self, features: int = 6, hidden: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.encoder = nn.LSTM(features, hidden, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden + 2, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden + 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded, _ = self.encoder(x)
        decoded, _ = self.decoder(torch.tanh(encoded))
        return self.fc(decoded[:, -1])


def make_two_recurrent(**kwargs) -> TwoRecurrent:
    torch.manual_seed(0)
    return TwoRecurrent(**kwargs)


class AveragingLstm(nn.Module):
    """Averages the LSTM's outputs over every step: the result needs the whole history, not just the state."""

    def __init__(self, features: int = 6, hidden: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out.mean(dim=1))


def make_averaging_lstm(**kwargs) -> AveragingLstm:
    torch.manual_seed(0)
    return AveragingLstm(**kwargs)


class PerStepTagger(nn.Module):
    """A time-major GRU tagging every step ([B, T, F] -> [B, T, C]) with its own zero initial state."""

    def __init__(self, features: int = 6, hidden: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.GRU(features, hidden)  # batch_first=False: the state layout must not depend on it
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, x.shape[0], self.hidden)
        out, _ = self.rnn(x.transpose(0, 1), h0)
        return self.fc(out).transpose(0, 1)


def make_per_step_tagger(**kwargs) -> PerStepTagger:
    torch.manual_seed(0)
    return PerStepTagger(**kwargs)
