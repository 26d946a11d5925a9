"""A real browser (headless Debian Chromium through Selenium) uploads an image through
the page served by ``nbq serve`` on 127.0.0.1 and reads the label."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pynq_nbq import api
from pynq_nbq.server import ServerConfig, create_app
from pynq_nbq.server.wsgi import make_server
from pynq_nbq.testing import random_bundle

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    if api.DEFAULT_MODEL in api.embedded_models():
        return str(api.model_path(None))
    return str(random_bundle(tmp_path_factory.mktemp("m") / "rand", "svpe", seed=5).path)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    samples = api.sample_images()
    if samples:
        return samples[0]
    a = np.zeros((28, 28), np.uint8)
    a[6:22, 8:20] = 200
    p = tmp_path_factory.mktemp("img") / "sample.png"
    Image.fromarray(a, "L").save(p)
    return p


@pytest.fixture(scope="module")
def server_url(model_path):
    app = create_app(ServerConfig(model=model_path, power="off"))
    server = make_server(app, "127.0.0.1", 0, threads=4)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.effective_port}/"
    server.close()  # the loop ends once the browser's keep-alive connections are gone
    t.join(5)
    app.extensions["nbq"].close()


@pytest.fixture(scope="module")
def browser(server_url):  # set up after the server, so it quits (closing its sockets) first
    if not Path(CHROMEDRIVER).exists() or not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup_and_test.sh)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--window-size=1000,800",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_upload_through_page_shows_label(browser, server_url, model_path, image_path):
    want = api.load_model(model_path).classify([image_path.read_bytes()])
    browser.get(server_url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "model" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(image_path.resolve()))
    wait.until(lambda d: d.find_element(By.ID, "label").text not in ("", "–", "…"))
    assert browser.find_element(By.ID, "label").text == want.labels[0]
    assert not browser.find_element(By.ID, "error").is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#timings tbody tr")
    assert "engine" in [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows]
    power = browser.find_element(By.ID, "power").text
    assert "unavailable" in power and "MODELLED" in power


def test_page_shows_server_errors(browser, server_url, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    browser.get(server_url)
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "image" in browser.find_element(By.ID, "error").text.lower()
