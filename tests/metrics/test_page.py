#!/usr/bin/env python3
"""The status page of a service's HTTP endpoint, in headless Chromium.

Starts metrics_demo (a service with the actions get, fail and slow, and its HTTP endpoint),
puts load on its appmsg port, and opens http://HOST:PORT/ in headless Chromium driven over the
DevTools protocol (--remote-debugging-pipe: NUL-separated JSON on descriptors 3 and 4, standard
library only).  Checks that the page renders with no error and no Content-Security-Policy
violation, shows the numbers /status gives, updates as more load comes, says "not answering
since ..." when the service stops, and recovers when it is back.  A screenshot is kept as a
test artifact: $APPMSG_ARTIFACTS/status-page.png.

Environment: APPMSG_METRICS_DEMO (the program), APPMSG_ARTIFACTS (a directory).  Fails when there
is no Chromium (scripts/deps.sh installs it).  Every wait is bounded and ends at its event.
"""
import base64
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

DEMO = os.environ.get("APPMSG_METRICS_DEMO", "")
ARTIFACTS = os.environ.get("APPMSG_ARTIFACTS", os.path.join(tempfile.gettempdir(), "appmsg-artifacts"))
EVENT_S = 20  # the longest wait for anything that must happen


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def wait_for(cond, what, timeout=EVENT_S, step=0.05):
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("%s did not happen within %d s" % (what, timeout))
        time.sleep(step)


class Demo:
    """metrics_demo on 127.0.0.1: its appmsg and HTTP addresses."""

    def __init__(self, http_port="0"):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([DEMO, "127.0.0.1", "0", http_port], stdout=subprocess.PIPE,
                                     stderr=self.log)
        out, end = b"", time.monotonic() + EVENT_S
        while out.count(b"\n") < 2:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0, end - time.monotonic()))
            data = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not data:
                self.stop()
                self.log.seek(0)
                raise AssertionError("metrics_demo did not start: %s" % self.log.read())
            out += data
        addrs = dict(line.split() for line in out.decode().splitlines())
        self.appmsg = addrs["appmsg"]
        self.http = addrs["http"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EVENT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def status(self):
        with urllib.request.urlopen("http://%s/status" % self.http, timeout=EVENT_S) as r:
            return json.load(r)


def frame(obj):
    content = json.dumps(obj).encode()
    header = json.dumps({"byteorder": "little", "content-type": "text/json",
                         "content-encoding": "utf-8", "content-length": len(content)}).encode()
    return struct.pack(">H", len(header)) + header + content


def load(appmsg_addr, actions):
    """Sends the requests (action names) pipelined on one connection and reads every reply."""
    host, port = appmsg_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=EVENT_S) as s:
        s.sendall(b"".join(frame({"action": a, "value": "x"}) for a in actions))
        buf, replies = b"", 0
        while replies < len(actions):
            data = s.recv(65536)
            if not data:
                raise AssertionError("the service closed after %d replies" % replies)
            buf += data
            while len(buf) >= 2:
                hl = struct.unpack(">H", buf[:2])[0]
                if len(buf) < 2 + hl:
                    break
                clen = json.loads(buf[2:2 + hl])["content-length"]
                if len(buf) < 2 + hl + clen:
                    break
                buf = buf[2 + hl + clen:]
                replies += 1


