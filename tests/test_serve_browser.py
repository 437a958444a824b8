"""The web page at / in headless Chromium: key, speak (playing while it streams), search with
its candidates listed and playable, upload a voice with or without its transcript, see errors."""

import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from llasa.codec import Codec  # noqa: E402
from llasa.lm.model import build_model  # noqa: E402
from llasa.lm.vocab import build_tokenizer  # noqa: E402
from llasa.serve import create_app, serve_in_thread  # noqa: E402
from llasa.tts import Synthesizer  # noqa: E402

KEY = "sk-browser"


@pytest.fixture(scope="module")
def url():
    torch.set_num_threads(1)
    codec = Codec.from_config("tiny", seed=0)
    tokenizer = build_tokenizer(None, codec.codebook_size)
    synth = Synthesizer(build_model("tiny", tokenizer, seed=1), tokenizer, codec)
    with serve_in_thread(create_app(synth, model_id="tiny", api_key=KEY)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def status(driver, expected: str, timeout: float = 60) -> str:
    WebDriverWait(driver, timeout).until(lambda d: expected in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text


def played_seconds(driver) -> float:
    """The player's duration once it has decoded the returned wav."""
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const p = document.getElementById('player'); return p.readyState >= 1 && p.duration > 0"))  # fmt: skip
    return driver.execute_script("return document.getElementById('player').duration")


def test_page_speaks_and_clones(url, browser, tmp_path):
    browser.get(url)
    # without the key the page says why nothing works
    assert "API key" in status(browser, "API key")

    key = browser.find_element(By.ID, "key")
    key.send_keys(KEY)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    WebDriverWait(browser, 10).until(lambda d: len(Select(d.find_element(By.ID, "voice")).options) == 1)
    assert Select(browser.find_element(By.ID, "voice")).first_selected_option.get_attribute("value") == "default"

    browser.find_element(By.ID, "speak").click()
    done = status(browser, "done")
    # streamed: the first audio arrived (and was scheduled to play) before the last
    first, last = (float(x) for x in re.search(r"first audio after ([\d.]+) s, all after ([\d.]+) s", done).groups())
    assert first < last
    assert browser.find_element(By.ID, "player").get_attribute("src").startswith("blob:")
    assert played_seconds(browser) > 0.1

    clip = tmp_path / "me.wav"
    sf.write(clip, (0.1 * np.sin(np.linspace(0, 4000, 32000))).astype(np.float32), 16000)
    browser.find_element(By.ID, "clip").send_keys(str(clip))
    browser.find_element(By.ID, "clip-text").send_keys("These are my words.")
    browser.find_element(By.ID, "upload").click()
    added = status(browser, "added")
    voice_id = added.split()[1]
    menu = Select(browser.find_element(By.ID, "voice"))
    assert menu.first_selected_option.get_attribute("value") == voice_id and len(menu.options) == 2

    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Now in my voice.")
    browser.find_element(By.ID, "speak").click()
    status(browser, "done")
    assert played_seconds(browser) > 0.1

    text.clear()
    browser.find_element(By.ID, "speak").click()
    assert "empty" in status(browser, "empty")
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"


def sign_in(browser, url) -> None:
    browser.get(url)
    key = browser.find_element(By.ID, "key")
    key.clear()
    key.send_keys(KEY)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    WebDriverWait(browser, 10).until(lambda d: len(Select(d.find_element(By.ID, "voice")).options) >= 1)


def test_page_searches_and_lists_the_candidates(url, browser):
    sign_in(browser, url)
    assert not browser.find_element(By.ID, "verifiers").is_displayed()  # no search: nothing to verify with
    Select(browser.find_element(By.ID, "strategy")).select_by_value("best-of-n")
    assert browser.find_element(By.ID, "verifiers").is_displayed() and not browser.find_element(By.ID, "expand").is_displayed()
    n = browser.find_element(By.ID, "n")
    n.clear()
    n.send_keys("3")
    browser.find_element(By.ID, "seed").send_keys("5")
    browser.find_element(By.ID, "speak").click()
    assert "chose among 3 candidates" in status(browser, "chose among", timeout=120)

    rows = browser.find_elements(By.CSS_SELECTOR, "#chunks tbody tr")
    assert len(rows) == 3 and browser.find_element(By.ID, "candidates").is_displayed()
    chosen = [row for row in rows if "chosen" in row.get_attribute("class")]
    assert len(chosen) == 1 and "chosen" in chosen[0].find_element(By.CSS_SELECTOR, ".badge").text
    scores = [float(row.find_elements(By.TAG_NAME, "td")[1].text) for row in rows]
    assert float(chosen[0].find_elements(By.TAG_NAME, "td")[1].text) == max(scores)
    assert all(row.find_elements(By.TAG_NAME, "td")[2].text.startswith("wer ") for row in rows)
    # every candidate plays on its own
    players = browser.find_elements(By.CSS_SELECTOR, "#chunks audio")
    assert len(players) == 3 and all(p.get_attribute("src").startswith("blob:") for p in players)
    WebDriverWait(browser, 30).until(lambda d: all(d.execute_script("return arguments[0].duration > 0", p) for p in players))
    assert played_seconds(browser) > 0.1  # the chosen one in the main player

    # the paper's recipe fixes its verifiers; without a voice it cannot judge similarity: the page says why
    Select(browser.find_element(By.ID, "strategy")).select_by_value("prm-sim+orm-wer")
    assert not browser.find_element(By.ID, "verifiers").is_displayed() and browser.find_element(By.ID, "expand").is_displayed()
    browser.find_element(By.ID, "speak").click()
    assert "voice" in status(browser, "voice")
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"


def test_page_uploads_a_voice_without_its_transcript(url, browser, tmp_path):
    """The server's own ASR transcribes the clip; the page shows what it heard and asks to check it."""
    sign_in(browser, url)
    clip = tmp_path / "mine.wav"
    sf.write(clip, (0.1 * np.sin(np.linspace(0, 4000, 32000))).astype(np.float32), 16000)
    browser.find_element(By.ID, "clip").send_keys(str(clip))
    browser.find_element(By.ID, "upload").click()
    message = status(browser, "added")
    assert re.search(r"voice voice_\w+ added; the server heard “.+”: check it", message), message
