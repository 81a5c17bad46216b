"""The OpenAI-compatible API (`python -m nextgpt.serve`) as a real uvicorn server on a loopback port, with the tiny
stage-3 checkpoint: answers are compared with the generator called directly in this process."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from _servers import free_port, start, stop
from conftest import save_tiny_stage3

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "test-key-123"
SMALL = ["--image-steps", "2", "--image-height", "32", "--image-width", "48", "--video-steps", "2",
         "--video-height", "32", "--video-width", "32", "--video-frames", "3", "--audio-steps", "2",
         "--audio-length-s", "0.5"]
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("serve_ckpt") / "stage_3")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """(base URL, log file, temporary folder) of `python -m nextgpt.serve` with a key, a 16-request queue and small
    limits."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    tmp = tmp_path_factory.mktemp("serve_tmp")
    proc = start(["nextgpt.serve", "--model", str(checkpoint), "--port", str(port), "--api-key", KEY,
                  "--max-queue", "16", "--max-body-mb", "1", "--max-input-pixels", "10000", "--max-tokens", "400",
                  *SMALL], f"http://127.0.0.1:{port}/health", log, env={"TMPDIR": str(tmp)})
    yield f"http://127.0.0.1:{port}", log, tmp
    stop(proc)


@pytest.fixture(scope="module")
def direct(checkpoint):
    """The same checkpoint loaded in this process: the answers the server must give."""
    from nextgpt.generation import NextGPTGenerator

    return NextGPTGenerator.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers=AUTH, timeout=120) as c:
        yield c


def picture(width=80, height=60, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(client, content, **fields) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **fields})


def answer(response: httpx.Response):
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_text_question(client, direct, server):
    r = ask(client, "What is NExT-GPT?", max_tokens=24)
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    expected = direct.generate("What is NExT-GPT?", max_new_tokens=24)
    assert answer(r) == expected.text and answer(r)
    assert body["usage"]["completion_tokens"] == len(expected.token_ids)
    assert body["usage"]["prompt_tokens"] == len(direct.prompt_ids([direct.prepare_turn("What is NExT-GPT?")]))
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["nextgpt"]
    health = httpx.get(f"{server[0]}/health").json()  # no key needed
    assert health["status"] == "ok" and health["max_queue"] == 16


def test_image_question_data_url(client, direct):
    image = picture()
    with_image = ask(client, [{"type": "image_url", "image_url": {"url": data_url(image)}},
                              {"type": "text", "text": "What is in the picture?"}], max_tokens=24)
    text_only = ask(client, "What is in the picture?", max_tokens=24)
    expected = direct.generate("<image>\nWhat is in the picture?", images=[image], max_new_tokens=24)
    assert answer(with_image) == expected.text
    # the image's features are spliced into the prompt: its embeddings count, its placeholder does not
    ids = direct.prompt_ids([direct.prepare_turn("<image>\nWhat is in the picture?", images=[image])])
    assert with_image.json()["usage"]["prompt_tokens"] == len(ids) - 1 + direct.model.media_tokens_per_item()
    assert text_only.json()["usage"]["prompt_tokens"] < len(ids)


def test_audio_and_video_inputs(client, direct, server, tmp_path):
    import soundfile

    from nextgpt.generation import save_video

    wav = io.BytesIO()
    soundfile.write(wav, np.sin(np.linspace(0, 400, 16000)).astype(np.float32) * 0.3, 16000, format="WAV")
    mp4 = save_video(np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), tmp_path / "v.mp4")
    r = ask(client, [{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.getvalue()).decode(),
                                                            "format": "wav"}},
                     {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,"
                                                         + base64.b64encode(mp4.read_bytes()).decode()}},
                     {"type": "text", "text": "Describe both."}], max_tokens=16)
    (tmp_path / "a.wav").write_bytes(wav.getvalue())
    expected = direct.generate("<audio>\n<video>\nDescribe both.", videos=[str(mp4)], audios=[str(tmp_path / "a.wav")],
                               max_new_tokens=16)
    assert answer(r) == expected.text
    # the decoded input files lived in the request's temporary folder, removed with the answer
    assert not list(server[2].glob("nextgpt-request-*"))


