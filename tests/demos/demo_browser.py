"""A headless chromium driven over the DevTools protocol, for the demo tests and screenshots.

Chromium's `--remote-debugging-pipe` speaks CDP as NUL-terminated JSON on file descriptors
3 (commands in) and 4 (events and answers out), so no websocket library is needed.

    with Browser() as page:
        page.goto("http://127.0.0.1:8130/demo/")
        page.wait_for("document.querySelectorAll('button').length > 3")
        page.click("button.gallery-item")            # a CSS selector, clicked as a user would
        page.screenshot("/tmp/demo.png")

Run as a script it screenshots a demo tab after running its first bundled example:
    python tests/demos/demo_browser.py http://127.0.0.1:8130/demo/ efficientad /tmp/efficientad.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class BrowserError(RuntimeError):
    pass


def _as_fds_3_and_4(read_end: int, write_end: int) -> None:
    # Python's own descriptors are not inheritable (PEP 446), so close_fds=False passes only these two.
    high_read, high_write = os.dup(read_end), os.dup(write_end)  # above 4, so neither dup2 clobbers the other
    os.dup2(high_read, 3)
    os.dup2(high_write, 4)


class Browser:
    def __init__(self, width: int = 1400, height: int = 1100, timeout_s: float = 60.0):
        if CHROMIUM is None:
            raise BrowserError("no chromium on PATH")
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="zoo-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child sees our pipe ends as its fds 3 (read) and 4 (write)
        self._process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--window-size={width},{height}",
             f"--user-data-dir={self._profile}", "--no-first-run", "--no-default-browser-check", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=lambda: _as_fds_3_and_4(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False, session=True)

    # -- protocol -------------------------------------------------------------------------
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._events.append({"method": "_closed"})
                    self._cond.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._cond:
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self._events.append(message)
                    self._cond.notify_all()

    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or any(e.get("method") == "_closed" for e in self._events):
                    raise BrowserError(f"{method}: no answer from chromium")
                self._cond.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    # -- page -----------------------------------------------------------------------------
    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description', result['exceptionDetails'])}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
        """Polls a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            time.sleep(0.2)

    def click(self, selector: str, index: int = 0) -> None:
        """A real mouse click (press and release) at the centre of the element."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelectorAll({json.dumps(selector)})[{index}]; if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return r.width > 0 ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def screenshot(self, path: str, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("({w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight})")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["w"], "height": size["h"], "scale": 1})
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.send("Browser.close")
        except BrowserError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


# -- the demo page ------------------------------------------------------------------------
def open_tab(page: Browser, demo_url: str, tab: str) -> None:
    """Loads the demo and shows the tab named `tab`."""
    page.goto(demo_url)
    page.wait_for("document.querySelectorAll('button[role=tab]').length > 0", timeout_s=60)
    index = page.evaluate(f"[...document.querySelectorAll('button[role=tab]')].findIndex(b => b.textContent.trim() === {json.dumps(tab)})")
    if index is None or index < 0:
        raise BrowserError(f"no tab {tab!r}")
    selected = f"[...document.querySelectorAll('button[role=tab]')][{index}].getAttribute('aria-selected') === 'true'"
    for _ in range(5):  # a click while the page still hydrates can be lost: click again
        page.click("button[role=tab]", index)
        try:
            page.wait_for(selected, timeout_s=5)
            return
        except BrowserError:
            continue
    raise BrowserError(f"tab {tab!r} did not open")


VISIBLE = "(e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length))"


def visible_count(page: Browser, selector: str) -> int:
    return int(page.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})].filter({VISIBLE}).length"))


def click_visible(page: Browser, selector: str, nth: int = 0) -> None:
    """Clicks the nth visible element matching selector (hidden tabs keep their elements)."""
    index = page.wait_for(
        f"(() => {{ const all = [...document.querySelectorAll({json.dumps(selector)})]; const shown = all.filter({VISIBLE});"
        f" return shown.length > {nth} ? all.indexOf(shown[{nth}]) + 1 : 0; }})()"
    )
    page.click(selector, index - 1)


def run_first_example(page: Browser, timeout_s: float = 120) -> None:
    """Clicks the visible tab's first bundled example (if any), then Run, and waits for the result image."""
    # one-input examples are a gallery of buttons; several inputs (image + text) a table of rows
    examples = ".gallery-item, [data-testid=dataset] button, [data-testid=dataset] tbody tr, tr.tr-body"
    if visible_count(page, examples) > 0:
        click_visible(page, examples)
        time.sleep(1.0)
    before = page.evaluate(f"[...document.querySelectorAll('img')].filter({VISIBLE}).map(i => i.src)")
    click_visible(page, "button.primary, button.lg.primary")
    page.wait_for(
        f"(() => {{ const now = [...document.querySelectorAll('img')].filter({VISIBLE}).filter(i => i.complete && i.naturalWidth > 0).map(i => i.src);"
        f" const old = new Set({json.dumps(before)}); return now.some(s => !old.has(s)) && !document.querySelector('.progress-text, .eta-bar'); }})()",
        timeout_s=timeout_s,
    )
    time.sleep(1.0)


if __name__ == "__main__":
    import sys

    url, tab, out = sys.argv[1:4]
    with Browser() as browser:
        open_tab(browser, url, tab)
        run_first_example(browser)
        browser.screenshot(out)
    print(out)
