"""End-to-end tests of app-server with its data in Redis (--redis, --redis-prefix, --redis-timeout,
--load).

Every test starts a redis-server of its own (Debian's redis-server, which scripts/test.sh installs)
on a free loopback port and on a Unix socket in the test's temporary directory, with persistence
off, and stops it afterwards.  Misbehaving "Redis" servers (one that never answers, one that answers
with the wrong types, replies nobody asked for or garbage) are Python sockets in the test.  Every
wait is for an event (a log line, a reply, a descriptor count) and bounded; APPMSG_WRAPPER (valgrind)
runs app-server under a tool, with more time allowed for each wait.

Run:  python3 -m unittest -v test_redis      (from tests/redis; APPMSG_BIN_DIR as for tests/e2e)
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from test_programs import E2E, HOST, WRAPPER, appmsg_ref, free_port  # noqa: E402
from test_service import json_request  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")
SLACK = 10.0 if WRAPPER else 2.0          # seconds allowed beyond a bound, for slow builds
UNAVAILABLE = {"result": "Error: the data store is unavailable.", "error": "UNAVAILABLE"}


# --------------------------------------------------------------------------------------------------
# A small Redis client (RESP), for setting up and checking data


class RespError(Exception):
    pass


def resp_encode(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Resp:
    def __init__(self, port=None, path=None, timeout=10.0):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection((HOST, port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RespError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(resp_encode(*args))
        return self.read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(resp_encode(*c) for c in commands))
        return [self.read() for _ in commands]

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------------------------------
# Fake servers that speak (or fail to speak) Redis's protocol


class FakeRedis:
    """A listening socket on loopback; each connection is served by mode:
       silent       accepts and reads, never answers
       int          +PONG to PING, an integer to anything else
       unsolicited  +PONG and then a reply nobody asked for; nothing to anything else
       garbage      a line that is not RESP"""

    def __init__(self, test, mode):
        self.mode = mode
        self.ls = socket.socket()
        self.ls.bind((HOST, 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        test._socks.append(self.ls)
        self.test = test
        test.thread(self._accept)

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            self.test._socks.append(c)
            self.test.thread(self._serve, c)

    def _serve(self, c):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                if self.mode == "silent":
                    continue
                if self.mode == "garbage":
                    c.sendall(b"?this is not redis\r\n")
                    continue
                for cmd in data.split(b"*")[1:]:
                    if b"PING" in cmd:
                        c.sendall(b"+PONG\r\n+OK\r\n" if self.mode == "unsolicited" else b"+PONG\r\n")
                    elif self.mode == "int":
                        c.sendall(b":42\r\n")
        except OSError:
            return


# --------------------------------------------------------------------------------------------------
# The tests' base: a redis-server, app-server started on it, requests


class RedisE2E(E2E):
    def setUp(self):
        super().setUp()
        if REDIS_SERVER is None:
            self.fail("redis-server is not installed (scripts/test.sh installs it: "
                      "bash scripts/deps.sh redis-server redis-tools)")
        self.redis_port = None
        self.redis_sock = os.path.join(self._tmp, "redis.sock")
        self.redis_proc = None

    # ---- redis-server

    def start_redis(self, port=None):
        """Starts redis-server (port: a given one, to restart it where it was) and waits until it
        answers PING on both its TCP port and its Unix socket."""
        for attempt in range(5):
            p = port or free_port()
            proc = self.start([REDIS_SERVER], "--port", str(p), "--bind", "127.0.0.1", "-::1",
                              "--unixsocket", self.redis_sock, "--unixsocketperm", "700",
                              "--save", "", "--appendonly", "no", "--dir", self._tmp,
                              "--daemonize", "no", "--logfile", "", "--loglevel", "warning")
            proc.name = "redis-server"
            if self._wait_redis(proc, p):
                self.redis_port, self.redis_proc = p, proc
                return proc
            proc.stop()
            if "in use" not in proc.stderr() and "already" not in proc.stderr():
                break
        self.fail(f"redis-server did not start; stderr:\n{proc.stderr()}")

    def _wait_redis(self, proc, port) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                for kw in ({"port": port}, {"path": self.redis_sock}):
                    r = Resp(timeout=2, **kw)
                    ok = r.call("PING") == "PONG"
                    r.close()
                    if not ok:
                        raise OSError
                return True
            except (OSError, RespError):
                time.sleep(0.02)
        return False

    def stop_redis(self, sig=signal.SIGTERM):
        self.redis_proc.signal(sig)
        self.assertIsNotNone(self.redis_proc.wait(15), "redis-server did not stop")

    def redis(self) -> Resp:
        r = Resp(port=self.redis_port)
        self.addCleanup(r.close)
        return r

    # ---- app-server

    def app(self, *opts, redis=None, wait_connected=True):
        """app-server on Redis (by default the test's redis-server over TCP); waits for it to say
        that it listens and, unless told not to, that Redis is connected."""
        addr = redis or f"127.0.0.1:{self.redis_port}"
        srv = self.start_server("app-server", "--redis", addr, *opts)
        if wait_connected:
            self.wait_log(srv, r"redis \S+: connected")
        return srv

    def wait_log(self, proc, pattern, count=1, timeout=None):
        """Until proc's stderr has count lines matching pattern."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (timeout or 10 + SLACK)
        while time.monotonic() < deadline:
            lines = [ln for ln in proc.stderr().splitlines() if rx.search(ln)]
            if len(lines) >= count:
                return lines
            if proc.poll() is not None:
                self.fail(f"{proc.name} exited with {proc.poll()}; stderr:\n{proc.stderr()}")
            time.sleep(0.02)
        self.fail(f"no {count} line(s) matching {pattern!r} in time; stderr:\n{proc.stderr()}")

    def wait_for(self, what, pred, timeout=None):
        deadline = time.monotonic() + (timeout or 10 + SLACK)
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(0.02)
        self.fail(f"timed out waiting for {what}")

    def search(self, conn, key, timeout=None):
        conn.send(json_request({"action": "search", "value": key}))
        return json.loads(conn.frame(timeout).content)

    def ask(self, port, action, timeout=None, **kw):
        c = self.client(port)
        c.send(json_request({"action": action, **kw}))
        out = json.loads(c.frame(timeout).content)
        c.close()
        return out

    def status(self, port):
        return self.ask(port, "status")["result"]

    @staticmethod
    def fd_count(pid) -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))


