"""Caption-alignment loss, Min-SNR weights and the latent denoising loss on tiny real decoders."""
from __future__ import annotations

import pytest
import torch

from nextgpt.errors import ConfigError, DataError
from nextgpt.model.losses import caption_alignment_loss
from nextgpt.model.multimodal_decoder import Decoder, denoising_loss, load_decoder
from nextgpt.model.multimodal_decoder.denoising import min_snr_weights
from nextgpt.toy.decoders import build_tiny_audioldm, build_tiny_sd, build_tiny_zeroscope


def _scaled_linear_alphas_cumprod(beta_start: float, beta_end: float, n: int = 1000) -> torch.Tensor:
    """ᾱ_t of the scaled-linear schedule, computed by hand in float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[str, Decoder]:
    root = tmp_path_factory.mktemp("loss_decoders")
    return {
        "image_v": load_decoder("image", build_tiny_sd(root / "sd_v")),
        "image_eps": load_decoder("image", build_tiny_sd(root / "sd_eps", prediction_type="epsilon")),
        "video": load_decoder("video", build_tiny_zeroscope(root / "zs")),
        "audio": load_decoder("audio", build_tiny_audioldm(root / "ad")),
    }


def _inputs(decoder: Decoder, n: int = 2, seed: int = 0, mel_frames: int = 160
            ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if decoder.modality == "image":
        target = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    elif decoder.modality == "video":
        target = torch.rand(n, 3, 3, 32, 48, generator=g) * 2 - 1
    else:
        target = torch.randn(n, mel_frames, 64, generator=g) - 5.0  # log-mel (T, 64)
    cond = torch.randn(n, *decoder.condition_shape, generator=g)
    return target, cond


# ------------------------------------------------------------------------------------------------ caption loss


def test_caption_alignment_is_mean_euclidean_distance():
    pred = torch.zeros(2, 2, 2)
    target = torch.tensor([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -2.0]]])
    loss = caption_alignment_loss(pred, target)
    assert loss.item() == pytest.approx((5.0 + 0.0 + 1.0 + 2.0) / 4)
    squared_mse = ((pred - target) ** 2).mean().item()
    assert loss.item() != pytest.approx(squared_mse)


def test_caption_alignment_mixed_dtypes_and_gradient():
    pred = torch.randn(3, 77, 8, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randn(3, 77, 8, dtype=torch.float16)
    loss = caption_alignment_loss(pred, target)
    assert loss.dtype == torch.float32
    expected = (pred.float() - target.float()).pow(2).sum(-1).sqrt().mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad.float()).all()
    same = torch.randn(2, 1, 4, requires_grad=True)
    caption_alignment_loss(same, same.detach().clone()).backward()  # zero distance: gradient 0, not NaN
    assert torch.equal(same.grad, torch.zeros_like(same))


def test_caption_alignment_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"\(4, 1, 16\).*\(4, 16\)"):
        caption_alignment_loss(torch.zeros(4, 1, 16), torch.zeros(4, 16))


# ------------------------------------------------------------------------------------------------ Min-SNR


def test_min_snr_weights_match_hand_computation(decoders):
    t = torch.tensor([0, 10, 100, 500, 999])
    ac = _scaled_linear_alphas_cumprod(0.00085, 0.012)
    snr = ac[t] / (1 - ac[t])
    gamma = 5.0
    eps_w = torch.minimum(snr, torch.full_like(snr, gamma)) / snr
    v_w = torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)
    sched = decoders["image_v"].training_scheduler
    got_eps = min_snr_weights(sched.alphas_cumprod, t, gamma, "epsilon")
    got_v = min_snr_weights(sched.alphas_cumprod, t, gamma, "v_prediction")
    torch.testing.assert_close(got_eps.double(), eps_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_v.double(), v_w, rtol=1e-4, atol=1e-6)
    assert got_eps[-1].item() == pytest.approx(1.0)  # low SNR: weight 1 for ε
    assert got_eps[0].item() < 0.01  # high SNR clipped at γ


def test_min_snr_rejects_bad_arguments():
    ac = _scaled_linear_alphas_cumprod(0.00085, 0.012).float()
    with pytest.raises(ConfigError):
        min_snr_weights(ac, torch.tensor([1]), 0.0)
    with pytest.raises(ConfigError, match="sample"):
        min_snr_weights(ac, torch.tensor([1]), 5.0, "sample")


# ------------------------------------------------------------------------------------------------ denoising


@pytest.mark.parametrize("name", ["image_v", "image_eps", "video", "audio"])
def test_denoising_loss_gradients_reach_only_the_conditioning(decoders, name):
    dec = decoders[name]
    target, cond = _inputs(dec, mel_frames=1040)  # audio: the reference's 10.4 s target, 1040 frames
    cond.requires_grad_(True)
    loss = denoising_loss(dec, target, cond, 5.0 if dec.modality == "image" else None,
                          generator=torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.mean().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    for module in dec.modules().values():
        assert all(p.grad is None for p in module.parameters())


def test_denoising_loss_is_reproducible(decoders):
    dec = decoders["video"]
    target, cond = _inputs(dec)
    a = denoising_loss(dec, target, cond, generator=torch.Generator().manual_seed(5))
    b = denoising_loss(dec, target, cond, generator=torch.Generator().manual_seed(5))
    c = denoising_loss(dec, target, cond, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["image_v", "image_eps"])
def test_denoising_target_follows_prediction_type_and_ddpm_forward(decoders, name):
    """Recompute the loss by hand.

    DDPM forward x_t = √ᾱ x0 + √(1-ᾱ) ε; the target is ε, or v = √ᾱ ε − √(1-ᾱ) x0 for v-prediction models.
    """
    dec = decoders[name]
    target, cond = _inputs(dec, n=3)
    seed = 11
    loss = denoising_loss(dec, target, cond, None, generator=torch.Generator().manual_seed(seed))
    weighted = denoising_loss(dec, target, cond, 5.0, generator=torch.Generator().manual_seed(seed))

    g = torch.Generator().manual_seed(seed)  # same draws, same order: posterior sample, noise, timesteps
    x0 = dec.encode_target_latents(target, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    ac = _scaled_linear_alphas_cumprod(0.00085, 0.012)[t].float().view(-1, 1, 1, 1)
    noisy = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
    with torch.no_grad():
        pred = dec.unet(noisy, t, encoder_hidden_states=cond).sample
    velocity = ac.sqrt() * noise - (1 - ac).sqrt() * x0
    mse_eps = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    mse_v = ((pred - velocity) ** 2).mean(dim=(1, 2, 3))
    expected, other = (mse_v, mse_eps) if name == "image_v" else (mse_eps, mse_v)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(loss.detach(), other, rtol=1e-3)

    snr = (ac / (1 - ac)).flatten()
    clipped = torch.clamp(snr, max=5.0)
    weights = clipped / (snr + 1) if name == "image_v" else clipped / snr
    torch.testing.assert_close(weighted.detach(), expected * weights, rtol=1e-4, atol=1e-7)


def test_video_latents_are_per_frame_image_latents(decoders):
    dec = decoders["video"]
    target, _ = _inputs(dec)
    lat = dec.encode_target_latents(target, sample=False)
    assert lat.shape == (2, 4, 3, 4, 6)
    with torch.no_grad():
        frame1 = dec.vae.encode(target[:, :, 1]).latent_dist.mean * dec.vae.config.scaling_factor
    torch.testing.assert_close(lat[:, :, 1], frame1, rtol=1e-4, atol=1e-5)


def test_audio_latents_have_the_real_geometry(decoders):
    dec = decoders["audio"]
    target, _ = _inputs(dec, mel_frames=1040)
    assert dec.encode_target_latents(target, sample=False).shape == (2, 8, 260, 16)


def test_denoising_loss_validates_shapes(decoders):
    img = decoders["image_v"]
    target, cond = _inputs(img)
    with pytest.raises(DataError, match="target"):
        denoising_loss(img, target[:, :1], cond)
    with pytest.raises(DataError, match="conditioning"):
        denoising_loss(img, target, cond[:1])
    with pytest.raises(DataError, match="conditioning"):
        denoising_loss(img, target, cond[..., :16])
    aud = decoders["audio"]
    a_target, a_cond = _inputs(aud)
    with pytest.raises(DataError, match="log-mel"):
        denoising_loss(aud, a_target[..., :32], a_cond)
    flat = denoising_loss(aud, a_target, a_cond[:, 0], generator=torch.Generator().manual_seed(0))
    nested = denoising_loss(aud, a_target, a_cond, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flat, nested)  # (N, D) and (N, 1, D) conditioning are the same thing
