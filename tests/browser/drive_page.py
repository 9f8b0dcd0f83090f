#!/usr/bin/env python3
"""Drives the Glimpse search page in headless Chromium, the way a person uses it.

Usage: drive_page.py BASE_URL UPLOAD_IMAGE OUT_DIR

Talks the Chrome DevTools Protocol over --remote-debugging-pipe (file descriptors 3 and 4,
NUL-terminated JSON), so it needs nothing beyond the Python standard library and Debian's
`chromium`. Steps: load the page, type a query and press Enter, wait for the grid, check the
URL, every thumbnail and score; upload an image through the file input; click a result
(more like this); open a search straight from a URL; show an error; render on a phone-sized
screen. Screenshots go to OUT_DIR; the findings are printed as one JSON object on stdout
(the Rust test asserts on them). Exit status 0 means the browser was driven to the end.
"""

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 30.0


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One Chromium process and one page session over the debugging pipe."""

    def __init__(self, exe, profile):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4. Copy both ends above
        # fd 10 first so that placing one cannot overwrite the other.
        def child_fds():
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [
            exe,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--metrics-recording-only",
            "--no-pings",
            "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
            "--user-data-dir=" + profile,
            "--window-size=1280,900",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            preexec_fn=child_fds,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.wfd = to_chrome_w
        self.rfile = os.fdopen(from_chrome_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 1
        self.session = None
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise TimeoutError("no message from Chromium")
            chunk = self.rfile.read(65536)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=True):
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        self.next_id += 1
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == msg["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open_page(self):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send(
            "Target.attachToTarget",
            {"targetId": page["targetId"], "flatten": True},
            session=False,
        )["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("DOM.enable")

    def eval(self, expr):
        out = self.send(
            "Runtime.evaluate",
            {"expression": expr, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in out:
            raise RuntimeError(f"page script failed: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, expr, what):
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            value = self.eval(expr)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}")

    def navigate(self, url):
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", "the page to load")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def press_enter(self):
        for kind in ("keyDown", "keyUp"):
            params = {
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
            }
            if kind == "keyDown":
                params["text"] = "\r"
            self.send("Input.dispatchKeyEvent", params)

    def click_at(self, x, y):
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:  # noqa: BLE001 - the process is killed below anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


GRID_STATE = """(() => {
  const cards = [...document.querySelectorAll('#grid .card')];
  return {
    ids: cards.map(c => c.dataset.id),
    scores: cards.map(c => c.querySelector('.score').textContent),
    images_loaded: cards.filter(c => { const i = c.querySelector('img');
      return i.complete && i.naturalWidth > 0 && !i.src.startsWith('data:'); }).length,
    status: document.getElementById('status').textContent,
    status_is_error: document.getElementById('status').className === 'error',
    url: location.pathname + location.search,
  };
})()"""

ALL_IMAGES_SETTLED = """[...document.querySelectorAll('#grid .card img')]
  .every(i => i.complete)"""


def grid(b):
    return b.eval(GRID_STATE)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    base, upload, out_dir = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    exe = find_chromium()
    if exe is None:
        print(json.dumps({"skipped": "no chromium on PATH"}))
        return 3
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(exe, profile)
        try:
            b.open_page()
            b.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
            b.navigate(base + "/")
            b.screenshot(os.path.join(out_dir, "01-empty.png"))

            # Type a query the way a person does, then press Enter.
            b.eval("document.getElementById('q').focus()")
            b.send("Input.insertText", {"text": "a photo of a dog"})
            b.press_enter()
            b.wait_for("document.querySelectorAll('#grid .card').length > 0", "results")
            b.wait_for(ALL_IMAGES_SETTLED, "thumbnails")
            report["text"] = grid(b)
            b.screenshot(os.path.join(out_dir, "02-text-results.png"))

            # Search by image through the upload control.
            doc = b.send("DOM.getDocument")
            node = b.send(
                "DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": "#file"}
            )["nodeId"]
            b.eval("document.getElementById('grid').innerHTML = ''")
            b.send("DOM.setFileInputFiles", {"nodeId": node, "files": [upload]})
            b.wait_for("document.querySelectorAll('#grid .card').length > 0", "image results")
            b.wait_for(ALL_IMAGES_SETTLED, "thumbnails")
            report["upload"] = grid(b)
            b.screenshot(os.path.join(out_dir, "03-upload-results.png"))

            # Click the last result: "more like this" puts it first (it is its own
            # nearest neighbour).
            box = b.eval("""(() => { const cards = document.querySelectorAll('#grid .card');
              const c = cards[cards.length - 1]; c.scrollIntoView();
              const r = c.getBoundingClientRect();
              return {id: c.dataset.id, x: r.x + r.width / 2, y: r.y + r.height / 2}; })()""")
            b.click_at(box["x"], box["y"])
            b.wait_for(
                "document.getElementById('status').textContent.includes('results from')"
                " && document.querySelector('#grid .card') !== null"
                f" && document.querySelector('#grid .card').dataset.id === {json.dumps(box['id'])}",
                "more-like-this results",
            )
            report["clicked"] = box["id"]
            report["more_like_this"] = grid(b)
            b.screenshot(os.path.join(out_dir, "04-more-like-this.png"))

            # A search opened straight from a link.
            b.navigate(base + "/?q=a%20photo%20of%20a%20cat&k=2")
            b.wait_for("document.querySelectorAll('#grid .card').length > 0", "linked results")
            report["linked"] = grid(b)
            report["linked"]["query_box"] = b.eval("document.getElementById('q').value")

            # Errors are shown, not swallowed.
            b.navigate(base + "/?q=x&collection=no_such_collection")
            b.wait_for(
                "document.getElementById('status').className === 'error'", "an error message"
            )
            report["error"] = grid(b)
            b.screenshot(os.path.join(out_dir, "05-error.png"))

            # A phone screen: nothing wider than the viewport.
            b.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
            )
            b.navigate(base + "/?q=a%20photo")
            b.wait_for("document.querySelectorAll('#grid .card').length > 0", "phone results")
            report["phone"] = {
                "scroll_width": b.eval("document.documentElement.scrollWidth"),
                "viewport_width": b.eval("window.innerWidth"),
                "cards": b.eval("document.querySelectorAll('#grid .card').length"),
            }
            b.screenshot(os.path.join(out_dir, "06-phone.png"))
        finally:
            b.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