# --------------------------------------------------------------------------------------------------
# Answers


class TestAnswers(RedisE2E):
    def test_search_is_answered_from_redis(self):
        self.start_redis()
        r = self.redis()
        r.call("SET", "morpheus", "Follow the white rabbit. \U0001f430")
        r.call("SET", "\U0001f436", "\U0001f43e Playing ball! \U0001f3d0")
        srv = self.app()
        self.assertIn("data in Redis at", srv.listen_line)
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "morpheus"), {"result": "Follow the white rabbit. \U0001f430"})
        self.assertEqual(self.search(c, "\U0001f436"),
                         {"result": "\U0001f43e Playing ball! \U0001f3d0"})
        # the guide's own client's bytes, too
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "search", "morpheus")
        self.assertEqual((rc, out), (0, "Follow the white rabbit. \U0001f430\n"), err)
        # binary requests and the built-ins behave as before
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "double", "42")
        self.assertEqual((rc, out), (0, "First 10 bytes of request: double42\n"), err)
        self.assertEqual(self.ask(srv.port, "ping"), {"result": "pong"})
        self.assertEqual(self.ask(srv.port, "nope"), {"result": "Error: invalid action 'nope'."})

    def test_a_missing_key_gets_the_guides_no_match(self):
        self.start_redis()
        srv = self.app()
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "nosuchkey"), {"result": "No match for 'nosuchkey'."})
        self.assertEqual(self.search(c, "it's \"quoted\""),
                         {"result": "No match for 'it's \"quoted\"'."})
        c.send(json_request({"action": "search"}))
        self.assert_error_reply(c.frame(), "BAD_REQUEST", framing=False)

    def test_a_key_changed_in_redis_is_seen_at_once(self):
        self.start_redis()
        r = self.redis()
        srv = self.app()
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "ring"), {"result": "No match for 'ring'."})
        r.call("SET", "ring", "In the caves beneath the Misty Mountains. \U0001f48d")
        self.assertEqual(self.search(c, "ring"),
                         {"result": "In the caves beneath the Misty Mountains. \U0001f48d"})
        r.call("SET", "ring", "Thrown into Mount Doom.")
        self.assertEqual(self.search(c, "ring"), {"result": "Thrown into Mount Doom."})
        r.call("DEL", "ring")
        self.assertEqual(self.search(c, "ring"), {"result": "No match for 'ring'."})

    def test_the_prefix_is_put_before_every_key(self):
        self.start_redis()
        r = self.redis()
        r.call("SET", "app:morpheus", "prefixed")
        r.call("SET", "morpheus", "not prefixed")
        srv = self.app("--redis-prefix", "app:")
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "morpheus"), {"result": "prefixed"})
        self.assertEqual(self.search(c, "app:morpheus"), {"result": "No match for 'app:morpheus'."})

    def test_unix_socket_and_ipv6_addresses(self):
        self.start_redis()
        self.redis().call("SET", "k", "v")
        for addr in (f"unix:{self.redis_sock}", f"[::1]:{self.redis_port}"):
            with self.subTest(addr=addr):
                srv = self.app(redis=addr)
                self.assertEqual(self.search(self.client(srv.port), "k"), {"result": "v"})
                self.assertEqual(self.status(srv.port)["redis"]["address"], addr)
                srv.stop()

    def test_values_of_other_types_and_odd_strings_are_error_replies(self):
        self.start_redis()
        r = self.redis()
        r.call("HSET", "hash", "a", "b")
        r.call("RPUSH", "list", "x")
        r.call("SET", "latin1", b"caf\xe9")
        r.call("SET", "nul", b"a\x00b")
        r.call("SET", "big", "x" * 200000)
        r.call("SET", "empty", "")
        srv = self.app()
        c = self.client(srv.port)
        for key in ("hash", "list"):
            body = self.search(c, key)
            self.assertEqual(body["error"], "WRONG_TYPE", body)
            self.assertTrue(body["result"].startswith("Error: "), body)
        self.assertEqual(self.search(c, "latin1")["error"], "BAD_VALUE")
        self.assertEqual(self.search(c, "nul")["error"], "BAD_VALUE")   # appmsg's JSON has no NUL
        self.assertEqual(self.search(c, "big"), {"result": "x" * 200000})
        self.assertEqual(self.search(c, "empty"), {"result": ""})
        st = self.status(srv.port)
        self.assertEqual(st["errors"].get("WRONG_TYPE"), 2)
        self.assertEqual(st["redis"]["errors"], 4)
        self.assertTrue(st["redis"]["connected"])

    def test_ten_thousand_pipelined_requests_are_all_answered_in_order(self):
        self.start_redis()
        r = self.redis()
        r.pipeline([("SET", f"k{i}", f"value {i} \u2713") for i in range(100)])
        srv = self.app()
        c = self.client(srv.port, timeout=60 + SLACK)
        n = 10000
        keys = [f"k{random.randrange(130)}" for _ in range(n)]
        frames = b"".join(json_request({"action": "search", "value": k}) for k in keys)
        # Sent from a thread while this one reads: the server stops reading a client that does
        # not read its replies, and so would this test's own sendall.
        self.thread(c.send, frames)
        got = c.frames(n, timeout=60 + SLACK)
        for k, m in zip(keys, got):
            i = int(k[1:])
            want = f"value {i} \u2713" if i < 100 else f"No match for '{k}'."
            self.assertEqual(json.loads(m.content), {"result": want})
        st = self.status(srv.port)["redis"]
        self.assertGreaterEqual(st["requests"], n)
        self.assertEqual((st["in_flight"], st["unavailable"], st["timeouts"]), (0, 0, 0))

    def test_with_threads_each_keeps_its_own_connection(self):
        self.start_redis()
        self.redis().call("SET", "k", "v")
        srv = self.app("--threads", "2", wait_connected=False)
        self.wait_log(srv, r"redis \S+ \(thread [12]\): connected", count=2)
        for _ in range(8):
            c = self.client(srv.port)
            self.assertEqual(self.search(c, "k"), {"result": "v"})
            c.close()
        st = self.status(srv.port)["redis"]
        self.assertEqual((st["connections"], st["connections_up"], st["connected"]), (2, 2, True))
        self.assertEqual(st["requests"], 8)     # summed over the threads
        self.stop_redis()
        self.wait_log(srv, "lost the connection", count=2)
        st = self.status(srv.port)["redis"]
        self.assertEqual((st["connections_up"], st["connected"], st["state"]), (0, False, "down"))

    def test_status_shows_the_data_store(self):
        self.start_redis()
        srv = self.app("--redis-prefix", "p:")
        c = self.client(srv.port)
        self.search(c, "x")
        st = self.status(srv.port)["redis"]
        self.assertEqual(st["address"], f"127.0.0.1:{self.redis_port}")
        self.assertEqual(st["prefix"], "p:")
        self.assertIs(st["connected"], True)
        self.assertEqual(st["state"], "connected")
        self.assertEqual((st["connections"], st["connections_up"]), (1, 1))
        for key in ("reconnects", "in_flight", "unavailable", "timeouts", "errors"):
            self.assertEqual(st[key], 0, key)
        self.assertEqual(st["requests"], 1)
        self.assertIsNone(st["last_error"])

    def test_metrics_show_the_data_store(self):
        import urllib.request
        self.start_redis()
        srv = self.app("--metrics", "127.0.0.1:0")
        self.wait_log(srv, r"metrics and status page on http://127\.0\.0\.1:\d+/")
        mport = re.search(r"on http://127\.0\.0\.1:(\d+)/", srv.stderr()).group(1)
        c = self.client(srv.port)
        self.search(c, "x")
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        for line in ("# TYPE appmsg_redis_connections_up gauge", "appmsg_redis_connections 1",
                     "appmsg_redis_connections_up 1", "appmsg_redis_requests_total 1",
                     "appmsg_redis_unavailable_total 0", 'appmsg_requests_total{action="search"} 1'):
            self.assertIn(line + ("\n" if not line.startswith("#") else ""), text)


