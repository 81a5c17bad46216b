"""Decoder-side targets (nextgpt.dataset.media): shapes, values against independent computations, errors."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from nextgpt.dataset import media
from nextgpt.errors import MediaError

LOG_FLOOR = math.log(1e-5)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _pair(samples_dir: Path, sub: str) -> Path:
    return samples_dir / "T_X_pair_data" / sub


def _write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _lanczos_target(pil: Image.Image, width: int, height: int) -> np.ndarray:
    """Independent expectation: PIL Lanczos resize, [0,255] -> [-1,1], (3,H,W)."""
    arr = np.asarray(pil.resize((width, height), resample=Image.LANCZOS), dtype=np.float32) / 255.0
    return (arr * 2 - 1).transpose(2, 0, 1)


def _slaney_mel_formula(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel (htk=False, norm='slaney') written from its formula, float64."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def _reference_log_mel(wav_int16: np.ndarray, sr: int = 16000, duration: float = 10.4) -> np.ndarray:
    """AudioLDM log-mel (spec §7.2) recomputed in float64 numpy for a mono file already at 16 kHz."""
    x = wav_int16.astype(np.float64) / 32768.0
    x = x - x.mean()
    x = x / (np.abs(x).max() + 1e-8) * 0.5
    target = int(sr * duration)
    y = np.zeros(target)
    y[: min(target, len(x))] = x[:target]
    y = np.pad(y, (432, 432), mode="reflect")
    n_frames = 1 + (len(y) - 1024) // 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    frames = np.stack([y[i * 160 : i * 160 + 1024] * window for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, axis=1))  # (frames, 513)
    mel = mag @ _slaney_mel_formula(sr, 1024, 64, 0, 8000).T
    out = np.log(np.maximum(mel, 1e-5))
    length = int(duration * sr / 160)
    return out[:length] if out.shape[0] >= length else np.pad(out, ((0, length - out.shape[0]), (0, 0)))


# ---------------------------------------------------------------------------------------------------------------
# image
# ---------------------------------------------------------------------------------------------------------------
def test_image_cc3m_shape_range_and_values(samples_dir):
    path = _pair(samples_dir, "cc3m/images/001312382.jpg")
    out = media.load_target_image(path)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    pil = Image.open(path).convert("RGB")
    assert pil.size == (256, 256)
    np.testing.assert_allclose(out.numpy(), _lanczos_target(pil, 224, 224), atol=1e-5)


def test_image_crop_mode_covers_then_centre_crops(samples_dir):
    path = samples_dir / "assets" / "bird_image.jpg"  # 640x855 portrait
    pil = Image.open(path).convert("RGB")
    out = media.load_target_image(path, height=224, width=224, resize_mode="crop")
    w, h = pil.size
    new_h = h * 224 // w  # cover: width fits, height overflows
    resized = pil.resize((224, new_h), resample=Image.LANCZOS)
    top = (new_h - 224) // 2
    expected = np.asarray(resized, dtype=np.float32)[top : top + 224] / 255.0 * 2 - 1
    np.testing.assert_allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_image_errors(tmp_path):
    with pytest.raises(MediaError) as e:
        media.load_target_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(e.value) and e.value.path.endswith("missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(MediaError, match="bad.jpg"):
        media.load_target_image(bad)


# ---------------------------------------------------------------------------------------------------------------
# video
# ---------------------------------------------------------------------------------------------------------------
def test_sample_frame_indices_rules():
    # short video: whole video from frame 0 at the stride (no off-by-one)
    assert media.sample_frame_indices(182, 25.0, 1, 16) == list(range(0, 182, 25))
    assert media.sample_frame_indices(300, 29.97, 1, 16) == list(range(0, 300, 30))
    # stride never 0 (fps below sample_fps / 2)
    assert media.sample_frame_indices(5, 0.4, 1, 16) == [0, 1, 2, 3, 4]
    # long video: 16 frames, stride spacing, start within [0, n - cover - 5]
    for seed in range(20):
        idx = media.sample_frame_indices(850, 29.97, 1, 16, rng=np.random.default_rng(seed))
        assert len(idx) == 16 and np.all(np.diff(idx) == 30)
        assert 0 <= idx[0] <= 850 - 480 - 5
    starts = {media.sample_frame_indices(850, 29.97, 1, 16, rng=np.random.default_rng(s))[0] for s in range(20)}
    assert len(starts) > 5  # the start is random
    a = media.sample_frame_indices(850, 30, 1, 16, rng=random.Random(7))
    b = media.sample_frame_indices(850, 30, 1, 16, rng=random.Random(7))
    assert a == b


def test_video_webvid_short_pads_with_black(samples_dir):
    import decord

    path = _pair(samples_dir, "webvid/videos/00169473.mp4")  # 182 frames at 25 fps (7.3 s)
    out = media.load_target_video(path, rng=np.random.default_rng(0))
    assert out.shape == (3, 16, 320, 576) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    real = [bool((out[:, f] != -1).any()) for f in range(16)]
    assert real == [True] * 8 + [False] * 8  # ceil(182 / 25) = 8 frames at 1 fps, then black
    vr = decord.VideoReader(str(path))
    for k in (0, 7):  # frame k is the container's frame 25 k, resized with Lanczos
        expected = _lanczos_target(Image.fromarray(vr[25 * k].asnumpy()), 576, 320)
        np.testing.assert_allclose(out[:, k].numpy(), expected, atol=1e-5)


def test_video_webvid_long_random_window_is_reproducible(samples_dir):
    import decord

    path = _pair(samples_dir, "webvid/videos/00077761.mp4")  # 850 frames at 29.97 fps
    a = media.load_target_video(path, height=64, width=96, rng=np.random.default_rng(3))
    b = media.load_target_video(path, height=64, width=96, rng=np.random.default_rng(3))
    assert a.shape == (3, 16, 64, 96)
    assert torch.equal(a, b)
    assert all(bool((a[:, f] != -1).any()) for f in range(16))
    start = media.sample_frame_indices(850, 29.97, 1, 16, rng=np.random.default_rng(3))[0]
    vr = decord.VideoReader(str(path))
    expected = _lanczos_target(Image.fromarray(vr[start + 30].asnumpy()), 96, 64)
    np.testing.assert_allclose(a[:, 1].numpy(), expected, atol=1e-5)
    c = media.load_target_video(path, height=64, width=96, rng=np.random.default_rng(4))
    assert not torch.equal(a, c)


def test_video_short_clip_pads(tmp_path):
    frames = []
    for k in range(16):  # 2 s at 8 fps
        f = np.full((64, 96, 3), 200, np.uint8)
        f[:, 4 * k : 4 * k + 8] = (255, 0, 0)
        frames.append(f)
    path = tmp_path / "clip.mp4"
    _write_mp4(path, frames, fps=8)
    raw, n_real = media.read_video_frames(path, sample_fps=1, max_frames=16)
    assert n_real == 2 and raw.shape == (16, 64, 96, 3)  # frames 0 and 8, then black in (H, W) orientation
    assert raw[2:].max() == 0
    out = media.load_target_video(path, sample_fps=1, max_frames=16, height=32, width=48)
    assert out.shape == (3, 16, 32, 48)
    assert torch.all(out[:, 2:] == -1) and bool((out[:, :2] > -1).any())
    out4 = media.load_target_video(path, sample_fps=4, max_frames=4, height=32, width=48)
    assert out4.shape == (3, 4, 32, 48) and bool((out4[:, 3] != -1).any())  # stride 2 -> 8 frames, cut to 4


def test_video_errors(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        media.load_target_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(MediaError, match="garbage.mp4"):
        media.load_target_video(garbage)


def test_video_truncated_sample_raises(tmp_path, samples_dir):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(_pair(samples_dir, "webvid/videos/00169473.mp4").read_bytes()[:20000])
    with pytest.raises(MediaError, match="truncated.mp4"):
        media.load_target_video(truncated)


def test_video_without_video_frames_raises(tmp_path):
    import av

    path = tmp_path / "audio_only.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(MediaError, match="audio_only.mp4"):
        media.load_target_video(path)


def test_video_every_webvid_sample(samples_dir):
    import decord

    for path in sorted(_pair(samples_dir, "webvid/videos").glob("*.mp4")):
        vr = decord.VideoReader(str(path))
        n, fps = len(vr), vr.get_avg_fps()
        stride = round(fps)
        expected_real = min(16, math.ceil(n / stride)) if n < stride * 16 + 5 else 16
        frames, n_real = media.read_video_frames(path, rng=np.random.default_rng(0))
        assert frames.shape[0] == 16 and n_real == expected_real, path.name


# ---------------------------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------------------------
def test_mel_filterbank_matches_librosa_formula():
    fb = media.mel_filterbank(16000, 1024, 64, 0.0, 8000.0).numpy()
    assert fb.shape == (64, 513)
    ref = _slaney_mel_formula(16000, 1024, 64, 0.0, 8000.0)
    np.testing.assert_allclose(fb, ref, atol=1e-6, rtol=1e-4)
    assert ref.max() > 1e-3  # the comparison is not vacuous


def test_audio_log_mel_matches_formula(tmp_path):
    sr = 16000
    t = np.arange(3 * sr) / sr
    rng = np.random.default_rng(0)
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size) + 0.05  # with a DC offset
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    path = tmp_path / "mix.wav"
    sf.write(path, pcm, sr, subtype="PCM_16")
    out = media.load_target_audio(path).numpy()
    ref = _reference_log_mel(pcm)
    assert out.shape == ref.shape == (1040, 64) and out.dtype == np.float32
    loud = ref > -6.0
    assert loud.sum() > 1000
    np.testing.assert_allclose(out[loud], ref[loud], atol=2e-3)
    np.testing.assert_allclose(np.exp(out), np.exp(ref), atol=1e-5)


def test_audio_48k_stereo_sample(samples_dir):
    path = _pair(samples_dir, "audiocap/audios/104137.wav")
    info = sf.info(path)
    assert info.samplerate == 48000 and info.channels == 2
    out = media.load_target_audio(path)
    assert out.shape == (1040, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= LOG_FLOOR - 1e-4
    assert out.max() > -3  # real signal, not the silent floor


def test_audio_uses_channel_zero_and_normalises(tmp_path):
    sr = 48000
    t = np.arange(int(2.5 * sr)) / sr
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 1000 * t) + 0.1, 0.8 * np.sin(2 * np.pi * 3000 * t)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, sr, subtype="PCM_16")
    wav = media.read_audio_window(path)
    assert wav.shape == (166400,)
    assert abs(float(wav.abs().max()) - 0.5) < 1e-6  # peak-normalised to 0.5
    assert abs(float(wav[: int(2.5 * 16000)].mean())) < 1e-3  # DC (0.1 on channel 0) removed
    assert torch.all(wav[int(2.5 * 16000) :] == 0)  # zero padding
    mel = media.load_target_audio(path)
    fb = media.mel_filterbank()
    bin_1k = int(torch.argmax(fb[:, round(1000 / 15.625)]))
    bin_3k = int(torch.argmax(fb[:, round(3000 / 15.625)]))
    profile = mel[20:200].mean(0)
    assert int(torch.argmax(profile)) == bin_1k
    assert profile[bin_3k] < profile[bin_1k] - 5  # channel 1's 3 kHz tone is absent


def test_audio_short_clip_pads(tmp_path):
    sr = 16000
    t = np.arange(2 * sr) / sr
    path = tmp_path / "short.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 600 * t), sr, subtype="PCM_16")
    out = media.load_target_audio(path)
    assert out.shape == (1040, 64)
    assert torch.all(out[215:] == torch.tensor(LOG_FLOOR))  # zero padding after 2 s
    assert out[:190].max() > -3


def test_audio_long_file_window_search_is_seeded(tmp_path):
    sr = 16000
    x = np.zeros(30 * sr)
    t = np.arange(2 * sr) / sr
    x[12 * sr : 14 * sr] = 0.5 * np.sin(2 * np.pi * 500 * t)  # the only sound, at 12-14 s
    path = tmp_path / "long.wav"
    sf.write(path, x, sr, subtype="PCM_16")
    a = media.load_target_audio(path, rng=np.random.default_rng(1))
    b = media.load_target_audio(path, rng=np.random.default_rng(1))
    assert torch.equal(a, b)
    assert a.max() > -3  # the window search found the sound
    starts = set()
    for seed in range(6):
        w = media.read_audio_window(path, rng=random.Random(seed))
        starts.add(int(torch.nonzero(w.abs() > 1e-3)[0]))
    assert len(starts) > 1  # different seeds, different windows


def test_audio_longer_than_target_after_resampling_is_cut(tmp_path):
    sr = 12345  # int(12345 * 10.4) samples resample to 166401 > 166400 (the reference crashed)
    t = np.arange(11 * sr) / sr
    path = tmp_path / "odd_rate.wav"
    sf.write(path, 0.3 * np.sin(2 * np.pi * 700 * t), sr, subtype="PCM_16")
    assert media.read_audio_window(path).shape == (166400,)
    assert media.load_target_audio(path).shape == (1040, 64)


def test_audio_other_duration_sets_frame_count(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, 0.3 * np.sin(np.arange(16000) / 5.0), 16000, subtype="PCM_16")
    assert media.load_target_audio(path, duration=10.24).shape == (1024, 64)  # the class default of the reference
    assert media.load_target_audio(path, duration=5.0).shape == (500, 64)


def test_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        media.load_target_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    with pytest.raises(MediaError, match="corrupt.wav"):
        media.load_target_audio(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(MediaError, match="no samples"):
        media.load_target_audio(empty)
