"""The editor's view of each result in headless Chromium: the waveform, dragging, trimming, beats, keys, the preview
in sync, the render of the adjusted moment, and a phone-width window.

Runs `mgsv serve` on a copy of the serve test library (its own track-media cache) as in test_serve_browser.py (see
browser_factory.py for Chromium). The page's requests are recorded by wrapping `window.fetch` from the test, so the
render request and the file it returned are checked as the page sent and received them. Set MGSV_SCREENSHOT_DIR
to keep the screenshots (docs/images/timeline-desktop.png and timeline-375.png come from
`MGSV_SCREENSHOT_DIR=docs/images pytest tests/test_serve_timeline.py`).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser_factory import chromium, running_server, wait_for
from grounding_factory import copy_library
from media_factory import write_test_video
from serve_factory import API_TOKEN, ServeLibrary, bearer, serve_library

from mgsv.media.decode import read_audio
from mgsv.search.library import MusicLibrary

VIDEO_SECONDS = 6.0
WAVE_COLORS = ((0xB4, 0xB8, 0xCC), (0x4F, 0x46, 0xE5))  # TIMELINE.colors.wave / waveSelected in timeline.js
RULER_PX = 18  # TIMELINE.rulerPx: the time ticks under the waveform (the tests run at device pixel ratio 1)
SCREENSHOT_COLORS = 96  # palette size of the committed screenshots: small PNGs, the page's few colours kept

RECORD_REQUESTS = """
window.__requests = [];
window.__rendered = null;
const original = window.fetch;
window.fetch = async (url, options = {}) => {
  window.__requests.push({url: String(url), method: options.method || 'GET', body: options.body || null});
  const response = await original(url, options);
  if (String(url).endsWith('/v1/render') && response.ok) window.__rendered = await response.clone().blob();
  return response;
};
"""

READ_RENDERED = """
const done = arguments[arguments.length - 1];
const reader = new FileReader();
reader.onload = () => done(reader.result.split(',')[1]);
reader.readAsDataURL(window.__rendered);
"""

# Per pixel column of a card's canvas: how many pixels are drawn in a waveform colour (the bar's height).
WAVE_COLUMNS = """
const canvas = arguments[0];
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const colors = arguments[1];
const heights = new Array(canvas.width).fill(0);
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] !== 255) continue;
  if (colors.some(([r, g, b]) => data[i] === r && data[i + 1] === g && data[i + 2] === b)) {
    heights[(i / 4) % canvas.width] += 1;
  }
}
return {heights, width: canvas.width, height: canvas.height};
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def library(lib: ServeLibrary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_library(lib.library, tmp_path_factory.mktemp("timeline") / "library")


@pytest.fixture(scope="module")
def server(lib: ServeLibrary, library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    arguments = ["--library", str(library), "--checkpoint", str(lib.setup.checkpoint), "--clip",
                 str(lib.setup.clip_dir), "--dtype", "fp32"]  # fmt: skip
    with running_server(arguments, tmp_path_factory.mktemp("timeline-serve")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("timeline-video")
    return write_test_video(folder / "beach.mp4", seconds=VIDEO_SECONDS, fps=5, size=(320, 180), tone_hz=330)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MGSV_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def bar_heights(peaks: dict[str, Any], width: int, wave_height: int) -> np.ndarray:
    """The height in pixels of each column's bar, as timeline.js draws the peaks over the track's duration."""
    low, high = np.array(peaks["min"]), np.array(peaks["max"])
    columns, seconds, duration = len(low), peaks["seconds"], peaks["duration"]
    middle = wave_height / 2
    scale = (middle - 2) / max(0.1, -low.min(), high.max())
    heights = np.zeros(width)
    for px in range(width):
        c0 = int(np.floor(px / width * duration / seconds * columns))
        if c0 >= columns:
            break
        c1 = min(columns, max(c0 + 1, int(np.ceil((px + 1) / width * duration / seconds * columns))))
        heights[px] = (max(0.0, high[c0:c1].max()) - min(0.0, low[c0:c1].min())) * scale
    return np.maximum(heights, 1)


def save_small_png(png: bytes, path: Path) -> None:
    """Keep a screenshot as a palette PNG (a few tens of KB) for the docs."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=SCREENSHOT_COLORS, dither=Image.Dither.NONE).save(path, optimize=True)


def api(server: str, path: str) -> Any:
    response = httpx.get(f"{server}{path.lstrip('/')}", headers=bearer(API_TOKEN), timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def ground(browser: Any, server: str, video: Path, fit: bool = False) -> None:
    """Open the page (entering the token if asked), upload the video and wait for the results."""
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait_for(
        browser,
        "!document.getElementById('token-panel').hidden || "
        "document.getElementById('server-status').textContent.startsWith('ready')",
    )
    if browser.find_element(By.ID, "token-panel").is_displayed():
        browser.find_element(By.ID, "token-input").send_keys(API_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_for(browser, "document.getElementById('server-status').textContent.startsWith('ready')")
    browser.execute_script(RECORD_REQUESTS)
    if fit:
        browser.find_element(By.ID, "fit-input").click()
    browser.find_element(By.ID, "video-input").send_keys(str(video))
    browser.find_element(By.ID, "ground-button").click()
    wait_for(browser, "document.body.dataset.state === 'results'")
    # Every card's waveform and beats arrive (the first request of a track computes them on the server).
    wait_for(browser, "Array.from(document.querySelectorAll('.beats-note')).every(e => e.textContent)", 120)


def card_of(browser: Any, track_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return next(c for c in browser.find_elements(By.CSS_SELECTOR, "#moments li") if c.get_attribute("data-track-id")
                == track_id)  # fmt: skip


def selection(card: Any) -> tuple[float, float]:
    return float(card.get_attribute("data-start")), float(card.get_attribute("data-end"))


def press(browser: Any, element: Any, *keys: str) -> None:
    """Focus `element` and press keys (a tuple of keys is a chord, e.g. (Keys.SHIFT, Keys.ARROW_RIGHT))."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("arguments[0].focus()", element)
    for key in keys:
        chain = ActionChains(browser)
        if isinstance(key, tuple):
            modifier, main = key
            chain.key_down(modifier).send_keys(main).key_up(modifier)
        else:
            chain.send_keys(key)
        chain.perform()


def drag(browser: Any, element: Any, dx: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).click_and_hold(element).move_by_offset(dx // 2, 0).move_by_offset(dx - dx // 2, 0).release(
    ).perform()  # fmt: skip


def set_snap(browser: Any, on: bool) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "snap-input")
    if box.is_selected() != on:
        box.click()


def lane_width(card: Any) -> float:
    from selenium.webdriver.common.by import By

    return card.find_element(By.CSS_SELECTOR, ".lane").rect["width"]


def no_horizontal_overflow(browser: Any) -> bool:
    return browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth && "
        "Array.from(document.querySelectorAll('.moment')).every(m => m.scrollWidth <= m.clientWidth + 1)"
    )


def test_waveform_drag_beats_keys_preview_and_render(
    browser: Any, server: str, library: Path, video: Path, tmp_path: Path, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ground(browser, server, video, fit=True)  # moments as long as the video: the model's moment is a narrow band
    tracks = {t["id"]: t for t in api(server, "/v1/tracks")["tracks"]}
    cards = browser.find_elements(By.CSS_SELECTOR, "#moments li")
    assert len(cards) == 5

    # Every card draws its track's waveform, and the bars follow the track's peaks column by column.
    set_snap(browser, False)  # beat marks are drawn over the bars when snapping
    browser.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    for card in cards:
        canvas = card.find_element(By.CSS_SELECTOR, "canvas.wave")
        drawn = browser.execute_script(WAVE_COLUMNS, canvas, WAVE_COLORS)
        heights = np.array(drawn["heights"], dtype=float)
        assert heights.sum() > 0.05 * drawn["width"] * drawn["height"], "the waveform is (nearly) blank"
        track = tracks[card.get_attribute("data-track-id")]
        peaks = api(server, f"/v1/tracks/{track['id']}/peaks?width={drawn['width']}")
        expected = bar_heights(peaks, drawn["width"], drawn["height"] - RULER_PX)
        close = np.abs(heights - expected) <= 2  # anti-aliased bar ends are neither colour
        assert close.mean() > 0.95, f"{track['id']}: {close.mean():.1%} of the bars match the track's peaks"
        assert card.find_element(By.CSS_SELECTOR, "canvas.wave").get_attribute("aria-label").startswith("Waveform of")

    # Work on the longest track: room to move. The selection starts as long as the video.
    track_id = max(tracks, key=lambda t: tracks[t]["duration"])
    duration = tracks[track_id]["duration"]
    card = card_of(browser, track_id)
    body = card.find_element(By.CSS_SELECTOR, ".selection")
    label = card.find_element(By.CSS_SELECTOR, ".sel-label")
    start, end = selection(card)
    assert end - start == pytest.approx(VIDEO_SECONDS, abs=1e-3)

    # Keyboard, no beats: Home, then 0.1 s and 1 s nudges; End.
    press(browser, body, Keys.HOME)
    assert selection(card) == (0.0, VIDEO_SECONDS)
    press(browser, body, Keys.ARROW_RIGHT)
    assert selection(card) == pytest.approx((0.1, 6.1))
    press(browser, body, (Keys.SHIFT, Keys.ARROW_RIGHT), (Keys.SHIFT, Keys.ARROW_RIGHT))
    assert selection(card) == pytest.approx((2.1, 8.1))
    press(browser, body, Keys.ARROW_LEFT)
    assert selection(card) == pytest.approx((2.0, 8.0))
    press(browser, body, Keys.END)
    assert selection(card) == pytest.approx((duration - VIDEO_SECONDS, duration), abs=1e-3)
    press(browser, body, Keys.HOME)

    # A drag moves the start (by the distance dragged) and keeps the length; the label follows.
    before = label.text
    width = lane_width(card)
    drag(browser, body, 200)
    start, end = selection(card)
    assert start == pytest.approx(200 / width * duration, abs=2 * duration / width)
    assert end - start == pytest.approx(VIDEO_SECONDS, abs=1e-3)
    assert label.text != before and label.text.startswith(f"Start {start // 60:.0f}:")

    # Trim: the end handle (a drag, then a key) shortens the selection; the start stays.
    end_handle = card.find_element(By.CSS_SELECTOR, ".handle-end")
    drag(browser, end_handle, -40)
    trimmed_start, trimmed_end = selection(card)
    assert trimmed_start == start and trimmed_end == pytest.approx(end - 40 / width * duration, abs=2 * duration / width)
    press(browser, end_handle, Keys.ARROW_LEFT)
    assert selection(card) == pytest.approx((start, trimmed_end - 0.1))
    card.find_element(By.CSS_SELECTOR, "button.reset").click()  # back to the model's moment, as long as the video
    moment_start = selection(card)[0]

    # Beats: with snapping on, a drag lands on a beat of GET /beats (the beats --snap beats uses), and arrows step
    # beat by beat (shift: 4 beats, a bar).
    beats = np.array(api(server, f"/v1/tracks/{track_id}/beats")["beats"])
    assert len(beats) > 10
    set_snap(browser, True)
    press(browser, body, Keys.HOME)
    drag(browser, body, 150)
    start = selection(card)[0]
    aimed = 150 / width * duration
    assert np.min(np.abs(beats - start)) < 1e-3, "the drag did not land on a beat"
    assert abs(start - aimed) <= np.max(np.diff(beats)) + 2 * duration / width
    index = int(np.argmin(np.abs(beats - start)))
    press(browser, body, Keys.ARROW_RIGHT)
    assert selection(card)[0] == pytest.approx(beats[index + 1], abs=1e-3)
    press(browser, body, (Keys.SHIFT, Keys.ARROW_RIGHT))
    assert selection(card)[0] == pytest.approx(beats[index + 5], abs=1e-3)
    press(browser, body, Keys.ARROW_LEFT)
    assert selection(card)[0] == pytest.approx(beats[index + 4], abs=1e-3)
    assert selection(card)[1] - selection(card)[0] == pytest.approx(VIDEO_SECONDS, abs=1e-3)
    browser.save_screenshot(str(tmp_path / "snapped.png"))

    # Preview in sync: the video plays muted from its start, the music from the selection's start, the playhead
    # moves; moving the selection restarts both from the new start. The last start (and the render) stays 6 s or
    # more away from the model's moment, so that the render's music can only be the adjusted moment.
    last = 30 if abs(moment_start - 30) >= 6 else 45
    first = last - 10
    set_snap(browser, False)
    press(browser, body, Keys.HOME, *[(Keys.SHIFT, Keys.ARROW_RIGHT)] * first)
    assert selection(card)[0] == pytest.approx(first)
    card.find_element(By.CSS_SELECTOR, "button.play").click()
    wait_for(browser, f"document.getElementById('preview-audio').currentTime > {first + 0.6}", 30)
    state = browser.execute_script(
        "const a = document.getElementById('preview-audio'), v = document.getElementById('query-video');"
        "return {a: a.currentTime, v: v.currentTime, muted: v.muted, playing: !v.paused,"
        " head: arguments[0].querySelector('.playhead').style.left,"
        " hidden: arguments[0].querySelector('.playhead').hidden};",
        card,
    )
    assert first + 0.5 < state["a"] < first + 6 and state["muted"] and state["playing"] and not state["hidden"]
    assert abs(state["v"] - (state["a"] - first)) < 0.5  # the video is in step with the music
    assert float(state["head"].rstrip("%")) == pytest.approx(100 * state["a"] / duration, abs=1.5)
    press(browser, body, *[(Keys.SHIFT, Keys.ARROW_RIGHT)] * 10)  # 10 s on: the preview restarts there
    wait_for(browser, f"document.getElementById('preview-audio').currentTime > {last + 0.2}", 30)
    restarted = browser.execute_script(
        "return [document.getElementById('preview-audio').currentTime, document.getElementById('query-video')"
        ".currentTime]"
    )
    assert last < restarted[0] < last + 2.5 and restarted[1] < 2.5
    card.find_element(By.CSS_SELECTOR, "button.play").click()  # stop
    assert browser.execute_script("return document.getElementById('preview-audio').paused")
    assert card.find_element(By.CSS_SELECTOR, ".playhead").get_attribute("hidden") is not None

    # Render the adjusted moment, trimmed to 4 s: the request carries it, and the file's music is that part of the
    # track (then silence), not the model's moment.
    press(browser, end_handle, *[(Keys.SHIFT, Keys.ARROW_LEFT)] * 2)
    assert selection(card) == pytest.approx((last, last + 4))
    card.find_element(By.CSS_SELECTOR, "button.render").click()
    wait_for(browser, "document.body.dataset.state === 'rendered' && window.__rendered !== null", 60)
    requests = browser.execute_script("return window.__requests.filter(r => r.url.endsWith('/v1/render'))")
    sent = json.loads(requests[-1]["body"])
    assert sent["track_id"] == track_id and (sent["start_s"], sent["end_s"]) == (last, last + 4)
    rendered = tmp_path / "rendered.mp4"
    rendered.write_bytes(base64.b64decode(browser.execute_async_script(READ_RENDERED)))
    heard = read_audio(rendered, 16000)
    path = MusicLibrary(library).track(track_id).path
    music = read_audio(path, 16000, offset=last, max_seconds=4.0)
    inner = slice(8000, 3 * 16000 + 8000)  # away from the fades
    assert np.corrcoef(heard[inner], music[inner])[0, 1] > 0.99
    model = read_audio(path, 16000, offset=moment_start, max_seconds=4.0)
    assert abs(np.corrcoef(heard[inner], model[inner])[0, 1]) < 0.5
    tail = heard[int(4.2 * 16000) : int(5.8 * 16000)]
    assert np.sqrt(np.mean(tail**2)) < 1e-3  # the music stops at end_s; the rest of the video is silent

    # The screenshot for docs/serve.md: the results with the selection moved off the model's moment, beats shown.
    set_snap(browser, True)
    browser.execute_script("document.getElementById('results').scrollIntoView()")
    save_small_png(browser.find_element(By.ID, "results").screenshot_as_png, screenshots / "timeline-desktop.png")


def test_phone_width(browser: Any, server: str, video: Path, screenshots: Path) -> None:
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    metrics = {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        ground(browser, server, video, fit=True)
        assert browser.execute_script("return window.innerWidth") == 375
        assert no_horizontal_overflow(browser)
        card = browser.find_elements(By.CSS_SELECTOR, "#moments li")[0]
        body = card.find_element(By.CSS_SELECTOR, ".selection")
        set_snap(browser, False)
        start = selection(card)[0]
        press(browser, body, Keys.ARROW_LEFT if start >= 1 else Keys.ARROW_RIGHT)
        assert abs(selection(card)[0] - start) == pytest.approx(0.1)

        # A finger drag (touch pointer events) moves the selection too.
        press(browser, body, Keys.HOME)
        box = browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); const r = arguments[0].getBoundingClientRect();"
            "return {x: r.left, y: r.top, width: r.width, height: r.height};",
            body,
        )  # viewport coordinates, which pointer actions use
        finger = PointerInput(interaction.POINTER_TOUCH, "finger")
        actions = ActionBuilder(browser, mouse=finger)
        x, y = int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)
        actions.pointer_action.move_to_location(x, y).pointer_down().move_to_location(x + 30, y).move_to_location(
            x + 60, y).pointer_up()  # fmt: skip
        actions.perform()
        duration = next(t["duration"] for t in api(server, "/v1/tracks")["tracks"]
                        if t["id"] == card.get_attribute("data-track-id"))  # fmt: skip
        width = lane_width(card)
        assert selection(card)[0] == pytest.approx(60 / width * duration, abs=2 * duration / width)

        # On the bare waveform a tap starts the music there; a vertical swipe (scrolling the page) does not.
        def on_lane(fraction: float) -> tuple[int, int]:
            box = browser.execute_script(
                "const r = arguments[0].querySelector('.lane').getBoundingClientRect();"
                "return {x: r.left, y: r.top, width: r.width, height: r.height};",
                card,
            )
            return int(box["x"] + fraction * box["width"]), int(box["y"] + 10)

        tap_x, tap_y = on_lane(0.8)
        before = selection(card)
        swipe = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
        swipe.pointer_action.move_to_location(tap_x, tap_y + 40).pointer_down().move_to_location(
            tap_x, tap_y - 60).pointer_up()  # fmt: skip
        swipe.perform()
        assert selection(card) == before
        tap_x, tap_y = on_lane(0.8)  # the swipe may have scrolled the page
        tap = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
        tap.pointer_action.move_to_location(tap_x, tap_y).pointer_down().pointer_up()
        tap.perform()
        expected = min(0.8 * duration, duration - (before[1] - before[0]))
        assert selection(card)[0] == pytest.approx(expected, abs=2 * duration / width)
        assert no_horizontal_overflow(browser)
        set_snap(browser, True)
        browser.execute_script("document.querySelector('#moments li').scrollIntoView()")
        browser.execute_script("window.scrollBy(0, -150)")
        save_small_png(browser.get_screenshot_as_png(), screenshots / "timeline-375.png")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