# --------------------------------------------------------------------------------------------------
# Loading


class TestLoad(RedisE2E):
    def test_load_a_hundred_thousand_keys_then_spot_checks(self):
        self.start_redis()
        n = 100000
        data = {f"key{i:06d}": f"value {i} \u00e9\U0001f430" for i in range(n)}
        data["\U0001f436"] = "dog"
        data['quote"and\\back'] = "esc\naped"
        path = Path(self._tmp) / "data.json"
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        rc, out, err, took = self.run_prog("app-server", "--redis", f"127.0.0.1:{self.redis_port}",
                                           "--redis-prefix", "d:", "--load", path,
                                           timeout=120 + SLACK * 6)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, rf"loaded {n + 2} keys from .* into Redis at 127\.0\.0\.1:"
                              rf"{self.redis_port} \(prefix 'd:'\)")
        r = self.redis()
        self.assertEqual(r.call("DBSIZE"), n + 2)
        self.assertEqual(r.call("GET", "d:key000007"), "value 7 \u00e9\U0001f430".encode())
        srv = self.app("--redis-prefix", "d:")
        c = self.client(srv.port)
        sample = random.sample(sorted(data), 200) + ["\U0001f436", 'quote"and\\back', "nokey"]
        for key in sample:
            c.send(json_request({"action": "search", "value": key}))
        for key, m in zip(sample, c.frames(len(sample))):
            want = data.get(key, f"No match for '{key}'.")
            self.assertEqual(json.loads(m.content), {"result": want}, key)

    def test_load_errors_are_reported(self):
        self.start_redis()
        bad = Path(self._tmp) / "bad.json"
        bad.write_text('{"a": 1}')
        rc, out, err, _ = self.run_prog("app-server", "--redis", f"127.0.0.1:{self.redis_port}",
                                        "--load", bad)
        self.assertEqual(rc, 1)
        self.assertIn("is not a string", err)
        good = Path(self._tmp) / "good.json"
        good.write_text('{"a": "b"}')
        rc, out, err, _ = self.run_prog("app-server", "--redis", f"127.0.0.1:{free_port()}",
                                        "--load", good)
        self.assertEqual(rc, 1)
        self.assertIn("cannot connect", err)
        rc, out, err, _ = self.run_prog("app-server", "--load", good)
        self.assertEqual(rc, 2)
        self.assertIn("--load needs --redis", err)


