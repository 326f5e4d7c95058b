#!/usr/bin/env python3
"""app-server's /metrics scraped by the real Prometheus.

Starts app-server with --metrics on loopback (both ports picked by the system), checks the
exposition with `promtool check metrics`, starts Prometheus (Debian's prometheus: scripts/deps.sh
installs it) with a configuration of its own that scrapes that endpoint every second, sends a
known load (N searches pipelined on one connection, some unknown actions), and asks Prometheus's
HTTP API until what it scraped agrees with the load: appmsg_requests_total by action,
appmsg_errors_total by name, the histogram's count, and a histogram_quantile() that is a latency
loopback can give.  Every wait is bounded and ends at its event.

Environment: APPMSG_BIN_DIR (the programs, default <repo>/build/examples).
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True
HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]
BIN = Path(os.environ.get("APPMSG_BIN_DIR") or SRC / "build" / "examples")
HOST = "127.0.0.1"
N = 5000          # searches
UNKNOWN = 7       # requests for an action nobody handles
WAIT = 60.0       # the bound of any wait for an event


def frame(obj):
    content = json.dumps(obj).encode()
    header = json.dumps({"byteorder": "little", "content-type": "text/json",
                         "content-encoding": "utf-8", "content-length": len(content)}).encode()
    return struct.pack(">H", len(header)) + header + content


def read_frames(sock, n):
    """Reads n whole frames (bounded by the socket's timeout); returns their contents."""
    buf, out = b"", []
    while len(out) < n:
        while True:
            if len(buf) >= 2:
                hl = struct.unpack(">H", buf[:2])[0]
                if len(buf) >= 2 + hl:
                    cl = json.loads(buf[2:2 + hl])["content-length"]
                    if len(buf) >= 2 + hl + cl:
                        out.append(json.loads(buf[2 + hl:2 + hl + cl]))
                        buf = buf[2 + hl + cl:]
                        break
            data = sock.recv(1 << 16)
            if not data:
                raise AssertionError(f"the server closed after {len(out)} replies")
            buf += data
    return out


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


class Proc:
    """A program started by the test, its stderr in a file, stopped at the end."""

    def __init__(self, argv, log):
        self.log = log
        self.f = open(log, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.f,
                                  stderr=subprocess.STDOUT)

    def text(self):
        return Path(self.log).read_text(errors="replace")

    def wait_for(self, pattern):
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} from {self.log}:\n{self.text()[-2000:]}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.f.close()
        return self.p.returncode


class TestPrometheus(unittest.TestCase):
    def setUp(self):
        for tool in ("prometheus", "promtool"):
            self.assertTrue(shutil.which(tool),
                            f"{tool} is missing: bash scripts/deps.sh installs it (prometheus)")
        self.dir = tempfile.mkdtemp(prefix="appmsg-prom-")
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, argv, name):
        p = Proc(argv, os.path.join(self.dir, name + ".log"))
        self.procs.append(p)
        return p

    def query(self, base, promql):
        """The value of an instant query's single sample, or None when there is none yet."""
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = get(url)
        self.assertEqual(status, 200, body)
        res = json.loads(body)["data"]["result"]
        return float(res[0]["value"][1]) if len(res) == 1 else None

    def wait_value(self, base, promql, want):
        end, got = time.monotonic() + WAIT, None
        while time.monotonic() < end:
            got = self.query(base, promql)
            if got == want:
                return
            time.sleep(0.2)
        self.fail(f"{promql}: Prometheus has {got}, the load was {want}")

    def test_prometheus_scrapes_what_the_load_did(self):
        srv = self.start([str(BIN / "app-server"), "--metrics", f"{HOST}:0", HOST, "0"],
                         "app-server")
        port = int(srv.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        mport = int(srv.wait_for(r"on http://127\.0\.0\.1:(\d+)/").group(1))
        metrics_url = f"http://{HOST}:{mport}/metrics"

        # The exposition as a linter of Prometheus's own reads it.
        status, text = get(metrics_url)
        self.assertEqual(status, 200)
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), text[:2000])

        # Prometheus, scraping every second; its web port is one that was free a moment ago
        # (tried again on the rare clash).
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: appmsg\n    static_configs:\n"
                    f"      - targets: ['{HOST}:{mport}']\n")
        for attempt in range(5):
            pport = free_port()
            prom = self.start(["prometheus", f"--config.file={cfg}",
                               f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                               f"--web.listen-address={HOST}:{pport}", "--log.level=warn"],
                              f"prometheus-{attempt}")
            base = f"http://{HOST}:{pport}"
            end, ready = time.monotonic() + WAIT, False
            while time.monotonic() < end and prom.p.poll() is None and not ready:
                try:
                    ready = get(base + "/-/ready", 2)[0] == 200
                except OSError:
                    time.sleep(0.1)
            if ready:
                break
            prom.stop()
        self.assertTrue(ready, prom.text()[-2000:])
        self.wait_value(base, 'up{job="appmsg"}', 1.0)

        # The load: N searches pipelined on one connection, then UNKNOWN unknown actions.
        with socket.create_connection((HOST, port), timeout=WAIT) as s:
            s.sendall(b"".join(frame({"action": "search", "value": "morpheus"})
                               for _ in range(N)))
            replies = read_frames(s, N)
            self.assertTrue(all(r == {"result": "Follow the white rabbit. \U0001f430"}
                                for r in replies))
            s.sendall(b"".join(frame({"action": "nope"}) for _ in range(UNKNOWN)))
            read_frames(s, UNKNOWN)

        self.wait_value(base, 'appmsg_requests_total{action="search"}', float(N))
        self.wait_value(base, 'appmsg_request_duration_seconds_count{action="search"}', float(N))
        self.wait_value(base, 'appmsg_requests_total{action="_unknown"}', float(UNKNOWN))
        self.wait_value(base, 'appmsg_errors_total{error="INVALID_ACTION"}', float(UNKNOWN))
        self.wait_value(base, 'appmsg_request_errors_total{action="search"}', 0.0)
        self.wait_value(base, "appmsg_connections", 0.0)
        p99 = self.query(base, 'histogram_quantile(0.99, '
                               'appmsg_request_duration_seconds_bucket{action="search"})')
        self.assertIsNotNone(p99)
        self.assertGreater(p99, 0.0)
        self.assertLess(p99, 1.0)  # loopback, a table lookup: far below a second
        # /status says the same of the same counters.
        status = json.loads(get(f"http://{HOST}:{mport}/status")[1])
        self.assertEqual(status["actions"]["search"]["requests"], N)
        self.assertEqual(status["errors"]["INVALID_ACTION"], UNKNOWN)
        self.assertLessEqual(status["actions"]["search"]["p99_s"], 1.0)
        self.assertEqual(srv.stop(), 0, srv.text()[-2000:])

    def test_the_shipped_configuration_is_valid(self):
        cfg = SRC / "deploy" / "prometheus" / "prometheus.yml"
        r = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # Its targets are the --metrics ports its comment gives the three app-servers.
        text = cfg.read_text()
        for port in (9465, 9466, 9467):
            self.assertIn(f"127.0.0.1:{port}", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