class Browser:
    """Headless Chromium over the DevTools protocol on a pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="appmsg-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():  # Chromium reads commands on descriptor 3 and writes on 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)  # (either may be 3 or 4 now)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
             "--user-data-dir=" + self.profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_chrome], [], [], left)
            if ready:
                data = os.read(self.from_chrome, 1 << 20)
                if not data:
                    raise AssertionError("Chromium went away")
                self.buf += data
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=True, timeout=EVENT_S):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise AssertionError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1100, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def js(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expression, r["exceptionDetails"]))
        return r["result"].get("value")

    def text(self, selector):
        return self.js("(document.querySelector(%s) || {}).textContent || ''" % json.dumps(selector))

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def problems(self):
        """Exceptions thrown and console or policy errors logged so far."""
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(e["params"]["exceptionDetails"])[:300])
            elif e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
                out.append(e["params"]["entry"]["text"])
        return out


class StatusPage(unittest.TestCase):
    def setUp(self):
        self.demo = Demo()
        self.browser = Browser()

    def tearDown(self):
        self.browser.close()
        self.demo.stop()

    def updates(self):
        return int(self.browser.js("(document.documentElement && document.documentElement.dataset.updates) || '0'"))

    def state(self):
        return self.browser.js("(document.documentElement && document.documentElement.dataset.state) || ''")

    def test_the_page_shows_status_updates_and_tells_when_the_service_stops(self):
        demo, b = self.demo, self.browser
        load(demo.appmsg, ["get"] * 40 + ["fail"] * 3)
        b.open("http://%s/" % demo.http)
        wait_for(lambda: self.updates() >= 2, "two readings of /status")
        self.assertEqual(self.state(), "ok")
        self.assertTrue(b.text("#state").startswith("live"), b.text("#state"))
        self.assertEqual(b.js("document.title"), "appmsg service status")

        # The numbers /status gives (no appmsg load meanwhile: they stand still).
        st = demo.status()
        self.assertGreaterEqual(st["requests"], 43)
        wait_for(lambda: ("%d requests" % st["requests"]) in b.text("#totals"),
                 "the page showing %d requests" % st["requests"])
        self.assertEqual(b.text("#version"), "v" + st["version"])
        errors = b.js("[...document.querySelectorAll('#errors tbody tr')]"
                      ".map(r => [...r.cells].map(c => c.textContent))")
        self.assertIn(["NOT_FOUND", str(st["errors"]["NOT_FOUND"])], errors)
        if "actions" in st:
            rows = b.js("[...document.querySelectorAll('#actions tbody tr')]"
                        ".map(r => r.dataset.action)")
            self.assertEqual(sorted(rows), sorted(st["actions"]))
            get = b.js("[...document.querySelector('#actions tr[data-action=get]').cells]"
                       ".map(c => c.textContent)")
            self.assertEqual(get[1], str(st["actions"]["get"]["requests"]))
        else:  # an older server: no per-action table, and a word saying so
            self.assertFalse(b.js("document.getElementById('no-actions').hidden"))

        # More load: the rates move and a later snapshot differs.
        before = (b.text("#totals"), b.text("#rate-requests"))
        end = time.monotonic() + EVENT_S
        while b.text("#rate-requests") in ("0", "\u2013"):
            load(demo.appmsg, ["get"] * 200 + ["fail"] * 20)
            self.assertLess(time.monotonic(), end, "requests/s never moved")
            time.sleep(0.1)
        wait_for(lambda: (b.text("#totals"), b.text("#rate-requests")) != before,
                 "a snapshot that differs")
        self.assertNotEqual(b.text("#rate-errors"), "\u2013")
        drawn = b.js("(() => { const c = document.getElementById('chart');"
                     " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                     " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()")
        self.assertGreater(drawn, 1000, "the chart has nothing drawn")
        self.assertEqual(b.problems(), [])
        b.screenshot(os.path.join(ARTIFACTS, "status-page.png"))

        # The service stops: the page says since when; it comes back: live again.
        port = demo.http.rsplit(":", 1)[1]
        demo.stop()
        wait_for(lambda: self.state() == "down", "the page noticing the service is gone")
        self.assertTrue(b.text("#state").startswith("not answering since "), b.text("#state"))
        b.screenshot(os.path.join(ARTIFACTS, "status-page-down.png"))
        self.demo = Demo(port)
        wait_for(lambda: self.state() == "ok", "the page coming back")
        n = self.updates()
        wait_for(lambda: self.updates() > n, "a reading after the return")

    def test_the_page_and_its_files_carry_the_security_headers(self):
        for path, ctype in (("/", "text/html; charset=utf-8"),
                            ("/app.js", "text/javascript; charset=utf-8"),
                            ("/app.css", "text/css; charset=utf-8")):
            with urllib.request.urlopen("http://%s%s" % (self.demo.http, path),
                                        timeout=EVENT_S) as r:
                self.assertEqual(r.headers["Content-Type"], ctype)
                self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
                self.assertEqual(r.headers["Cache-Control"], "no-store")
                csp = r.headers["Content-Security-Policy"]
                self.assertIn("default-src 'none'", csp)
                self.assertNotIn("unsafe", csp)
                body = r.read().decode()
                self.assertNotIn("https://", body)


def main():
    if not chromium():
        print("no Chromium on this machine: bash scripts/deps.sh installs it (Debian's chromium)")
        return 1
    if not DEMO or not os.access(DEMO, os.X_OK):
        print("APPMSG_METRICS_DEMO must name the metrics_demo program")
        return 1
    prog = unittest.main(argv=[sys.argv[0], "-v"], exit=False)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
