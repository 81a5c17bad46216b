"""The embedded default's tiny diffusion decoders: random SD / ZeroScope / AudioLDM pipelines in their real formats.

Each builder writes a complete diffusers pipeline folder (``model_index.json`` plus one sub-folder per component)
that loads offline with the pipeline's own ``from_pretrained`` and with
:func:`nextgpt.model.multimodal_decoder.load_decoder`. The architectures are the real ones (same classes, same
conditioning paths, same latent geometry: VAE scale factor 8 for images/videos and 4 for audio, 4 / 4 / 8 latent
channels, 64 mel bins, a 16 kHz vocoder with 160 samples per mel frame); only widths and depths are tiny, so that
the three stages and generation run on a CPU in seconds. The tokenizers are trained here from a small embedded
corpus with the ``tokenizers`` library and written as ``vocab.json`` / ``merges.txt``; nothing is downloaded.

Tiny condition shapes (defaults): image (77, 32), video (77, 24), audio (1, 16).
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Caption-like text the tiny tokenizers learn their merges from (deterministic, no downloads).
_CORPUS = """
a dog running on the grass in a park on a sunny day
a cat sitting on a sofa in the living room next to a window
the sound of rain falling on a metal roof during a storm
a man playing the guitar on a stage in front of a crowd
a woman walking a dog along the beach at sunset
birds singing in the forest at dawn while the wind blows through the trees
a red car driving down a busy street in the city at night
children laughing and playing with a ball in the garden
a train passing over a bridge above a river with mountains in the background
a person typing on a keyboard in a quiet office
waves crashing on the rocks near a lighthouse
a group of people dancing at a party with loud music
a close up of a flower with a bee collecting pollen
an airplane taking off from the runway of an airport
a chef cooking vegetables in a pan in a restaurant kitchen
water flowing in a small stream with leaves floating on it
a horse galloping across a field of green grass
a baby crying while a woman sings a song
people talking and cheering in a football stadium
snow falling on the roofs of houses in a small village
an engine running and then a car horn honking twice
a boat sailing on the lake under a blue sky with white clouds
""".strip().splitlines()

CLIP_MAX_LENGTH = 77
ROBERTA_MAX_LENGTH = 77


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block under a fixed torch seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------- tokenizers


def _learn_merges(words: Counter, num_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Word-level BPE: repeatedly merge the most frequent adjacent pair, ties broken by the pair itself.

    Written by hand because the `tokenizers` trainer breaks ties between equally frequent pairs in hash-map
    order, which changes from process to process: the tiny decoders' tokenizers (and with them every caption
    embedding) must be the same on every build.
    """
    words = Counter({tuple(w): n for w, n in words.items()})
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merges.append((a, b))
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def _train_bpe_merges(vocab_size: int, suffix: str) -> list[tuple[str, str]]:
    """CLIP-style merges (lower case, words end with `suffix`) from the embedded corpus; the vocabulary is the
    corpus's symbols plus the merges, `vocab_size` in all."""
    words = Counter(re.findall(r"\w+|[^\w\s]+", " ".join(_CORPUS).lower()))
    symbols = Counter({tuple(w[:-1]) + (w[-1] + suffix,): n for w, n in words.items()})
    alphabet = {c for word in symbols for c in word}
    return _learn_merges(symbols, vocab_size - len(alphabet))


def write_clip_tokenizer_files(outdir: str | Path, vocab_size: int = 400) -> Path:
    """Write a CLIP BPE ``vocab.json`` and ``merges.txt`` (byte alphabet, ``</w>`` word ends, learned merges).

    The layout follows OpenAI CLIP's files: the 256 byte-level characters, the same characters with ``</w>``,
    the merge results in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    from tokenizers import pre_tokenizers

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    alphabet.sort()
    tokens = list(alphabet) + [c + "</w>" for c in alphabet]
    merges = _train_bpe_merges(vocab_size, "</w>")
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (outdir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (outdir / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outdir


def tiny_clip_tokenizer(pad_token: str = "!"):
    """A CLIPTokenizer from locally written files; ``pad_token="!"`` as in SD-2 / ZeroScope (SD-1.5 pads with EOS)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=CLIP_MAX_LENGTH, pad_token=pad_token)