# --------------------------------------------------------------------------------------------------
# Redis down, slow, restarted, misbehaving


class TestTrouble(RedisE2E):
    def test_redis_stopped_mid_load(self):
        """Four clients search without pause; Redis is killed in the middle.  Every request gets
        its answer or UNAVAILABLE, none waits past the timeout, app-server stays up, its descriptors
        come back to what they were, and it serves again once Redis is back."""
        self.start_redis()
        r = self.redis()
        r.pipeline([("SET", f"k{i}", f"v{i}") for i in range(50)])
        srv = self.app("--redis-timeout", "1")
        baseline = self.fd_count(srv.pid)
        outcomes = {"answer": 0, "unavailable": 0, "wrong": [], "slowest": 0.0}
        lock = threading.Lock()

        def client(idx):
            c = self.client(srv.port, timeout=1 + SLACK)
            for batch in range(40):
                keys = [f"k{(idx * 7 + batch + j) % 60}" for j in range(50)]
                c.send(b"".join(json_request({"action": "search", "value": k}) for k in keys))
                t0 = time.monotonic()
                got = c.frames(len(keys), timeout=1 + SLACK)
                took = time.monotonic() - t0
                with lock:
                    outcomes["slowest"] = max(outcomes["slowest"], took)
                    for k, m in zip(keys, got):
                        body = json.loads(m.content)
                        i = int(k[1:])
                        if body == UNAVAILABLE:
                            outcomes["unavailable"] += 1
                        elif body == {"result": f"v{i}" if i < 50 else f"No match for '{k}'."}:
                            outcomes["answer"] += 1
                        else:
                            outcomes["wrong"].append((k, body))
            c.close()

        errors = []

        def run(i):
            try:
                client(i)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        self.wait_for("some answers", lambda: outcomes["answer"] >= 500, timeout=30 + SLACK)
        self.stop_redis(signal.SIGKILL)
        for t in threads:
            t.join(120 + SLACK * 4)
            self.assertFalse(t.is_alive(), "a client hung")
        self.assertEqual(errors, [])
        self.assertEqual(outcomes["wrong"], [])
        self.assertEqual(outcomes["answer"] + outcomes["unavailable"], 4 * 40 * 50)
        self.assertGreater(outcomes["unavailable"], 0)
        self.assertLess(outcomes["slowest"], 1 + SLACK)
        self.assertIsNone(srv.poll(), "app-server died")
        self.assertEqual(self.ask(srv.port, "ping"), {"result": "pong"})
        st = self.status(srv.port)
        self.assertIs(st["redis"]["connected"], False)
        self.assertEqual(st["redis"]["in_flight"], 0)
        self.assertEqual(st["redis"]["unavailable"], outcomes["unavailable"])
        self.assertEqual(st["errors"]["UNAVAILABLE"], outcomes["unavailable"])
        # Its descriptors: the Redis connection is gone, the clients' too.
        self.wait_for("descriptors back to baseline less the Redis connection",
                      lambda: self.fd_count(srv.pid) == baseline - 1)
        # The log says it once, not once per request.
        self.assertEqual(len(self.wait_log(srv, "lost the connection")), 1)
        self.assertLessEqual(len([ln for ln in srv.stderr().splitlines() if "redis " in ln]), 4,
                             srv.stderr())
        # Redis back on the same port: answers resume, the descriptors are what they were.
        self.start_redis(port=self.redis_port)
        self.redis().call("SET", "k1", "again")
        self.wait_log(srv, "connected again", timeout=5 + SLACK)
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "k1"), {"result": "again"})
        c.close()
        self.wait_for("descriptors back to baseline", lambda: self.fd_count(srv.pid) == baseline)

    def test_redis_restarted_answers_resume_without_restarting_app_server(self):
        self.start_redis()
        self.redis().call("SET", "morpheus", "one")
        srv = self.app()
        c = self.client(srv.port)
        self.assertEqual(self.search(c, "morpheus"), {"result": "one"})
        self.stop_redis()
        self.wait_log(srv, "lost the connection")
        t0 = time.monotonic()
        self.assertEqual(self.search(c, "morpheus"), UNAVAILABLE)
        self.assertLess(time.monotonic() - t0, 0.5 + SLACK)    # at once: Redis is known to be down
        self.start_redis(port=self.redis_port)
        self.redis().call("SET", "morpheus", "two")
        self.wait_log(srv, "connected again", timeout=5 + SLACK)  # the backoff is capped at 2 s
        self.assertEqual(self.search(c, "morpheus"), {"result": "two"})
        st = self.status(srv.port)["redis"]
        self.assertEqual((st["connected"], st["reconnects"]), (True, 1))
        self.assertGreaterEqual(st["unavailable"], 1)

    def test_redis_down_at_the_start(self):
        port = free_port()
        srv = self.app(redis=f"127.0.0.1:{port}", wait_connected=False)
        self.wait_log(srv, "cannot connect")
        c = self.client(srv.port)
        t0 = time.monotonic()
        for _ in range(100):
            self.assertEqual(self.search(c, "x"), UNAVAILABLE)
        self.assertLess(time.monotonic() - t0, 2 + SLACK)
        self.assertIs(self.status(srv.port)["redis"]["connected"], False)
        self.start_redis(port=port)
        self.wait_log(srv, r"redis \S+: connected", timeout=5 + SLACK)
        self.assertEqual(self.search(c, "x"), {"result": "No match for 'x'."})
        lines = [ln for ln in srv.stderr().splitlines() if "redis " in ln]
        self.assertEqual(len(lines), 2, lines)     # cannot connect (once), connected

    def test_a_redis_that_never_answers_gives_unavailable_within_the_timeout(self):
        fake = FakeRedis(self, "silent")
        srv = self.app("--redis-timeout", "0.5", redis=f"127.0.0.1:{fake.port}",
                       wait_connected=False)
        self.wait_for("the connection", lambda: fake.accepted >= 1)
        c, other = self.client(srv.port, timeout=5 + SLACK), self.client(srv.port)
        t0 = time.monotonic()
        c.send(json_request({"action": "search", "value": "x"}))
        # Meanwhile another client is served at once.
        other.send(json_request({"action": "ping"}))
        self.assertEqual(json.loads(other.frame().content), {"result": "pong"})
        self.assertEqual(json.loads(c.frame().content), UNAVAILABLE)
        self.assertLess(time.monotonic() - t0, 0.5 + SLACK)
        for _ in range(3):    # later ones too: at once while down, within the timeout on a retry
            t0 = time.monotonic()
            self.assertEqual(self.search(c, "x"), UNAVAILABLE)
            self.assertLess(time.monotonic() - t0, 0.5 + SLACK)
        st = self.status(srv.port)["redis"]
        self.assertIs(st["connected"], False)
        self.assertIn("no answer within 500 ms", st["last_error"])
        self.assertIsNone(srv.poll())

    def test_a_deadline_shorter_than_the_redis_timeout_answers_first(self):
        """The service's TIMEOUT comes first; the store's UNAVAILABLE, later, is dropped safely."""
        fake = FakeRedis(self, "silent")
        srv = self.app("--deadline", "0.3", "--redis-timeout", "1",
                       redis=f"127.0.0.1:{fake.port}", wait_connected=False)
        self.wait_log(srv, "is not below --deadline")
        self.wait_for("the connection", lambda: fake.accepted >= 1)
        c = self.client(srv.port, timeout=5 + SLACK)
        for k in range(3):
            c.send(json_request({"action": "search", "value": f"x{k}"}))
        for m in c.frames(3):
            self.assert_error_reply(m, "TIMEOUT", framing=False)
        self.wait_log(srv, "no answer within 1000 ms|cannot connect")
        self.wait_for("nothing pending", lambda: self.status(srv.port)["pending"] == 0)
        self.assertEqual(self.ask(srv.port, "ping"), {"result": "pong"})
        self.assertIsNone(srv.poll())

    def test_a_redis_that_answers_nonsense_gets_error_replies_not_a_crash(self):
        # (A search sent with the PING may be matched with the reply nobody asked for: then it is
        # answered WRONG_TYPE, and the next reply is the one nobody asked for.)
        for mode, want in (("int", {"WRONG_TYPE"}), ("unsolicited", {"UNAVAILABLE", "WRONG_TYPE"}),
                           ("garbage", {"UNAVAILABLE"})):
            with self.subTest(mode=mode):
                fake = FakeRedis(self, mode)
                srv = self.app("--redis-timeout", "0.5", redis=f"127.0.0.1:{fake.port}",
                               wait_connected=False)
                self.wait_for("the connection", lambda: fake.accepted >= 1)
                c = self.client(srv.port, timeout=5 + SLACK)
                for _ in range(5):
                    body = self.search(c, "x")
                    self.assertIn(body.get("error"), want, body)
                self.assertIsNone(srv.poll(), f"app-server died: {srv.stderr()}")
                self.assertEqual(self.ask(srv.port, "ping"), {"result": "pong"})
                if mode == "unsolicited":
                    self.wait_log(srv, "a reply nobody asked for")
                if mode == "garbage":
                    self.wait_log(srv, "Protocol error")
                srv.stop()
                self.assertEqual(srv.poll(), 0, srv.stderr())


# --------------------------------------------------------------------------------------------------
# Command lines


class TestOptions(RedisE2E):
    def test_bad_redis_options_are_usage_errors(self):
        for args, why in ((["--redis", "localhost"], "is not a Redis address"),
                          (["--redis", "::1:6379"], "is not a Redis address"),
                          (["--redis", "127.0.0.1:0"], "is not a Redis address"),
                          (["--redis", "unix:"], "Unix socket path"),
                          (["--redis-prefix", "p"], "--redis-prefix needs --redis"),
                          (["--redis", "127.0.0.1:1", "--data", "x.json"], "pick one"),
                          (["--redis", "127.0.0.1:1", "--redis-timeout", "0"], "--redis-timeout")):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("app-server", *args)
                self.assertEqual(rc, 2, err)
                self.assertIn(why, err)

    def test_help_describes_the_redis_options(self):
        rc, out, err, _ = self.run_prog("app-server", "--help")
        self.assertEqual(rc, 0)
        for opt in ("--redis ADDR", "--redis-prefix P", "--redis-timeout S", "--load FILE"):
            self.assertIn(opt, out)


if __name__ == "__main__":
    unittest.main()
