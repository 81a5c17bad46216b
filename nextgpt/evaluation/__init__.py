"""Evaluation: the NExT-GPT paper's benchmarks and metrics, computed with the field's libraries.

Modules: `tasks` (the eight tasks, metrics, the paper's numbers), `manifest` (evaluation manifests and their checks),
`converters` (public annotation files -> manifests), `text_metrics` (pycocoevalcap captioning scores, VQA and QA
accuracy), `feature_models` (Inception / CLIP / CLAP by name or local path), `media_metrics` (FID, CLIP score,
CLIPSIM, FAD), `scoring` (one metric on existing outputs; a task's metrics on a run), `runner` (generation with
resume and several processes), `report` (metrics.json, report.md, the loss-curve plot).
"""
from .manifest import Sample, load_manifest, write_manifest
from .report import format_table, plot_loss_curves, write_summary
from .runner import EvalOptions, evaluate
from .scoring import ScoreResult, score_metric
from .tasks import METRICS, PAPER, TASKS, get_task

__all__ = ["EvalOptions", "METRICS", "PAPER", "Sample", "ScoreResult", "TASKS", "evaluate", "format_table",
           "get_task", "load_manifest", "plot_loss_curves", "score_metric", "write_manifest", "write_summary"]
