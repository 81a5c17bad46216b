"""Generation (nextgpt/generation/) on a tiny stage-3 model: KV cache, sampling, complete signal spans, forced and
capped outputs, input media, multi-turn history, batching, streaming, output files (spec §9, §12.8, §12.41)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_stage3
from nextgpt.constants import IMAGE_TOKEN_INDEX
from nextgpt.errors import ConfigError, DataError, MediaError
from nextgpt.generation import (
    Chat,
    GenerationResult,
    MediaOutput,
    NextGPTGenerator,
    Request,
    decoder_options,
    resolve_options,
    stop_strings,
    write_result,
)

REPO = Path(__file__).resolve().parents[1]
# tiny decoding so that every output costs a fraction of a second
SMALL = dict(image_steps=2, image_height=32, image_width=48, video_steps=2, video_height=32, video_width=32,
             video_frames=3, audio_steps=2, audio_length_s=0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    """An untrained tiny stage-3 checkpoint (LoRA attached, with non-zero B matrices so that it matters)."""
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("ckpt") / "stage_3", lora_b_std=0.02)


@pytest.fixture(scope="module")
def gen(checkpoint) -> NextGPTGenerator:
    """The checkpoint loaded the way predict.py loads it."""
    return NextGPTGenerator.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(80, 60), (40, 90)]):
        path = folder / f"picture_{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def steer(schedule: dict[int, int], default: int | list[int] | None = None):
    """A logits hook that makes `schedule[step]` (else `default`) the top token: a model that 'wants' them."""
    def hook(step: int, logits: torch.Tensor) -> torch.Tensor:
        wanted = schedule.get(step, default)
        if wanted is None:
            return logits
        logits = logits.clone()
        for rank, tok in enumerate([wanted] if isinstance(wanted, int) else wanted):
            logits[:, tok] = logits.max() + 100.0 * (len([wanted] if isinstance(wanted, int) else wanted) - rank)
        return logits
    return hook


def no_eos(gen: NextGPTGenerator):
    def hook(step, logits):
        logits = logits.clone()
        logits[:, sorted(gen.eos_ids)] = float("-inf")
        return logits
    return hook


def first_logits(gen: NextGPTGenerator, **kwargs) -> torch.Tensor:
    seen = {}

    def hook(step, logits):
        seen.setdefault(step, logits.clone())
        return logits
    gen.generate(max_new_tokens=1, logits_hook=hook, **kwargs)
    return seen[0]


# ------------------------------------------------------------------------------------------- decoding


def test_kv_cache_gives_the_same_greedy_tokens_as_recomputing(gen):
    kwargs = dict(max_new_tokens=96, max_outputs_per_modality=0, logits_hook=no_eos(gen))
    cached = gen.generate("Describe a red circle.", use_cache=True, **kwargs)
    full = gen.generate("Describe a red circle.", use_cache=False, **kwargs)
    assert len(cached.token_ids) == 96 and cached.finish_reason == "length"
    assert cached.token_ids == full.token_ids
    assert cached.text == full.text


def test_kv_cache_is_faster_at_256_new_tokens(gen):
    kwargs = dict(max_new_tokens=256, max_outputs_per_modality=0, logits_hook=no_eos(gen))
    prompt = "Describe a red circle moving slowly across a blue square. " * 4
    gen.generate(prompt, max_new_tokens=4)  # warm-up
    times = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        result = gen.generate(prompt, use_cache=use_cache, **kwargs)
        times[use_cache] = time.perf_counter() - start
        assert len(result.token_ids) == 256
    ratio = times[False] / times[True]
    print(f"\n256 new tokens: cached {times[True]:.2f} s, uncached {times[False]:.2f} s, speed-up {ratio:.2f}x")
    assert times[True] < times[False]


def test_sampling_is_reproducible_with_a_seed(gen):
    kwargs = dict(max_new_tokens=32, temperature=1.0, top_k=0, top_p=0.95, max_outputs_per_modality=0,
                  logits_hook=no_eos(gen))
    a = gen.generate("Tell me about sounds.", seed=3, **kwargs)
    b = gen.generate("Tell me about sounds.", seed=3, **kwargs)
    c = gen.generate("Tell me about sounds.", seed=4, **kwargs)
    greedy = gen.generate("Tell me about sounds.", **dict(kwargs, top_k=1))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert a.token_ids != greedy.token_ids


def test_eos_stops_and_is_not_part_of_the_answer(gen):
    eos = min(gen.eos_ids)
    word = gen.model.tokenizer.convert_tokens_to_ids("▁circle")
    result = gen.generate("hi", max_new_tokens=20, logits_hook=steer({0: word, 1: word, 2: eos}))
    assert result.token_ids == [word, word] and result.finish_reason == "stop"
    assert result.text == "circle circle" and result.outputs == []


# ------------------------------------------------------------------------------------------- signal spans


def test_first_signal_token_alone_yields_a_complete_span_and_an_output(gen):
    signal = gen.model.signal
    junk = [signal.token_ids["video"][5], min(gen.eos_ids)]  # a stray signal token, then EOS
    result = gen.generate("Draw.", max_new_tokens=40, logits_hook=steer({0: signal.token_ids["image"][0]}, junk),
                          **SMALL)
    span = signal.span("image")
    assert result.token_ids == span and len(span) == 7  # 2n-1 with the separators; EOS after the span
    assert result.finish_reason == "stop" and result.text == "<image>"
    assert len(result.images) == 1 and result.images[0].size == (48, 32)


def test_span_hidden_states_are_those_of_the_fed_tokens(gen):
    """Teacher-forced check: the projector input = layer `layer_idx` states of the span tokens in one full forward
    over prompt + answer (the training convention), so the decoded image is the same."""
    model, signal = gen.model, gen.model.signal
    word = model.tokenizer.convert_tokens_to_ids("▁circle")
    hook = steer({0: word, 1: signal.token_ids["image"][0]}, min(gen.eos_ids))
    result = gen.generate("Draw.", max_new_tokens=40, logits_hook=hook, **SMALL)
    assert result.outputs[0].span == (1, 8)
    turn = gen.prepare_turn("Draw.")
    prompt = gen.prompt_embeds([turn])
    with torch.no_grad():
        answer = model.embed_tokens(torch.tensor(result.token_ids))
        out = model.llm(inputs_embeds=torch.cat([prompt, answer])[None], output_hidden_states=True)
        hidden = out.hidden_states[model.config.layer_idx][0, len(prompt) + 1:len(prompt) + 8]
        condition = model.project_signal("image", hidden[None], answer[1:8][None])
    options = resolve_options(gen.options, **SMALL)
    again = model.decoders.get("image").generate(condition, generator=torch.Generator().manual_seed(options.seed),
                                                 **decoder_options(options, "image"))[0]
    diff = np.abs(np.asarray(again, dtype=int) - np.asarray(result.images[0], dtype=int))
    assert diff.max() <= 2, diff.max()


def test_two_images_in_one_answer(gen):
    signal = gen.model.signal
    start = signal.token_ids["image"][0]
    result = gen.generate("Two pictures.", max_new_tokens=40, logits_hook=steer({0: start, 7: start}, min(gen.eos_ids)),
                          **SMALL)
    assert [o.span for o in result.outputs] == [(0, 7), (7, 14)]
    assert len(result.images) == 2 and result.text == "<image><image>"


def test_outputs_per_modality_are_capped(gen):
    signal = gen.model.signal
    start = signal.token_ids["image"][0]
    result = gen.generate("Many pictures.", max_new_tokens=30, max_outputs_per_modality=2,
                          logits_hook=steer({}, start), **SMALL)
    assert [o.modality for o in result.outputs] == ["image", "image"]
    outside = [t for i, t in enumerate(result.token_ids) if not 0 <= i < 14]
    assert len(result.token_ids) == 30 and not set(outside) & signal.all_ids()


def test_a_span_that_would_not_fit_is_not_started(gen):
    signal = gen.model.signal
    result = gen.generate("A video.", max_new_tokens=30, logits_hook=steer({}, signal.token_ids["video"][0]))
    assert result.outputs == [] and not set(result.token_ids) & signal.all_ids()  # 47 tokens do not fit in 30


def test_force_modality_replaces_the_stop(gen):
    result = gen.generate("Hello.", max_new_tokens=40, force_modality="audio",
                          logits_hook=steer({}, min(gen.eos_ids)), **SMALL)
    assert result.token_ids == gen.model.signal.span("audio") and result.finish_reason == "stop"
    assert result.audios[0].shape == (8000,) and result.audios[0].dtype == np.float32
    assert result.outputs[0].sample_rate == 16000


def test_force_modality_fits_the_span_before_the_length_limit(gen):
    signal = gen.model.signal
    result = gen.generate("Hello.", max_new_tokens=20, force_modality="image", max_outputs_per_modality=1,
                          logits_hook=no_eos(gen), **SMALL)
    assert result.token_ids[-7:] == signal.span("image") and len(result.token_ids) == 20
    assert result.finish_reason == "length" and len(result.images) == 1
    with pytest.raises(ConfigError, match="cannot hold the forced output"):
        gen.generate("Hello.", max_new_tokens=20, force_modality="video")
    with pytest.raises(ConfigError, match="must be among"):
        gen.generate("Hello.", force_modality="smell")


def test_several_forced_modalities(gen):
    result = gen.generate("All of it.", max_new_tokens=80, force_modality=["video", "image", "audio"],
                          logits_hook=steer({}, min(gen.eos_ids)), **SMALL)
    assert [o.modality for o in result.outputs] == ["video", "image", "audio"]
    assert result.text == "<video><image><audio>"
    assert result.videos[0].shape == (3, 32, 32, 3) and result.videos[0].dtype == np.uint8


# ------------------------------------------------------------------------------------------- prompts


def test_prompt_uses_the_models_training_template(gen):
    text = gen.model.tokenizer.decode(gen.prompt_ids([gen.prepare_turn("What is a circle?")]), skip_special_tokens=True)
    assert gen.template == "v1"
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant.")
    assert text.rstrip().endswith("USER: What is a circle? ASSISTANT:")
    assert stop_strings("legacy") == ["###"] and stop_strings("v1") == ["</s>"] and gen.stops == []


def test_input_image_is_encoded_and_spliced(gen, pictures):
    model = gen.model
    turn = gen.prepare_turn("What is in <image>?", images=[pictures[0]])
    ids = gen.prompt_ids([turn])
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    with torch.no_grad():
        block = model.encode_media("image", gen.preprocess("image", [pictures[0]]))[0]
    assert block.shape == (model.media_tokens_per_item(), model.hidden_size)
    embeds = gen.prompt_embeds([turn])
    p = ids.index(IMAGE_TOKEN_INDEX)
    assert embeds.shape[0] == len(ids) - 1 + len(block)
    torch.testing.assert_close(embeds[p:p + len(block)], block)
    # the result counts the prompt the LLM read: text tokens plus the image's embeddings
    result = gen.generate("What is in <image>?", images=[pictures[0]], max_new_tokens=2)
    assert result.prompt_tokens == len(ids) - 1 + len(block)
    # the answer depends on the image
    a = first_logits(gen, prompt="What is in <image>?", images=[pictures[0]])
    b = first_logits(gen, prompt="What is in <image>?", images=[pictures[1]])
    assert not torch.allclose(a, b)


def test_media_without_placeholders_go_first_and_counts_must_match(gen, pictures):
    turn = gen.prepare_turn("Compare them.", images=pictures)
    assert turn.user == "<image>\n<image>\nCompare them." and len(turn.media["image"]) == 2
    with pytest.raises(DataError, match="2 <image> placeholder.*1 image file"):
        gen.prepare_turn("<image> and <image>", images=pictures[:1])
    with pytest.raises(MediaError, match="missing.png"):
        gen.generate("look", images=[pictures[0].parent / "missing.png"])
    with pytest.raises(ConfigError, match="generate.temperature"):
        gen.generate("hi", temperature=-1.0)
    with pytest.raises(ConfigError, match="unknown key 'generate.temprature'"):
        gen.generate("hi", temprature=0.5)


def test_multi_turn_chat_sees_earlier_turns(gen, pictures):
    chat = Chat(gen)
    first = chat.send("Remember this picture.", images=[pictures[0]], max_new_tokens=12, force_modality="image",
                      **SMALL)
    assert "<image>" in first.text and chat.turns[0].answer == first.text
    fresh = first_logits(gen, prompt="What did I show you?")
    seen = {}

    def spy(step, logits):
        seen.setdefault(step, logits.clone())
        return logits
    chat.send("What did I show you?", max_new_tokens=1, logits_hook=spy)
    assert len(chat.turns) == 2
    assert not torch.allclose(seen[0], fresh)
    ids = gen.prompt_ids(chat.turns[:1] + [gen.prepare_turn("Next.")])
    text = gen.model.tokenizer.decode([i for i in ids if i >= 0])
    assert "Remember this picture." in text and "Next." in text
    assert ids.count(IMAGE_TOKEN_INDEX) == 1  # the first turn's input image is still in the prompt
    span = gen.model.signal.span("image")  # and the first answer's output, as its signal span
    assert any(ids[i:i + len(span)] == span for i in range(len(ids)))
    assert gen.prompt_embeds(chat.turns[:1] + [gen.prepare_turn("Next.")]).shape[0] == len(ids) - 1 + 8
    chat.reset()
    assert chat.turns == []


def test_batch_gives_the_answers_of_single_prompts(gen, pictures):
    requests = [Request("Describe a circle."), Request("What is in <image>? Tell me more.", images=[pictures[1]])]
    kwargs = dict(max_new_tokens=24, max_outputs_per_modality=0, logits_hook=no_eos(gen))
    batch = gen.generate_batch(requests, **kwargs)
    single = [gen.generate(r, **kwargs) for r in requests]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    assert [r.text for r in batch] == [r.text for r in single]


def test_streamed_text_adds_up_to_the_answer(gen):
    signal = gen.model.signal
    word = gen.model.tokenizer.convert_tokens_to_ids("▁circle")
    pieces, kinds = [], []
    result = None
    hook = steer({0: word, 1: word, 2: signal.token_ids["image"][0], 9: word, 10: min(gen.eos_ids)})
    for event in gen.stream("Stream.", max_new_tokens=30, logits_hook=hook, **SMALL):
        kinds.append(event.kind)
        if event.kind == "text":
            pieces.append(event.text)
        elif event.kind == "done":
            result = event.result
    assert kinds[-2:] == ["media", "done"] and kinds.count("media") == 1
    assert "".join(pieces).strip() == result.text
    assert result.text.replace(" ", "") == "circlecircle<image>circle"


# ------------------------------------------------------------------------------------------- files


def test_write_result_files_decode(tmp_path):
    import av
    import soundfile

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    frames = rng.integers(0, 256, (5, 32, 40, 3), dtype=np.uint8)
    wave = (0.5 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    result = GenerationResult("a <image> b <video> <audio> c", [], [
        MediaOutput("image", image, (0, 7)), MediaOutput("video", frames, (7, 54)),
        MediaOutput("audio", wave, (54, 69), 16000)], "stop")
    summary = write_result(result, tmp_path / "out", video_fps=8)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved == summary == {"text": "a <image> b <video> <audio> c", "images": ["image_00.png"],
                                "audios": ["audio_00.wav"], "videos": ["video_00.mp4"]}
    with Image.open(tmp_path / "out" / "image_00.png") as png:
        assert png.format == "PNG" and png.size == (48, 32)
        assert np.array_equal(np.asarray(png), np.asarray(image))
    data, rate = soundfile.read(tmp_path / "out" / "audio_00.wav")
    assert rate == 16000 and data.shape == (8000,) and np.abs(data - wave).max() < 1e-3
    with av.open(str(tmp_path / "out" / "video_00.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 8
    assert len(decoded) == 5 and decoded[0].shape == (32, 40, 3)
    again = write_result(result, tmp_path / "out")  # never overwrites earlier outputs
    assert again["images"] == ["image_00_1.png"] and (tmp_path / "out" / "image_00.png").is_file()


# ------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_keeps_encoder_and_decoders_on_the_cpu(checkpoint, pictures):
    gpu = NextGPTGenerator.from_pretrained(checkpoint, device="cuda", offload=True)
    result = gpu.generate("<image>", images=[pictures[0]], max_new_tokens=40, force_modality=["image", "audio"],
                          logits_hook=steer({}, min(gpu.eos_ids)), **SMALL)
    assert [o.modality for o in result.outputs] == ["image", "audio"]
    assert gpu.model.encoder.device.type == "cpu" and gpu.device.type == "cuda"
    for modality in ("image", "audio"):
        assert gpu.model.decoders.get(modality).unet.device.type == "cpu"
    cpu = NextGPTGenerator.from_pretrained(checkpoint)
    expected = cpu.generate("<image>", images=[pictures[0]], max_new_tokens=40, force_modality=["image", "audio"],
                            logits_hook=steer({}, min(cpu.eos_ids)), **SMALL)
    assert result.token_ids == expected.token_ids