def test_forced_image_audio_video_answer_decodes(client):
    import av
    import soundfile

    r = ask(client, "Show, play and film something.", max_tokens=80, modalities=["text", "image", "audio", "video"])
    content = answer(r)
    assert isinstance(content, list) and content[0]["type"] == "text"
    media = {p["type"]: p for p in content[1:]}
    assert sorted(media) == ["audio", "image", "video"]
    for marker in ("<image>", "<audio>", "<video>"):
        assert content[0]["text"].count(marker) == 1
    assert media["image"]["mime_type"] == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(media["image"]["data"]))) as png:
        assert png.format == "PNG" and png.size == (48, 32)
    wave, rate = soundfile.read(io.BytesIO(base64.b64decode(media["audio"]["data"])))
    assert media["audio"]["mime_type"] == "audio/wav" and rate == 16000 and wave.shape == (8000,)
    with av.open(io.BytesIO(base64.b64decode(media["video"]["data"]))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert media["video"]["mime_type"] == "video/mp4" and len(frames) == 3 and frames[0].shape == (32, 32, 3)


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return events


def stream_texts(client, prompt: str, **fields) -> tuple[list[str], list]:
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": prompt}], "stream": True,
                             "stream_options": {"include_usage": True}, **fields}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    pieces = [e["choices"][0]["delta"].get("content") for e in events[:-1] if e["choices"]]
    assert [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1] in ("stop", "length")
    assert events[-2]["usage"]["completion_tokens"] > 0
    return [p for p in pieces if isinstance(p, str) and p], events


@pytest.mark.parametrize("fields", [dict(max_tokens=40, seed=3),  # greedy (the checkpoint's top_k=1)
                                    dict(max_tokens=40, seed=3, temperature=0.9, nextgpt={"top_k": 0})])  # sampled
def test_streaming_concatenation_equals_the_answer(client, fields):
    plain = answer(ask(client, "Tell me a story.", **fields))
    texts, _ = stream_texts(client, "Tell me a story.", **fields)
    assert "".join(texts) == plain
    if "temperature" not in fields:  # the untrained model's sampled text is mostly broken bytes, held back whole
        assert len(texts) >= 3


def test_openai_client(server):
    import openai

    api = openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in api.models.list()] == ["nextgpt"]
    reply = api.chat.completions.create(model="nextgpt", max_tokens=20,
                                        messages=[{"role": "user", "content": [
                                            {"type": "image_url", "image_url": {"url": data_url(picture())}},
                                            {"type": "text", "text": "What is this?"}]}])
    assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model="nextgpt", max_tokens=20, stream=True, messages=[{"role": "user", "content": "Hello"}]) if c.choices)
    again = api.chat.completions.create(model="nextgpt", max_tokens=20, messages=[{"role": "user", "content": "Hello"}])
    assert streamed == again.choices[0].message.content
    image = api.chat.completions.create(model="nextgpt", max_tokens=30, messages=[{"role": "user", "content": "Draw"}],
                                        extra_body={"modalities": ["text", "image"], "nextgpt": {"image_steps": 1}})
    parts = image.choices[0].message.content
    assert [p["type"] for p in parts] == ["text", "image"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server[0]}/v1", api_key="wrong", max_retries=0).models.list()


def test_16_concurrent_requests_all_answered(client, direct):
    prompts = [(f"Question number {i}?", 8 + 2 * (i % 4)) for i in range(16)]
    expected = {p: direct.generate(p, max_new_tokens=n).text for p, n in prompts}
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda pn: ask(client, pn[0], max_tokens=pn[1]), prompts))
    assert [r.status_code for r in responses] == [200] * 16
    assert [answer(r) for r in responses] == [expected[p] for p, _ in prompts]


def test_full_queue_answers_429_and_the_server_keeps_serving(client, server):
    slow_body = {"messages": [{"role": "user", "content": "Film it."}], "max_tokens": 60, "modalities": ["video"],
                 "nextgpt": {"video_steps": 30, "video_frames": 8, "video_height": 64, "video_width": 64}}
    slow = threading.Thread(target=lambda: slow_result.append(client.post("/v1/chat/completions", json=slow_body)))
    slow_result: list = []
    slow.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{server[0]}/health").json()["running"] == 0:  # wait until it is being answered
        assert slow.is_alive(), slow_result[0].text
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with ThreadPoolExecutor(17) as pool:  # 16 fill the queue, one more is refused
        responses = list(pool.map(lambda i: ask(client, f"Queued {i}", max_tokens=4), range(17)))
    slow.join()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 16 + [429], codes
    refused = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refused["type"] == "rate_limit_error" and "busy" in refused["message"]
    assert slow_result[0].status_code == 200
    assert answer(ask(client, "Still there?", max_tokens=4))


