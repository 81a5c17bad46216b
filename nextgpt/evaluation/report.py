"""metrics.json and report.md of an evaluation (one task, or several for the demo), and the loss-curve plot.

The report shows our number in the paper's scale next to the paper's, and marks the paper's as not comparable when
the data differ (e.g. the synthetic held-out split) or the feature model is not the paper's (e.g. a tiny random
one)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .tasks import DISPLAY_SCALE, LOWER_IS_BETTER, PAPER_SOURCE, paper_values

__all__ = ["format_table", "plot_loss_curves", "read_scalars", "write_summary", "write_task_report"]

METRICS_NAME = "metrics.json"
REPORT_NAME = "report.md"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _paper_cell(result: dict[str, Any], metric: str) -> tuple[str, bool]:
    benchmark, values = paper_values(result["task"], result.get("dataset"))
    if metric not in values:
        return "—", False
    numbers = ", ".join(f"{v:g} ({setting})" if setting != "reported" else f"{v:g}"
                        for setting, v in values[metric].items())
    fm = (result.get("feature_models") or {}).get(metric)
    comparable = benchmark == result.get("dataset") and (fm is None or fm.get("standard", False))
    return (numbers if comparable else f"{benchmark}: {numbers} (not comparable)"), comparable


def _setting_cell(setting: dict[str, Any]) -> str:
    parts = [setting.get("decoding", "")]
    if "steps" in setting:
        parts.append(f"{setting['steps']} steps, guidance {setting['guidance_scale']:g}")
    else:
        parts.append(f"max {setting.get('max_new_tokens')} tokens")
    parts.append(f"seed {setting.get('seed')}")
    parts.append(f"{setting.get('samples')} samples")
    return "; ".join(p for p in parts if p)


def table_rows(results: Iterable[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for result in results:
        for metric, value in result["metrics"].items():
            ours = "skipped" if value is None else f"{value * DISPLAY_SCALE[metric]:.2f}"
            paper, _ = _paper_cell(result, metric)
            fm = (result.get("feature_models") or {}).get(metric)
            model = "—" if fm is None else f"{fm['model']}{' (tiny random)' if fm.get('toy') else ''}"
            arrow = " ↓" if metric in LOWER_IS_BETTER else ""
            rows.append([result["task"], str(result.get("dataset") or "—"), metric + arrow, ours, paper, model,
                         _setting_cell(result.get("setting", {}))])
    return rows


def format_table(results: Iterable[dict[str, Any]]) -> str:
    """A Markdown table: task, data, metric, ours, paper, feature model, setting."""
    header = ["task", "data", "metric", "ours", "paper", "feature model", "setting"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def _notes(results: list[dict[str, Any]], extra: Iterable[str] = ()) -> list[str]:
    notes = list(extra)
    for result in results:
        notes += [n for n in result.get("notes", []) if n not in notes]
        for metric, fm in (result.get("feature_models") or {}).items():
            line = f"{metric}: feature model {fm['model']} — {fm['note']}"
            if line not in notes:
                notes.append(line)
    return notes


def _markdown(title: str, results: list[dict[str, Any]], extra_notes: Iterable[str] = ()) -> str:
    lines = [f"# {title}", "", format_table(results), "",
             f"Ours in the paper's scale (CIDEr, BLEU, METEOR, ROUGE-L and accuracies x 100; ↓ lower is better). "
             f"Paper: {PAPER_SOURCE}.", ""]
    notes = _notes(results, extra_notes)
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    for result in results:
        lines += [f"## {result['task']}", "", f"- model: `{result['model']}`", f"- manifest: `{result['manifest']}`",
                  f"- samples: {result['samples']} (processes: {result.get('world_size', 1)})"]
        lines += [f"- {key}: {value}" for key, value in result.get("setting", {}).items()]
        lines += [f"- seconds: {result.get('seconds')}", ""]
    return "\n".join(lines)


def write_task_report(outdir: Path, result: dict[str, Any]) -> None:
    """OUT/metrics.json and OUT/report.md of one task."""
    _write(Path(outdir) / METRICS_NAME, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    _write(Path(outdir) / REPORT_NAME, _markdown(f"Evaluation: {result['task']}", [result]))


def write_summary(outdir: Path, results: list[dict[str, Any]], title: str,
                  extra_notes: Iterable[str] = (), extra: dict[str, Any] | None = None) -> str:
    """OUT/metrics.json ({"tasks": {task: result}, ...extra}) and OUT/report.md of several tasks; returns the
    table."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = {"tasks": {r["task"]: r for r in results}, "notes": _notes(results, extra_notes), **(extra or {})}
    _write(outdir / METRICS_NAME, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    _write(outdir / REPORT_NAME, _markdown(title, results, extra_notes))
    return format_table(results)


# ------------------------------------------------------------------------------------------------ loss curves


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard log folder: {tag: [(step, value), ...]}."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}


def plot_loss_curves(runs: dict[str, Path], path: str | Path) -> Path:
    """One panel per run (stage): the training loss/total and the validation val/loss/total against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: Path(run) for name, run in runs.items() if (Path(run) / "logs").is_dir()}
    if not runs:
        raise FileNotFoundError("no run with a logs/ folder to plot")
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        scalars = read_scalars(run / "logs")
        for tag, label, style in (("loss/total", "training", "-"), ("val/loss/total", "validation", "o-")):
            if tag in scalars:
                steps, values = zip(*scalars[tag])
                ax.plot(steps, values, style, label=label, markersize=3, linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("total loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
