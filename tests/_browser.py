"""Debian's Chromium, headless, driven by selenium through Debian's chromedriver (scripts/test.sh installs both)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PHONE, TABLET = (360, 640), (800, 1280)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-dev-shm-usage", "--password-store=basic")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} not installed (apt-get install chromium chromium-driver; scripts/test.sh does)"
    return None


def chromium(size: tuple[int, int], downloads: str):
    """A fresh headless Chromium (its own profile) showing pages at `size` CSS pixels, as a phone or tablet
    (`show_as` changes the size later: one browser start, ~2 s, serves both sizes)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="skinedge-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": downloads,
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.profile_dir = profile
    show_as(driver, size, downloads)
    return driver


def show_as(driver, size: tuple[int, int], downloads: str) -> None:
    """Pages at `size` CSS pixels as a touch device, downloads into `downloads`."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": True})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})


def quit_browser(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def wait_for(what: Callable[[], object], timeout: float = 20.0, message: str = "") -> object:
    """Poll `what` until it returns something truthy (a state: an element, a file, a count)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = what()
        except Exception:  # noqa: BLE001 - an element not there yet, a stale reference
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or what}")
        time.sleep(0.05)


def click(driver, css: str, message: str) -> None:
    """Find and click an element the page renders from an answer it awaits, in one step, and again if the page
    replaced the element in between (a stale reference): waits for a clickable state, not for time."""
    wait_for(lambda: driver.find_element("css selector", css).click() or True, message=message)


def capture_until_kept(driver, attempts: int = 30) -> str:
    """Press the page's capture button until the board keeps one (a frame the gates refuse, e.g. the card in front
    of the lens or a blurred frame of the clip, is answered 'CAPTURE NOT KEPT - ...'); the message shown."""
    for _ in range(attempts):
        driver.find_element("id", "capture").click()
        wait_for(lambda: driver.find_element("id", "capture").is_enabled()
                 and driver.find_element("id", "capture-msg").text not in ("", "\u2026"), timeout=30,
                 message="the board's answer to the capture")
        if "Kept" in driver.find_element("id", "capture-msg").text:
            return driver.find_element("id", "capture-msg").text
    raise AssertionError(f"no capture kept in {attempts} presses: {driver.find_element('id', 'capture-msg').text}")
