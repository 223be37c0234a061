"""The page in a real browser: headless Chromium at phone (360x640) and tablet (800x1280) sizes against a running
board on loopback: pairing, live frames arriving, capture with a visit ID creating a store row, review pages,
export download, a request without the cookie refused, a cross-site POST refused."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tests import _browser
from tests._board import Board, board_config

pytestmark = pytest.mark.skipif(_browser.missing() is not None, reason=str(_browser.missing()))
SCREENSHOTS = os.environ.get("SKINEDGE_SCREENSHOTS")  # a folder: keep the screenshots (README's come from here)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = Board(board_config(tmp_path_factory.mktemp("browser")))
    b.wait_frames(2)
    yield b
    b.close()


@pytest.fixture(scope="module")
def evil_site(tmp_path_factory):
    """Another origin (another port) serving a page that POSTs to the board: what a hostile site would do."""
    root = tmp_path_factory.mktemp("evil")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _browser.chromium(_browser.PHONE, str(tmp_path_factory.mktemp("downloads")))
    yield driver
    _browser.quit_browser(driver)


def _kept(board: Board) -> int:
    store = board.store._store
    return store.count() if store is not None else 0


def _pair(driver, board: Board) -> None:
    driver.get(board.url + "/")
    code = _browser.wait_for(lambda: driver.find_element("id", "pair-code").is_displayed() and
                             driver.find_element("id", "pair-code"), message="the pairing form")
    code.send_keys("00000000" if board.page.pairing.current() != "00000000" else "11111111")
    driver.find_element("id", "pair-button").click()
    _browser.wait_for(lambda: "wrong or expired code" in driver.find_element("id", "pair-error").text,
                      message="the wrong code refused")
    code.clear()
    code.send_keys(board.page.pairing.current())
    driver.find_element("id", "pair-button").click()
    _browser.wait_for(lambda: driver.find_element("id", "live").is_displayed(), message="the live view after pairing")


@pytest.mark.parametrize("size", [_browser.PHONE, _browser.TABLET], ids=["phone", "tablet"])
def test_page_in_chromium(board, evil_site, browser, size, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser
    _browser.show_as(driver, size, str(downloads))
    driver.delete_all_cookies()
    try:
        _pair(driver, board)
        assert driver.execute_script("return window.innerWidth") == size[0]
        assert "skinedge_session" not in driver.execute_script("return document.cookie")  # HttpOnly

        # live frames arrive at >= 5 per second
        frames = lambda: int(driver.find_element("id", "live-frames").text)
        start = _browser.wait_for(frames, message="a first live frame")
        t0 = time.monotonic()
        _browser.wait_for(lambda: frames() >= start + 10, timeout=20, message="10 more live frames")
        fps = (frames() - start) / (time.monotonic() - t0)
        assert fps >= 5, f"live view at {fps:.1f} frames per second"
        assert driver.execute_script("return document.getElementById('live-img').naturalWidth") > 0

        # capture with a visit ID: a new store row with that visit
        visit = f"V-{size[0]}-0001"
        before = _kept(board)
        box = driver.find_element("id", "visit-input")
        box.clear()
        box.send_keys(visit)
        assert visit in driver.find_element("id", "capture").text  # the button names the visit
        _browser.capture_until_kept(driver)
        assert _kept(board) == before + 1
        row = board.store._store.list(visit=visit)
        assert len(row) == 1 and row[0].model == "demo-micro_mpoxnet-synthetic"
        _browser.wait_for(lambda: driver.find_elements("css selector", f"#visit-captures [data-uuid='{row[0].uuid}']"),
                          message="the capture under this visit's captures")
        if SCREENSHOTS:
            driver.save_screenshot(str(Path(SCREENSHOTS) / f"page-live-{size[0]}x{size[1]}.png"))

        # review: the list filtered by visit, then the capture's page
        driver.find_element("css selector", "button[data-tab=review]").click()
        driver.find_element("id", "f-visit").send_keys(visit)
        driver.find_element("css selector", "#filter button[type=submit]").click()
        _browser.wait_for(lambda: driver.find_element("id", "review-count").text.startswith("1 "),
                          message="the list of this visit's one capture")
        _browser.click(driver, f"#captures [data-uuid='{row[0].uuid}']", "this visit's capture in the list")
        _browser.wait_for(lambda: driver.find_element("id", "detail").is_displayed(), message="the capture's page")
        table = driver.find_element("id", "detail-table").text
        assert visit in table and "demo-micro_mpoxnet-synthetic" in table and "UNSIGNED" in table
        _browser.wait_for(lambda: driver.execute_script(
            "return document.getElementById('detail-overlay').naturalWidth > 0 && "
            "document.getElementById('detail-frame').naturalWidth > 0"), message="frame and overlay shown")
        if SCREENSHOTS:
            driver.save_screenshot(str(Path(SCREENSHOTS) / f"page-review-{size[0]}x{size[1]}.png"))

        # export download: the ZIP of this visit
        driver.find_element("id", "detail-close").click()
        _browser.wait_for(lambda: driver.find_element("id", "export").is_displayed(), message="the export link")
        driver.find_element("id", "export").click()
        got = _browser.wait_for(lambda: [p for p in downloads.glob("*.zip")], message="the export ZIP downloaded")
        with zipfile.ZipFile(got[0]) as zf:
            assert visit in zf.read("index.csv").decode() and row[0].uuid in zf.read("index.html").decode()

        # health
        driver.find_element("css selector", "button[data-tab=health]").click()
        _browser.wait_for(lambda: "demo-micro_mpoxnet-synthetic" in driver.find_element("id", "health-table").text,
                          message="the health table")

        # a cross-site POST from another origin's page (the session cookie is in this browser) keeps nothing
        evil_root, evil_origin = evil_site
        (evil_root / "attack.html").write_text(
            f'<form id="f" method="POST" action="{board.url}/api/v1/capture" enctype="text/plain">'
            '<input name=\'{"visit":"V-EVIL-1","x":"\' value=\'"}\'></form>'
            f'<script>fetch("{board.url}/api/v1/capture", {{method: "POST", credentials: "include", mode: "no-cors", '
            'body: \'{"visit": "V-EVIL-2"}\'}).finally(() => document.getElementById("f").submit());</script>')
        before = _kept(board)
        driver.get(f"{evil_origin}/attack.html")
        _browser.wait_for(lambda: driver.current_url.startswith(board.url), message="the form's POST answered")
        body = driver.find_element("tag name", "body").text
        assert "not paired" in body or "cross-site request refused" in body, body
        assert _kept(board) == before and not board.store._store.list(visit="V-EVIL-1")

        # without the cookie: refused
        driver.get(board.url + "/")
        driver.delete_all_cookies()
        status = driver.execute_async_script(
            "const done = arguments[0]; fetch('/api/v1/health').then(r => done(r.status));")
        assert status == 401
        driver.refresh()
        _browser.wait_for(lambda: driver.find_element("id", "pair").is_displayed(), message="the pairing form again")
        if SCREENSHOTS:
            driver.save_screenshot(str(Path(SCREENSHOTS) / f"page-pair-{size[0]}x{size[1]}.png"))
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


# Delays the answer to every unfiltered capture list request; window.lateAnswered turns true once the page has
# handled that answer (a timer queued when its body is read runs after the page's code that awaited it).
DELAY_UNFILTERED = """
window.lateAnswered = false;
const real = window.fetch;
window.fetch = async (url, opts) => {
  const r = await real(url, opts);
  if (!String(url).includes('/api/v1/captures?') || String(url).includes('visit=')) return r;
  await new Promise(done => setTimeout(done, 1500));
  const json = r.json.bind(r);
  r.json = async () => { const d = await json(); setTimeout(() => { window.lateAnswered = true; }, 0); return d; };
  return r;
};
"""


def test_a_late_answer_never_replaces_the_filtered_list(board, browser, tmp_path):
    """The review tab asks for the whole list when it opens; a worker who filters by visit at once gets that visit's
    list, even when the whole list's answer comes back after it (the page keeps only its latest request's)."""
    driver = browser
    _browser.show_as(driver, _browser.PHONE, str(tmp_path))
    _pair(driver, board)
    if _kept(board) == 0:
        _browser.capture_until_kept(driver)
    driver.execute_script(DELAY_UNFILTERED)
    driver.find_element("css selector", "button[data-tab=review]").click()  # the whole list, answered late
    driver.find_element("id", "f-visit").send_keys("NO-SUCH-VISIT")
    driver.find_element("css selector", "#filter button[type=submit]").click()
    _browser.wait_for(lambda: driver.find_element("id", "review-count").text.startswith("0 "),
                      message="the filtered, empty list")
    _browser.wait_for(lambda: driver.execute_script("return window.lateAnswered"), message="the late answer handled")
    assert driver.find_element("id", "review-count").text.startswith("0 ")
    assert driver.find_elements("css selector", "#captures [data-uuid]") == []
