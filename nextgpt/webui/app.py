"""The gradio page: a multimodal chat box, the conversation with inline media, output-modality and generation
controls, and "Clear". Each browser tab has its own conversation (a gradio State holding its `Turn`s, media
features included); answers are generated one at a time (one model)."""
from __future__ import annotations

import html
import logging
import mimetypes
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..constants import MODALITIES, PLACEHOLDER_TOKEN
from ..errors import NextGPTError
from ..generation import Chat, resolve_options
from ..serve.outputs import write_output

logger = logging.getLogger("nextgpt.webui")

INPUT_KINDS = {"image": "image", "audio": "audio", "video": "video"}  # MIME major type → modality
SHOWN = {m: f"[{m}]" for m in MODALITIES}  # how an output's place in the text is shown (a tag would be hidden)


def build_demo(generator, media_dir: str | Path | None = None):
    """The page for `generator` (a loaded `NextGPTGenerator`). Generated media are written under `media_dir`
    (default: a temporary folder) and shown from there."""
    import gradio as gr

    media_root = Path(media_dir or tempfile.mkdtemp(prefix="nextgpt-webui-"))
    media_root.mkdir(parents=True, exist_ok=True)
    d = generator.options
    max_len = generator.model.config.max_length

    with gr.Blocks(title="NExT-GPT", analytics_enabled=False) as demo:
        gr.Markdown("## NExT-GPT\nAsk a question; attach images, sounds or video clips. Pick output modalities "
                    "below to ask for a generated image, sound or video.")
        chatbot = gr.Chatbot(label="Conversation", height=480, elem_id="chat", render_markdown=False,
                             feedback_options=None)
        box = gr.MultimodalTextbox(file_types=["image", "audio", "video"], file_count="multiple", sources=["upload"],
                                   placeholder="Type a message, attach files, press Enter", show_label=False,
                                   elem_id="ask")
        clear = gr.Button("Clear", elem_id="clear")
        with gr.Accordion("Output and generation options", open=True):
            force = gr.CheckboxGroup(list(MODALITIES), label="Answer with (forced output modalities)",
                                     elem_id="force")
            with gr.Row():
                max_new_tokens = gr.Slider(1, max_len, value=min(d.max_new_tokens, max_len), step=1,
                                           label="max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=d.temperature, step=0.05, label="temperature")
                top_p = gr.Slider(0.0, 1.0, value=d.top_p, step=0.01, label="top p")
                top_k = gr.Number(value=d.top_k, precision=0, minimum=0, label="top k (1 = greedy)")
                seed = gr.Number(value=d.seed, precision=0, label="seed")
            with gr.Row():
                image_steps = gr.Slider(1, 200, value=d.image_steps, step=1, label="image steps")
                video_steps = gr.Slider(1, 200, value=d.video_steps, step=1, label="video steps")
                video_frames = gr.Slider(1, 64, value=d.video_frames, step=1, label="video frames")
                audio_steps = gr.Slider(1, 200, value=d.audio_steps, step=1, label="audio steps")
                audio_length_s = gr.Slider(0.5, 30.0, value=d.audio_length_s, step=0.5, label="audio seconds")
        turns = gr.State(None)
        option_inputs = [max_new_tokens, temperature, top_p, top_k, seed, image_steps, video_steps, video_frames,
                         audio_steps, audio_length_s]
        names = ["max_new_tokens", "temperature", "top_p", "top_k", "seed", "image_steps", "video_steps",
                 "video_frames", "audio_steps", "audio_length_s"]

        def respond(message: dict, history: list, state, forced: list[str], *values) -> Iterator[tuple]:
            options = dict(zip(names, values))
            options = {k: (int(v) if k not in ("temperature", "top_p", "audio_length_s") else float(v))
                       for k, v in options.items() if v is not None}
            yield from answer_turn(generator, media_root, message or {}, list(history or []), state, forced or [],
                                   options)

        box.submit(respond, [box, chatbot, turns, force, *option_inputs], [chatbot, turns, box],
                   concurrency_limit=1)
        clear.click(lambda: ([], None, gr.MultimodalTextbox(value=None)), None, [chatbot, turns, box],
                    queue=False)
        chatbot.clear(lambda: None, None, turns, queue=False)  # the chat box's own trash icon
    demo.media_root = media_root
    return demo


def answer_turn(generator, media_root: Path, message: dict, history: list, state, forced: list[str],
                options: dict[str, Any]) -> Iterator[tuple]:
    """One exchange: yields (chat messages, conversation turns, text box value) as the answer grows."""
    import gradio as gr

    started = time.monotonic()
    text = (message.get("text") or "").strip()
    files = [f if isinstance(f, str) else f.get("path") for f in message.get("files") or []]
    given: dict[str, list[str]] = {m: [] for m in MODALITIES}
    for path in files:
        kind = INPUT_KINDS.get((mimetypes.guess_type(path)[0] or "").split("/")[0])
        if kind is None:
            gr.Warning(f"{Path(path).name}: not an image, audio or video file; ignored")
            continue
        given[kind].append(path)
        history.append({"role": "user", "content": {"path": path}})
    if not text and not files:
        yield history, state, gr.MultimodalTextbox(value=None)
        return
    history.append({"role": "user", "content": text or " "})
    chat = Chat(generator)
    chat.turns = list(state or [])
    reply = {"role": "assistant", "content": ""}
    history.append(reply)
    yield history, state, gr.MultimodalTextbox(value=None, interactive=False)
    folder = media_root / uuid.uuid4().hex[:12]
    result, shown = None, ""
    counts = {m: 0 for m in MODALITIES}
    try:
        fps = resolve_options(generator.options, **options).video_fps  # a bad value fails before the media encode
        for event in chat.stream(text, given["image"], given["video"], given["audio"], force_modality=forced or None,
                                 **options):
            if event.kind == "text":
                shown += event.text
                reply["content"] = _display(shown)
            elif event.kind == "media":
                folder.mkdir(parents=True, exist_ok=True)
                counts[event.output.modality] += 1
                path = write_output(event.output, folder, counts[event.output.modality] - 1, fps)
                history.append({"role": "assistant", "content": {"path": str(path)}})
            else:
                result = event.result
                reply["content"] = _display(result.text) or "(no text)"
            yield history, chat.turns, gr.MultimodalTextbox(value=None, interactive=False)
    except NextGPTError as err:
        reply["content"] = f"error: {' '.join(str(err).split())}"
    inputs = ",".join(f"{m}:{len(v)}" for m, v in given.items() if v)
    outputs = ",".join(f"{o.modality}" for o in result.outputs) if result else "-"
    logger.info("webui turn=%d in=text:%dch%s %.3fs tokens=%s outputs=%s finish=%s", len(chat.turns), len(text),
                f",{inputs}" if inputs else "", time.monotonic() - started,
                len(result.token_ids) if result else "-", outputs or "-",
                result.finish_reason if result else "error")
    yield history, chat.turns, gr.MultimodalTextbox(value=None, interactive=True)


def _display(text: str) -> str:
    """The answer as shown: output placeholders as [image] etc., and escaped, since the chat box renders HTML
    (a model's "<" would otherwise start a tag and hide text)."""
    for m, shown in SHOWN.items():
        text = text.replace(PLACEHOLDER_TOKEN[m], shown)
    return html.escape(text, quote=False)


def launch(demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page (local only unless `host` says otherwise; no share link)."""
    demo.queue(default_concurrency_limit=1)
    return demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                       allowed_paths=[str(demo.media_root)], show_error=True, quiet=False,
                       footer_links=[])
