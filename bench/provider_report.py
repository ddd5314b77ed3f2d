"""The execution-provider sweep's Markdown report and plot: ortserve against raw onnxruntime per batch size,
dynamic batching against raw onnxruntime's best batch, and fp16 against fp32."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or not b["rows_per_s"]:
        return "-"
    return f"{a['rows_per_s'] / b['rows_per_s']:.2f}x"


def _index(summary: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["contender"], r["batch"], r["concurrency"]): r for r in summary}


def _batch_table(model: str, rows: dict[tuple, dict], config: dict) -> list[str]:
    inflight = config["batch_concurrency"]
    head = "| batch | raw onnxruntime img/s | raw p50 ms |"
    rule = "|---:|---:|---:|"
    for c in inflight:
        head += f" ortserve {c} in flight img/s | x raw | p50 ms |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    for batch in config["batches"]:
        raw = rows.get((model, "raw_ort", batch, 1))
        line = f"| {batch} | {_fmt(raw and raw['rows_per_s'])} | {_fmt(raw and raw['p50_ms'], 2)} |"
        for c in inflight:
            served = rows.get((model, "ortserve_nobatching", batch, c))
            line += f" {_fmt(served and served['rows_per_s'])} | {_ratio(served, raw)} |"
            line += f" {_fmt(served and served['p50_ms'], 2)} |"
        lines.append(line)
    return lines


def _batching_table(model: str, rows: dict[tuple, dict], config: dict) -> list[str]:
    raws = [rows[key] for key in rows if key[0] == model and key[1] == "raw_ort"]
    best = max(raws, key=lambda r: r["rows_per_s"], default=None)
    label = f"raw best (batch {best['batch']})" if best else "raw best"
    lines = [
        f"| in flight | img/s | x {label} | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in config["concurrency"]:
        served = rows.get((model, "ortserve_batching", 1, c))
        lines.append(
            f"| {c} | {_fmt(served and served['rows_per_s'])} | {_ratio(served, best)} | "
            f"{_fmt(served and served['p50_ms'], 2)} | {_fmt(served and served['p99_ms'], 2)} |"
        )
    return lines


def _precision_table(pairs: list[tuple[str, str]], rows: dict[tuple, dict], config: dict) -> list[str]:
    lines = []
    for fp32, fp16 in pairs:
        lines += [
            f"fp16 ({fp16}) against fp32 ({fp32}), images per second:",
            "",
            "| batch | raw onnxruntime | ortserve, 1 in flight |",
            "|---:|---:|---:|",
        ]
        c = config["batch_concurrency"][0]
        for batch in config["batches"]:
            raw = _ratio(rows.get((fp16, "raw_ort", batch, 1)), rows.get((fp32, "raw_ort", batch, 1)))
            served = _ratio(
                rows.get((fp16, "ortserve_nobatching", batch, c)),
                rows.get((fp32, "ortserve_nobatching", batch, c)),
            )
            lines.append(f"| {batch} | {raw} | {served} |")
        lines.append("")
    return lines


def markdown(results: dict) -> str:
    config, machine = results["config"], results["machine"]
    rows = _index(results["summary"])
    lines = [
        f"# ortserve on the {config['provider']} execution provider: batch sweep against raw onnxruntime",
        "",
        f"- Machine: {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores, "
        f"onnxruntime {machine.get('versions', {}).get('onnxruntime')}, commit {machine.get('git_commit')}",
        f"- GPUs: {'; '.join(machine.get('gpus') or []) or 'none seen (no nvidia-smi)'}",
        f"- {config['rounds']} round(s); per cell {config['warmup_s']} s warm-up + {config['window_s']} s "
        "window (served cells: at least 1 and 4 times their requests' expected time); "
        f"images {config['image_size']}x{config['image_size']}; dynamic batching max_batch_size "
        f"{config['max_batch_size']}, max_queue_delay {config['max_delay_us']} us",
        "- raw onnxruntime: session.run back to back in its own process (input from host memory, as the "
        "server's); ortserve: over gRPC on loopback, the same model file, one instance on the provider; "
        "its images/s = in flight x batch / mean latency (Little's law, exact for a closed loop)",
        "",
    ]
    for model in config["models"]:
        precision = config["precision"].get(model, "fp32")
        lines += [f"## {model} ({precision})", "", "Requests of `batch` images, ortserve batching off:", ""]
        lines += _batch_table(model, rows, config)
        lines += ["", "One-image requests, ortserve dynamic batching on:", ""]
        lines += _batching_table(model, rows, config) + [""]
    pairs = [
        (name.removesuffix("_fp16"), name)
        for name in config["models"]
        if name.endswith("_fp16") and name.removesuffix("_fp16") in config["models"]
    ]
    if pairs:
        lines += ["## fp16 against fp32", ""] + _precision_table(pairs, rows, config)
    errors = sum(r["errors"] for r in results["summary"])
    lines += [f"Errors: {errors}."]
    if results.get("failures"):
        lines += ["", "Failures:", ""] + [f"- {failure}" for failure in results["failures"]]
    if results.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> list[str]:
    """Images per second against batch size, raw onnxruntime and ortserve, every model in one figure."""
    if importlib.util.find_spec("matplotlib") is None:
        logger.warning("matplotlib is not installed: no plots")
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    rows = _index(results["summary"])
    fig, ax = plt.subplots(figsize=(8, 5))
    for index, model in enumerate(config["models"]):
        for contender, concurrency, style in (("raw_ort", 1, "--"), ("ortserve_nobatching", 1, "-")):
            points = [
                (batch, rows[(model, contender, batch, concurrency)]["rows_per_s"])
                for batch in config["batches"]
                if (model, contender, batch, concurrency) in rows
            ]
            if points:
                label = f"{model}: {'raw onnxruntime' if contender == 'raw_ort' else 'ortserve'}"
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, marker="o", color=f"C{index}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (images per request / per run)")
    ax.set_ylabel("images / s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{config['provider']} execution provider")
    fig.tight_layout()
    path = out / f"plot_{config['provider']}_batch.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
