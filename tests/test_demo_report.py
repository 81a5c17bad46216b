"""The demo's report: loss trends read back from TensorBoard logs, and its exit status."""
from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from nextgpt.toy.demo import report, stage_losses


def _write_run(run: Path, curves: dict[str, list[float]]) -> None:
    writer = SummaryWriter(str(run / "logs"))
    for tag, values in curves.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step)
    writer.close()


def test_trend_is_mean_of_first_and_last_tenth(tmp_path):
    _write_run(tmp_path / "stage_2", {"loss/total": [float(20 - i) for i in range(20)]})
    first, last, n = stage_losses(tmp_path / "stage_2")["loss/total"]
    assert (first, last, n) == (19.5, 1.5, 20)


def test_flat_denoising_is_explained_and_a_rising_total_fails(tmp_path, capsys):
    _write_run(tmp_path / "stage_2", {"loss/total": [3.0, 2.0, 1.0], "loss/audio_denoise": [1.0, 1.0, 1.1]})
    assert report(tmp_path) == 0
    out = capsys.readouterr().out
    assert "loss/audio_denoise" in out and "not falling" in out and "denoising loss can stay flat" in out

    _write_run(tmp_path / "stage_3", {"loss/total": [1.0, 2.0, 3.0]})
    assert report(tmp_path) == 1