OTHER_EDGE = (0x2F, 0x9E, 0x6A)  # TIMELINE.colors.otherEdge: the top edge of another moment's band
MOMENT_EDGE = (0xD9, 0x9A, 0x12)  # TIMELINE.colors.momentEdge: the chosen moment's

TOP_EDGE_COLOR = """
const canvas = arguments[0];
const x = Math.round(arguments[1] * canvas.width);
const d = canvas.getContext('2d').getImageData(x, 1, 1, 1).data;
return [d[0], d[1], d[2]];
"""


def post(server: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server}{path.lstrip('/')}", headers=bearer(API_TOKEN), json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def requests_to(browser: Any, path: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in browser.execute_script("return window.__requests")
            if r["url"].endswith(path)]  # fmt: skip


def test_more_from_this_track_and_the_varied_list(
    browser: Any, server: str, video: Path, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ground(browser, server, video, fit=True)
    tracks = {t["id"]: t for t in api(server, "/v1/tracks")["tracks"]}
    track_id = max(tracks, key=lambda t: tracks[t]["duration"])
    duration = tracks[track_id]["duration"]
    card = card_of(browser, track_id)
    first = selection(card)
    set_snap(browser, False)

    # "More from this track" asks the server for 3 other moments avoiding the model's, as the results asked.
    card.find_element(By.CSS_SELECTOR, "button.more").click()
    wait_for(browser, f"document.querySelector('#moments li[data-track-id=\"{track_id}\"]')"
                      ".querySelectorAll('button.alt').length > 0")
    (sent,) = requests_to(browser, "/v1/alternatives")
    assert sent["track_id"] == track_id and sent["fit_duration"] is True and sent["alternatives"] == 3
    assert sent["avoid"] == [[pytest.approx(first[0], abs=1e-3), pytest.approx(first[1], abs=1e-3)]]
    answer = post(server, "/v1/alternatives", sent)["moments"]
    assert 1 <= len(answer) <= 3
    buttons = card.find_elements(By.CSS_SELECTOR, "button.alt")
    shown = [(float(b.get_attribute("data-start")), float(b.get_attribute("data-end"))) for b in buttons]
    assert shown[1:] == [(m["start_s"], m["end_s"]) for m in answer]
    assert [b.get_attribute("aria-pressed") for b in buttons] == ["true"] + ["false"] * len(answer)
    assert not card.find_element(By.CSS_SELECTOR, "button.more").is_displayed()

    # Each other moment is a green band on the timeline; the chosen one is yellow.
    canvas = card.find_element(By.CSS_SELECTOR, "canvas.wave")
    browser.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def edge_at(span: tuple[float, float]) -> tuple[int, ...]:
        return tuple(browser.execute_script(TOP_EDGE_COLOR, canvas, (span[0] + span[1]) / 2 / duration))

    assert all(edge_at(span) == OTHER_EDGE for span in shown[1:])
    assert edge_at(shown[0]) == MOMENT_EDGE

    # Choosing another moment moves the selection there (as long as the video) and swaps the bands.
    buttons[1].click()
    start, end = selection(card)
    assert start == pytest.approx(shown[1][0], abs=1e-3) and end - start == pytest.approx(VIDEO_SECONDS, abs=1e-3)
    assert buttons[1].get_attribute("aria-pressed") == "true" and buttons[0].get_attribute("aria-pressed") == "false"
    browser.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert edge_at(shown[1]) == MOMENT_EDGE and edge_at(shown[0]) == OTHER_EDGE
    assert "other moment 1:" in card.find_element(By.CSS_SELECTOR, ".detail").text
    # The keyboard chooses too: the model's pick again, then back to the other moment.
    press(browser, buttons[0], Keys.ENTER)
    assert selection(card) == pytest.approx(first, abs=1e-3)
    press(browser, buttons[1], Keys.SPACE)
    assert selection(card)[0] == pytest.approx(shown[1][0], abs=1e-3)

    # The render request carries the chosen moment.
    browser.execute_script("document.getElementById('results').scrollIntoView()")
    save_small_png(card.screenshot_as_png, screenshots / "timeline-alternatives.png")
    card.find_element(By.CSS_SELECTOR, "button.render").click()
    wait_for(browser, "document.body.dataset.state === 'rendered' && window.__rendered !== null", 60)
    rendered = requests_to(browser, "/v1/render")[-1]
    assert rendered["track_id"] == track_id
    assert (rendered["start_s"], rendered["end_s"]) == pytest.approx((start, end), abs=1e-3)

    # The varied-tracks toggle ranks the kept upload again (no new upload), as POST /v1/reground does.
    def listed() -> list[str]:
        return [c.get_attribute("data-track-id") for c in browser.find_elements(By.CSS_SELECTOR, "#moments li")]

    before = listed()
    browser.find_element(By.ID, "diverse-input").click()
    wait_for(browser, "window.__requests.some(r => r.url.endsWith('/v1/reground'))")
    wait_for(browser, "document.body.dataset.state === 'results'")
    (asked,) = requests_to(browser, "/v1/reground")
    assert asked["diverse"] is True and asked["fit_duration"] is True and asked["top"] == 5
    expected = [m["track_id"] for m in post(server, "/v1/reground", asked)["moments"]]
    plain = [m["track_id"] for m in post(server, "/v1/reground", {**asked, "diverse": False})["moments"]]
    assert plain == before and listed() == expected and expected != before
    browser.find_element(By.ID, "diverse-input").click()  # off again: the list the model ranked
    wait_for(browser, "window.__requests.filter(r => r.url.endsWith('/v1/reground')).length === 2")
    wait_for(browser, "document.body.dataset.state === 'results'")
    assert listed() == before