def write_roberta_tokenizer_files(outdir: str | Path, vocab_size: int = 400) -> Path:
    """Write a byte-level BPE ``vocab.json`` / ``merges.txt`` (GPT-2/RoBERTa format): RoBERTa's specials, the 256
    byte-level characters, then the merge results in merge order."""
    from tokenizers import pre_tokenizers

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(piece for line in _CORPUS for piece, _ in split.pre_tokenize_str(line))
    merges = _learn_merges(words, vocab_size - len(specials) - len(alphabet))
    tokens = specials + alphabet + [a + b for a, b in merges]
    (outdir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(dict.fromkeys(tokens))},
                                                  ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (outdir / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outdir


def tiny_roberta_tokenizer():
    """A RobertaTokenizer (AudioLDM's CLAP tokenizer class) from locally written files."""
    from transformers import RobertaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_roberta_tokenizer_files(tmp)
        return RobertaTokenizer.from_pretrained(tmp, model_max_length=ROBERTA_MAX_LENGTH)


# --------------------------------------------------------------------------------------------------- components


def _tiny_clip_text_encoder(tokenizer, hidden_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="gelu",
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _tiny_image_vae(
    in_channels: int = 3,
    latent_channels: int = 4,
    num_blocks: int = 4,
    sample_size: int = 64,
    scaling_factor: float = 0.18215,
):
    """AutoencoderKL with ``num_blocks`` levels: scale factor 2**(num_blocks-1) (8 like SD / ZeroScope)."""
    from diffusers import AutoencoderKL

    widths = (8, 16, 16, 16, 16)[:num_blocks]
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * num_blocks,
        up_block_types=("UpDecoderBlock2D",) * num_blocks,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def _write_bpe_files(tokenizer, folder: Path) -> None:
    """Store a BPE tokenizer as the hub repositories of SD / ZeroScope / AudioLDM do: ``vocab.json``,
    ``merges.txt`` and ``tokenizer_config.json`` (no ``tokenizer.json``), so loading goes through the same path."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2"] + merges) + "\n", encoding="utf-8")
    (folder / "tokenizer.json").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    for key in ("is_local", "local_files_only", "backend"):
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def _save(pipe, outdir: str | Path) -> Path:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(outdir), safe_serialization=True)
    _write_bpe_files(pipe.tokenizer, outdir / "tokenizer")
    logger.info("wrote tiny %s to %s", type(pipe).__name__, outdir)
    return outdir


# --------------------------------------------------------------------------------------------------- pipelines


def _check_sample_size(sample_size: int) -> None:
    if sample_size % 8:
        raise ValueError(f"sample_size must be a multiple of 8 (the VAE scale factor), got {sample_size}")


def _ddim_scheduler(prediction_type: str, beta_start: float = 0.00085, beta_end: float = 0.012):
    """The DDIM config the real pipelines ship (scaled-linear betas; AudioLDM's are 0.0015 to 0.0195)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_sd(
    outdir: str | Path,
    cross_attention_dim: int = 32,
    *,
    prediction_type: str = "v_prediction",
    sample_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny SD-2-style ``StableDiffusionPipeline`` (condition (77, ``cross_attention_dim``)).

    SD-2 style: OpenCLIP-like tokenizer padding with ``"!"``, linear-projection transformer blocks, a DDIM scheduler
    config with ``prediction_type="v_prediction"`` and the scaled-linear betas of SD-2 (the loader swaps in an
    ``EulerDiscreteScheduler`` from this config, as the reference does for SD-2). ``prediction_type="epsilon"``
    gives an SD-1.5-like scheduler instead. ``sample_size`` is the default image side in pixels (a multiple of 8).
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    _check_sample_size(sample_size)
    with _seeded(seed):
        tokenizer = tiny_clip_tokenizer(pad_token="!")
        text_encoder = _tiny_clip_text_encoder(tokenizer, cross_attention_dim)
        unet = UNet2DConditionModel(
            sample_size=sample_size // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=4,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
        )
        vae = _tiny_image_vae(sample_size=sample_size)
        scheduler = _ddim_scheduler(prediction_type)
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return _save(pipe, outdir)


def build_tiny_zeroscope(
    outdir: str | Path,
    cross_attention_dim: int = 24,
    *,
    sample_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny ZeroScope-style ``TextToVideoSDPipeline`` (UNet3D; condition (77, ``cross_attention_dim``))."""
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    _check_sample_size(sample_size)
    with _seeded(seed):
        tokenizer = tiny_clip_tokenizer(pad_token="!")
        text_encoder = _tiny_clip_text_encoder(tokenizer, cross_attention_dim)
        unet = UNet3DConditionModel(
            sample_size=sample_size // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=4,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=4,
        )
        vae = _tiny_image_vae(sample_size=sample_size)
        scheduler = _ddim_scheduler("epsilon")
        pipe = TextToVideoSDPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
    return _save(pipe, outdir)


def build_tiny_audioldm(
    outdir: str | Path,
    projection_dim: int = 16,
    *,
    seed: int = 0,
) -> Path:
    """Write a tiny ``AudioLDMPipeline`` (CLAP text tower, class-label UNet, 1-channel VAE, SpeechT5 HiFi-GAN).

    Geometry as the real AudioLDM: 64 mel bins, VAE scale factor 4 with 8 latent channels, so a (T, 64) log-mel
    (T = 1040 for the reference's 10.4 s targets; any T divisible by 4) gives latents (8, T/4, 16); the vocoder maps
    one mel frame to 160 samples at 16 kHz (10 ms). Condition: one ``projection_dim`` vector per sample.
    """
    from diffusers import AudioLDMPipeline, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    with _seeded(seed):
        tokenizer = tiny_roberta_tokenizer()
        text_encoder = ClapTextModelWithProjection(
            ClapTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=ROBERTA_MAX_LENGTH + 3,
                projection_dim=projection_dim,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=128,  # default length 128 * 4 * 0.01 s = 5.12 s, as the real AudioLDM
            in_channels=8,
            out_channels=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=4,
            cross_attention_dim=(16, 32),
            attention_head_dim=(2, 4),
            class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=projection_dim,
            class_embeddings_concat=True,
        )
        vae = _tiny_image_vae(
            in_channels=1, latent_channels=8, num_blocks=3, sample_size=256, scaling_factor=0.9227914214134216
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=64,
                sampling_rate=16000,
                upsample_initial_channel=16,
                upsample_rates=[8, 5, 4],  # 160 samples per mel frame, as the real vocoder
                upsample_kernel_sizes=[16, 11, 8],
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,
                # the default 0.01 makes a tiny random vocoder output ~1e-8 amplitudes; 0.15 gives ~0.1
                initializer_range=0.15,
            )
        )
        scheduler = _ddim_scheduler("epsilon", beta_start=0.0015, beta_end=0.0195)
        pipe = AudioLDMPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, vocoder=vocoder
        )
    return _save(pipe, outdir)


#: Folder of each modality's tiny decoder (here and in the tiny model folder that `build_tiny_models` writes).
TINY_DECODER_DIRS = {"image": "sd", "video": "zeroscope", "audio": "audioldm"}


def build_tiny_decoders(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build the three tiny decoders under ``root`` (``sd/``, ``zeroscope/``, ``audioldm/``); modality → folder."""
    root = Path(root)
    return {
        "image": build_tiny_sd(root / TINY_DECODER_DIRS["image"], seed=seed),
        "video": build_tiny_zeroscope(root / TINY_DECODER_DIRS["video"], seed=seed),
        "audio": build_tiny_audioldm(root / TINY_DECODER_DIRS["audio"], seed=seed),
    }

