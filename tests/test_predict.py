"""predict.py: the fixed command-line interface (media files + result.json), its errors, the terminal chat, and a
LEGACY-format reference checkpoint going through `python -m nextgpt.model.convert` and then predict.py."""
from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_tiny_stage3, tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.model.modeling import NextGPTModel, build_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import predict  # noqa: E402

SMALL = ["--image-steps", "2", "--image-height", "32", "--image-width", "48", "--video-steps", "2",
         "--video-height", "32", "--video-width", "32", "--video-frames", "3", "--audio-steps", "2",
         "--audio-length-s", "0.5"]
LEGACY = ["model.signal_layout=legacy", "model.template=legacy", "model.encoder.output=pooled",
          "model.input_projector.kind=linear", "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
          "data.image_aspect_ratio=square"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    """An untrained tiny stage-3 checkpoint (outputs come from --force-modality)."""
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("ckpt") / "stage_3")


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def test_cli_writes_png_wav_mp4_and_result_json(checkpoint, picture, tmp_path):
    import av
    import soundfile

    out = tmp_path / "out"
    cmd = [sys.executable, "predict.py", "--model", str(checkpoint), "--prompt", "Look at <image> and make more.",
           "--image", str(picture), "--output-dir", str(out), "--max-new-tokens", "80",
           "--force-modality", "image", "--force-modality", "audio", "--force-modality", "video", *SMALL]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert set(result) == {"text", "images", "audios", "videos"}
    assert [len(result[k]) for k in ("images", "audios", "videos")] == [1, 1, 1]
    assert all(not Path(p).is_absolute() for k in ("images", "audios", "videos") for p in result[k])
    for marker in ("<image>", "<audio>", "<video>"):
        assert result["text"].count(marker) == 1
    with Image.open(out / result["images"][0]) as png:
        assert png.format == "PNG" and png.size == (48, 32)
    wave, rate = soundfile.read(out / result["audios"][0])
    assert rate == 16000 and wave.shape == (8000,)
    with av.open(str(out / result["videos"][0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (32, 32, 3)
    assert f"[saved image: {out / result['images'][0]}]" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/nowhere"], "nowhere: checkpoint directory not found"),
    (["--image", "{tmp}/missing.png"], "missing.png: image file not found"),
    (["--audio", "{tmp}/noise.wav"], "noise.wav: cannot decode audio"),
    (["--temperature", "-1"], "generate.temperature: -1.0 is below the minimum 0.0"),
    (["--force-modality", "smell"], "argument --force-modality: invalid choice: 'smell'"),
    (["--surprise"], "unrecognized arguments: --surprise"),
])
def test_errors_are_one_line_without_traceback(checkpoint, tmp_path, capsys, args, message):
    (tmp_path / "noise.wav").write_bytes(b"not a wav file at all")
    argv = ["--model", str(checkpoint), "--prompt", "hi", "--output-dir", str(tmp_path / "out")]
    argv += [a.format(tmp=tmp_path) for a in args]
    try:
        code = predict.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_interactive_chat(checkpoint, picture, tmp_path, monkeypatch, capsys):
    lines = iter([f"/image {picture}", "/image /no/such.png", "/force image", "What is this?", "/force off",
                  "/reset", "/dance", "And now?", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    code = predict.main(["--model", str(checkpoint), "--interactive", "--output-dir", str(tmp_path / "chat"),
                         "--max-new-tokens", "12", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    assert f"(attached image: {picture})" in out and "error: /no/such.png: image file not found" in out
    assert "(conversation cleared)" in out and "error: unknown command /dance" in out
    saved = json.loads((tmp_path / "chat" / "turn_001" / "result.json").read_text())
    assert len(saved["images"]) == 1 and "<image>" in saved["text"]
    assert f"[saved image: {tmp_path / 'chat' / 'turn_001' / saved['images'][0]}]" in out
    assert out.count("ASSISTANT> ") == 2


# ------------------------------------------------------------------------------------------- LEGACY


def _legacy_name(ours: str) -> str:
    """Our trained-weight key → the reference LEGACY key (`7b_tiva_v0/pytorch_model.pt`, spec §10.3)."""
    if ours.startswith("input_projector."):
        return "llama_proj." + ours.split(".", 1)[1]
    _, modality, rest = ours.split(".", 2)
    head, _, tail = rest.partition(".")
    head = {"in_fc": "fc", "out_fc": "model"}.get(head, head)
    suffix = {"image": "", "video": "_video", "audio": "_audio"}[modality]
    return f"gen_text_hidden_fcs{suffix}.0.{head}" + (f".{tail}" if tail else "")


def test_legacy_checkpoint_converts_and_predicts(tiny_models, picture, tmp_path):
    from peft import get_peft_model_state_dict

    convert = pytest.importorskip("nextgpt.cli.convert")
    from nextgpt.generation import NextGPTGenerator

    overrides = tiny_model_overrides(tiny_models) + LEGACY
    config = load_config(REPO / "configs/tiny/stage_3.yaml", overrides)
    torch.manual_seed(3)
    source = build_model(config.model, losses=config.train.losses)
    source.enable_lora(config.model.lora)
    with torch.no_grad():
        for name, p in source.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    # a LEGACY file with projectors + LoRA under the reference's key names and no embedding / LM-head matrices
    state = {_legacy_name(k): v for k, v in source.trainable_state_dict().items() if not k.startswith("signal_rows")}
    for k, v in get_peft_model_state_dict(source.llm, save_embedding_layers=False).items():
        state["llama_model." + k[:-len(".weight")] + ".default.weight"] = v.clone()
    assert "gen_text_hidden_fcs_audio.0.query_embs" in state and "llama_proj.weight" in state
    assert "llama_model.base_model.model.model.layers.1.self_attn.o_proj.lora_B.default.weight" in state
    (tmp_path / "7b_tiva_v0").mkdir()
    torch.save(state, tmp_path / "7b_tiva_v0" / "pytorch_model.pt")

    out = tmp_path / "converted"
    code = convert.main(["--format", "legacy", "--src", str(tmp_path / "7b_tiva_v0"), "--config",
                         str(REPO / "configs/tiny/stage_3.yaml"), "--output", str(out), *overrides])
    assert code == 0
    converted = NextGPTModel.from_pretrained(out).eval()
    theirs, ours = source.trainable_state_dict(), converted.trainable_state_dict()
    assert theirs.keys() == ours.keys()
    for k in theirs:  # projectors copied; signal rows start at the mean of the base rows on both sides
        torch.testing.assert_close(ours[k], theirs[k], msg=k)

    # the converted model answers like the source (LEGACY template, <Img> wrapping, pooled encoder, LoRA)
    a, b = NextGPTGenerator(source.eval()), NextGPTGenerator.from_pretrained(out)
    assert a.image_aspect_ratio == "square"
    assert b.template == "legacy" and b.image_aspect_ratio == "square" and b.stops == ["###"]
    turn = b.prepare_turn("What is this?", images=[picture])
    ids = b.prompt_ids([turn])
    tok = converted.tokenizer
    p = ids.index(-200)
    assert tok.convert_ids_to_tokens([ids[p - 1], ids[p + 1]]) == ["<Img>", "</Img>"]
    assert tok.decode(ids[:p], skip_special_tokens=True).startswith("### Human:")
    kwargs = dict(max_new_tokens=24, max_outputs_per_modality=0)
    assert (a.generate("What is this?", images=[picture], **kwargs).token_ids
            == b.generate("What is this?", images=[picture], **kwargs).token_ids)
    # the template's stop string "###" ends the answer
    he, stop = tok.convert_tokens_to_ids(["▁he", "###"])

    def hook(step, logits):
        logits = logits.clone()
        logits[:, [he, stop, he][min(step, 2)]] = logits.max() + 100
        return logits
    stopped = b.generate("Hi.", max_new_tokens=10, logits_hook=hook)
    assert stopped.token_ids == [he, stop] and stopped.finish_reason == "stop" and stopped.text == "he"

    pred = tmp_path / "pred"
    assert predict.main(["--model", str(out), "--prompt", "Show me something like <image>.", "--image",
                         str(picture), "--output-dir", str(pred), "--force-modality", "image", *SMALL]) == 0
    result = json.loads((pred / "result.json").read_text())
    assert len(result["images"]) == 1 and (pred / result["images"][0]).is_file()
    assert len(converted.signal.span("image")) == 4  # contiguous LEGACY span