BAD = {
    "malformed JSON": (b'{"messages": [', {}, 400, "not valid JSON"),
    "unknown content type": ({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, {}, 400,
                             "unknown content part type 'hologram'"),
    "undecodable image": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}},
        {"type": "text", "text": "?"}]}]}, {}, 400, "cannot decode the image"),
    "oversized body": ({"messages": [{"role": "user", "content": "x" * (1_300_000)}]}, {}, 413, "above this server's limit"),
    "too many pixels": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(picture(200, 100))}}]}]}, {}, 413, "20000 pixels"),
    "max_tokens too large": ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, {}, 400,
                             "max_tokens 5000 is above"),
    "remote URL": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}]}]}, {}, 400, "not fetched"),
    "unknown option": ({"messages": [{"role": "user", "content": "hi"}], "nextgpt": {"image_stepz": 3}}, {}, 400,
                       "image_stepz"),
    "missing API key": ({"messages": [{"role": "user", "content": "hi"}]}, {"Authorization": ""}, 401,
                        "missing API key"),
    "wrong API key": ({"messages": [{"role": "user", "content": "hi"}]}, {"Authorization": "Bearer nope"}, 401,
                      "wrong API key"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_with_a_message_and_the_next_request_succeeds(client, case):
    body, headers, status, message = BAD[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/chat/completions", content=content,
                    headers={"Content-Type": "application/json", **AUTH, **headers})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert answer(ask(client, "A good question.", max_tokens=4))


def test_client_disconnect_cancels_the_generation(client, server):
    fields = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 250}
    started = time.monotonic()
    full = client.post("/v1/chat/completions", json=fields)
    full_time = time.monotonic() - started
    assert full.json()["usage"]["completion_tokens"] == 250  # the untrained model does not stop by itself
    started = time.monotonic()
    with client.stream("POST", "/v1/chat/completions", json={**fields, "stream": True}) as r:
        for _ in r.iter_lines():
            break  # one line, then hang up
    while httpx.get(f"{server[0]}/health").json()["running"]:
        assert time.monotonic() - started < full_time, "the generation went on after the client left"
        time.sleep(0.02)
    with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
        client.post("/v1/chat/completions", json=fields, timeout=0.3)
    deadline = time.monotonic() + full_time
    while httpx.get(f"{server[0]}/health").json()["running"]:
        assert time.monotonic() < deadline, "the generation went on after the client left"
        time.sleep(0.02)
    time.sleep(0.2)
    assert server[1].read_text().count("generation cancelled") >= 2


def test_each_request_is_logged_in_one_line(client, server):
    ask(client, "Log me.", max_tokens=12, modalities=["image"])
    time.sleep(0.2)
    line = [x for x in server[1].read_text().splitlines() if x.startswith("POST /v1/chat/completions 200")][-1]
    assert "in=" in line and "tokens=" in line and "outputs=image:1" in line and "force=image" in line
    assert "warm-up done" in server[1].read_text()


def test_media_urls_and_local_files_in_process(direct, tmp_path):
    """`--media-urls` answers media as /v1/files URLs that serve the files; `--local-files DIR` lets requests name
    files under DIR only (the app in this process, through starlette's test client)."""
    from starlette.testclient import TestClient

    from nextgpt.serve import ServeSettings, create_app

    inside = tmp_path / "shared" / "cat.png"
    inside.parent.mkdir()
    picture().save(inside)
    picture().save(tmp_path / "outside.png")
    settings = ServeSettings(media_urls=True, local_files=inside.parent, media_dir=tmp_path / "media", keep_media=1)
    with TestClient(create_app(direct, settings)) as c:
        r = c.post("/v1/chat/completions", json={"max_tokens": 30, "modalities": ["image"],
                                                 "nextgpt": {"image_steps": 1, "image_height": 32, "image_width": 48},
                                                 "messages": [{"role": "user", "content": [
                                                     {"type": "image_url", "image_url": {"url": str(inside)}},
                                                     {"type": "text", "text": "Again."}]}]})
        part = answer(r)[1]
        assert "data" not in part and part["url"].startswith("http://testserver/v1/files/chatcmpl-")
        png = c.get(part["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(png.content)) as image:
            assert image.size == (48, 32)
        outside = ask(c, [{"type": "image_url", "image_url": {"url": f"file://{tmp_path / 'outside.png'}"}}])
        assert outside.status_code == 400 and "outside the folder" in outside.json()["error"]["message"]
        assert c.get("/v1/files/chatcmpl-x/../../etc/passwd").status_code == 404
        ask(c, "Draw.", max_tokens=30, modalities=["image"], nextgpt={"image_steps": 1})  # keep_media=1: the first goes
        assert c.get(part["url"]).status_code == 404
