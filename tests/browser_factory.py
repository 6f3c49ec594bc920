"""Headless Chromium against `mgsv serve` in its own process, for the browser tests of the web page.

    with running_server(["--library", LIB, "--checkpoint", CKPT, ...], work_dir) as url:
        driver = chromium(profile_dir)               # Debian's chromium + chromedriver, nothing downloaded
        driver.get(url)
        wait_for(driver, "document.body.dataset.state === 'results'")

Needs the Debian packages chromium and chromium-driver (installed by .ci/run) and selenium (the dev extra). Selenium
is given both binaries, so it never looks for or downloads a browser or driver.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_factory import API_TOKEN, bearer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
URL_LINE = re.compile(r"mgsv serve: (http://127\.0\.0\.1:\d+/)")


def need(condition: bool, message: str) -> None:
    """Skip the test if `condition` is false (fail it on CI, where everything must be there)."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def running_server(arguments: list[str], work: Path) -> Iterator[str]:
    """`mgsv serve --port 0 ARGUMENTS` in a subprocess with an API token; yields its base URL once it is ready."""
    log_path = work / "server.log"
    env = {**os.environ, "MGSV_API_TOKEN": API_TOKEN, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MGSV_ADMIN_TOKEN", None)
    command = [sys.executable, "-m", "mgsv", "serve", *arguments, "--port", "0", "--work-dir", str(work)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            match = URL_LINE.search(log_path.read_text(errors="replace"))
            url = match.group(1) if match else None
            time.sleep(0.1)
        while httpx.get(f"{url}v1/ready", headers=bearer(API_TOKEN)).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()  # SIGTERM: uvicorn shuts down and the app removes its temporary folder
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert list(work.glob("mgsv-serve-*")) == [], "the server left its temporary folder behind"


def chromium(profile: Path, window: str = "1200,1000") -> Any:
    """A headless Chromium WebDriver (Debian's binaries; skips the test without them or selenium)."""
    need(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        "headless Chromium missing: apt-get install chromium chromium-driver",
    )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                     f"--window-size={window}"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def wait_for(driver: Any, script: str, timeout: float = 60.0) -> Any:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            state = driver.execute_script(
                "return [document.body.dataset.state, document.getElementById('error').textContent]"
            )
            raise AssertionError(f"timed out waiting for {script!r}; page state {state}")
        time.sleep(0.1)
