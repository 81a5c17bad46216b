"""The gradio page (`python -m nextgpt.webui`) driven by Debian's Chromium, headless, through selenium: upload an
image and ask, ask for an image answer, check the text and the generated image on the page, keep a screenshot;
history per tab and "Clear". The answers are compared with the generator called directly in this process."""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _servers import REPO, free_port, start, stop
from conftest import save_tiny_stage3

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--max-new-tokens", "24", "--image-steps", "2", "--image-height", "32", "--image-width", "48"]
ARTIFACT = Path(os.environ.get("NEXTGPT_ARTIFACTS", REPO / "artifacts")) / "webui_chat.png"


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver; .ci/run does this), "
                    "so the browser test cannot run")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    browser_path, driver_path = chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1400", "--no-proxy-server"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("webui_ckpt") / "stage_3")


@pytest.fixture(scope="module")
def page(browser, checkpoint, tmp_path_factory):
    """(URL, log file) of `python -m nextgpt.webui` on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("webui_log") / "webui.log"
    proc = start(["nextgpt.webui", "--model", str(checkpoint), "--port", str(port), *SMALL],
                 f"http://127.0.0.1:{port}/", log)
    yield f"http://127.0.0.1:{port}/", log
    stop(proc)


@pytest.fixture(scope="module")
def direct(checkpoint):
    from nextgpt.generation import NextGPTGenerator, resolve_options

    generator = NextGPTGenerator.from_pretrained(checkpoint)
    generator.options = resolve_options(generator.options, max_new_tokens=24, image_steps=2, image_height=32,
                                        image_width=48)
    return generator


def shown(text: str) -> str:
    """An answer as the page shows it: output placeholders as [image] etc., whitespace collapsed."""
    for m in ("image", "video", "audio"):
        text = text.replace(f"<{m}>", f"[{m}]")
    return " ".join(text.split())


def bot_texts(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [" ".join(e.text.split()) for e in driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot]")
            if e.text.strip()]


def ask(driver, log: Path, text: str, files=(), timeout: float = 120) -> None:
    """Type (and attach), press Enter, and wait until the server has logged the answer and the box is back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    turns = log.read_text().count("webui turn=")
    box = driver.find_element(By.CSS_SELECTOR, "#ask textarea")
    for f in files:
        driver.find_element(By.CSS_SELECTOR, "#ask input[type=file]").send_keys(str(f))
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#ask img"))
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, timeout).until(lambda d: log.read_text().count("webui turn=") > turns)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "#ask textarea").is_enabled())


def wait_for(driver, condition, what: str, timeout: float = 30):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # gradio re-renders the chat while it updates: an element read mid-update is stale; read again
        return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition())
    except TimeoutException:
        raise AssertionError(f"{what}; the chat shows: {bot_texts(driver)}") from None


def test_browser_chat_with_an_image_and_an_image_answer(browser, page, direct, tmp_path):
    from selenium.webdriver.common.by import By

    from nextgpt.generation import Chat

    url, log = page
    picture = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(picture)
    reference = Chat(direct)
    first = reference.send("What is in this picture?", images=[str(picture)])
    second = reference.send("Now draw it.", force_modality=["image"])
    assert "<image>" in second.text

    browser.get(url)
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#ask textarea"), "the page did not load", 60)
    ask(browser, log, "What is in this picture?", files=[picture])
    wait_for(browser, lambda: bot_texts(browser) == [shown(first.text)], "the first answer is not shown")
    user_images = browser.find_elements(By.CSS_SELECTOR, "#chat [data-testid=user] img")
    assert user_images, "the uploaded image is not shown in the conversation"

    browser.find_element(By.CSS_SELECTOR, "#force input[name=image]").click()
    ask(browser, log, "Now draw it.")
    wait_for(browser, lambda: bot_texts(browser) == [shown(first.text), shown(second.text)],
             "the second answer (with the first turn as history) is not shown")

    def generated_image():
        for img in browser.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot] img"):
            size = browser.execute_script("return arguments[0].complete && [arguments[0].naturalWidth, "
                                          "arguments[0].naturalHeight]", img)
            if size:
                return size
        return None
    assert wait_for(browser, generated_image, "no generated image on the page") == [48, 32]

    shot = tmp_path / "webui_chat.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as png:
        assert png.format == "PNG" and png.size[0] >= 800
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    lines = [x for x in log.read_text().splitlines() if "webui turn=" in x]
    assert "turn=1 in=text:24ch,image:1" in lines[-2] and "turn=2" in lines[-1] and "outputs=image" in lines[-1]

    # another tab has its own conversation; the first keeps its own
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(url)
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#ask textarea"), "the page did not load", 60)
    assert bot_texts(browser) == []
    ask(browser, log, "Now draw it.")
    fresh = direct.generate("Now draw it.")
    wait_for(browser, lambda: bot_texts(browser) == [shown(fresh.text)], "the new tab's answer is not fresh")
    browser.close()
    browser.switch_to.window(first_tab)
    assert len(bot_texts(browser)) == 2

    # "Clear" empties the page and the conversation
    browser.find_element(By.CSS_SELECTOR, "#clear").click()
    wait_for(browser, lambda: bot_texts(browser) == [], "Clear left messages on the page")
    browser.find_element(By.CSS_SELECTOR, "#force input[name=image]").click()  # back to text only
    ask(browser, log, "Now draw it.")
    wait_for(browser, lambda: bot_texts(browser) == [shown(fresh.text)], "Clear did not reset the conversation")


def test_answers_stream_into_the_page(direct, tmp_path):
    """The page's handler yields the answer as it grows (no browser needed)."""
    pytest.importorskip("gradio")
    from nextgpt.webui.app import answer_turn

    states = [h[-1]["content"] for h, _, _ in answer_turn(direct, tmp_path, {"text": "Tell me a story."}, [], None,
                                                          [], {"max_new_tokens": 24})]
    growing = [s for s in states if s]
    assert len(set(growing)) >= 3
    assert all(b.startswith(a) for a, b in zip(growing, growing[1:]))
    assert " ".join(html.unescape(growing[-1]).split()) == shown(direct.generate("Tell me a story.",
                                                                                 max_new_tokens=24).text)
