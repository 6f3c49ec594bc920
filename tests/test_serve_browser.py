"""The web page end to end in headless Chromium, against `mgsv serve` running as its own process on 127.0.0.1.

Needs the Debian packages chromium and chromium-driver (installed by .ci/run) and selenium (the dev extra); see
browser_factory.py. Set MGSV_SCREENSHOT_DIR to keep the screenshots the test takes. The timeline of each result
(waveform, drag, beats, keyboard, phone width) is tested in test_serve_timeline.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_factory import chromium, running_server, wait_for
from media_factory import write_test_video
from serve_factory import API_TOKEN, ServeLibrary, bearer, serve_library


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def server(lib: ServeLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The grounding server on the test library."""
    arguments = ["--library", str(lib.library), "--checkpoint", str(lib.setup.checkpoint), "--clip",
                 str(lib.setup.clip_dir), "--dtype", "fp32"]  # fmt: skip
    with running_server(arguments, tmp_path_factory.mktemp("browser-serve")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MGSV_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_see_moments_preview_and_render(browser, server: str, tmp_path: Path, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By

    video = write_test_video(tmp_path / "holiday clip.mp4", seconds=6, fps=5, tone_hz=330)
    browser.get(server)
    # The server has a token: the page asks for it.
    wait_for(browser, "!document.getElementById('token-panel').hidden")
    browser.find_element(By.ID, "token-input").send_keys(API_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_for(browser, "document.getElementById('server-status').textContent.startsWith('ready')")
    assert "5 tracks" in browser.find_element(By.ID, "server-status").text
    browser.save_screenshot(str(screenshots / "1-ready.png"))

    browser.find_element(By.ID, "video-input").send_keys(str(video))
    browser.find_element(By.ID, "ground-button").click()
    wait_for(browser, "document.body.dataset.state === 'results'")
    items = browser.find_elements(By.CSS_SELECTOR, "#moments li")
    assert len(items) == 5
    titles = [item.find_element(By.CSS_SELECTOR, ".title").text for item in items]
    assert all(titles) and len(set(titles)) == 5
    assert re.search(r"\d:\d\d\.\d – \d:\d\d\.\d", items[0].text)
    assert "holiday clip.mp4" in browser.find_element(By.ID, "video-meta").text

    # Preview the best moment: the audio element really plays the track from the selection's start.
    start = float(items[0].get_attribute("data-start"))
    items[0].find_element(By.CSS_SELECTOR, "button.play").click()
    wait_for(
        browser,
        f"(() => {{ const a = document.getElementById('preview-audio'); return a.currentTime > {start + 0.5}; }})()",
        30,
    )
    audio = browser.execute_script(
        "const a = document.getElementById('preview-audio'); return {error: a.error, src: a.src, duration: a.duration};"
    )
    tracks = httpx.get(f"{server}v1/tracks", headers=bearer(API_TOKEN)).json()["tracks"]
    track_seconds = next(t["duration"] for t in tracks if t["id"] == items[0].get_attribute("data-track-id"))
    assert audio["error"] is None and audio["src"].startswith("blob:")
    assert audio["duration"] == pytest.approx(track_seconds, abs=0.3)  # the whole track: any start plays at once
    assert "playing" in items[0].get_attribute("class")
    browser.save_screenshot(str(screenshots / "2-moments-preview.png"))

    # Render it: the page shows the video with the music, and it plays.
    items[0].find_element(By.CSS_SELECTOR, "button.render").click()
    wait_for(browser, "document.body.dataset.state === 'rendered'")
    wait_for(browser, "document.getElementById('rendered-video').readyState >= 2", 30)
    duration = browser.execute_script("return document.getElementById('rendered-video').duration")
    assert duration == pytest.approx(6.0, abs=0.2)
    browser.execute_script("document.getElementById('rendered-video').play()")
    wait_for(browser, "document.getElementById('rendered-video').currentTime > 0.3", 30)
    link = browser.find_element(By.ID, "download-link")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download").endswith(".mp4")
    browser.save_screenshot(str(screenshots / "3-rendered.png"))


def test_a_bad_upload_shows_the_servers_message(browser, server: str, tmp_path: Path, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By

    fake = tmp_path / "notes.mp4"
    fake.write_text("these are not moving pictures\n" * 100)
    browser.get(server)  # the token stays in this tab's session storage
    wait_for(browser, "document.getElementById('server-status').textContent.startsWith('ready')")
    browser.find_element(By.ID, "video-input").send_keys(str(fake))
    browser.find_element(By.ID, "ground-button").click()
    wait_for(browser, "document.body.dataset.state === 'error'")
    message = browser.find_element(By.ID, "error").text
    assert "not a video this server can read" in message
    assert browser.find_element(By.ID, "results").get_attribute("hidden") is not None
    browser.save_screenshot(str(screenshots / "4-error.png"))


def test_no_browser_tool_was_downloaded() -> None:
    # Selenium Manager keeps what it downloads here; with both binaries given it must have fetched nothing.
    cache = Path.home() / ".cache" / "selenium"
    assert not cache.exists() or not any(p.is_file() and p.stat().st_size > 1_000_000 for p in cache.rglob("*"))


def test_the_ab_study_page(browser, lib: ServeLibrary, tmp_path: Path, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By

    media = tmp_path / "videos"
    media.mkdir()
    write_test_video(media / "201.mp4", seconds=4, fps=4, audio=False)
    write_test_video(media / "202.mp4", seconds=4, fps=4, audio=False)
    picks = {"A": ["elf-land", 0.9, 3.0, 7.0], "B": ["Chimes They Fade", 0.8, 10.0, 14.0]}
    for system, top in picks.items():
        lines = [json.dumps({"video_id": v, "ranking": [top]}) for v in ("201", "202")]
        (tmp_path / f"{system}.jsonl").write_text("\n".join(lines) + "\n")
    database = tmp_path / "answers.sqlite"
    arguments = ["--library", str(lib.library), "--ab-study", str(tmp_path / "A.jsonl"), str(tmp_path / "B.jsonl"),
                 "--media", str(media), "--ab-db", str(database)]  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    with running_server(arguments, work) as url:
        browser.execute_script("sessionStorage.clear(); localStorage.clear();")
        browser.get(url)
        browser.find_element(By.ID, "rater-input").send_keys("rater one")
        browser.find_element(By.CSS_SELECTOR, "#rater-form button").click()
        wait_for(browser, "!document.getElementById('token-panel').hidden")  # 401 first: the page asks
        browser.find_element(By.ID, "token-input").send_keys(API_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(browser, "document.body.dataset.state === 'pair'")
        buttons = browser.find_elements(By.CSS_SELECTOR, "button.answer")
        assert all(not b.is_enabled() for b in buttons)  # locked until both clips were played
        assert "elf" not in browser.page_source.lower() and "Chimes" not in browser.page_source
        for position in (1, 2):
            browser.execute_script(f"document.getElementById('clip-{position}').play()")
            wait_for(browser, f"document.getElementById('clip-{position}').currentTime > 0.2", 30)
        wait_for(browser, "Array.from(document.querySelectorAll('button.answer')).every(b => !b.disabled)")
        browser.save_screenshot(str(screenshots / "5-ab-pair.png"))
        buttons[0].click()  # "Clip 1 fits better"
        wait_for(browser, "document.getElementById('progress-pill').textContent.includes('1 of 2 rated')")
        wait_for(browser, "document.body.dataset.state === 'pair'")
        for position in (1, 2):
            browser.execute_script(f"document.getElementById('clip-{position}').play()")
        wait_for(browser, "Array.from(document.querySelectorAll('button.answer')).every(b => !b.disabled)")
        browser.find_element(By.CSS_SELECTOR, "button.answer[data-answer='neither']").click()
        wait_for(browser, "document.body.dataset.state === 'done'")
        browser.save_screenshot(str(screenshots / "6-ab-done.png"))
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT rater_id, shown_answer, answer, first_system FROM answers ORDER BY id").fetchall()
    assert [r[:2] for r in rows] == [("rater one", "first"), ("rater one", "neither")]
    assert rows[0][2] == rows[0][3] and rows[1][2] == "neither"  # "clip 1" is recorded as the system shown first
