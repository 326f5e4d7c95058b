"""The appmsg command against real services: call, the prompt, describe, bench, ping, watch.

Every test starts kv-server or app-server on a free loopback port (waiting for its "listening
on" line) and runs appmsg against it; every wait is bounded in count and time.  The prompt is
driven through a pseudo-terminal (tab completion, help, history, Ctrl-C, idle CPU) and through a
pipe (thousands of lines, pipelined, answers in order).

Environment:
    APPMSG_BIN_DIR       the built programs (default <repo>/build/examples)
    APPMSG_SOURCE_DIR    the source tree (default: two levels above this file)

Run:  python3 -m unittest -v test_cli      (from tests/cli)
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE.parent / "e2e"))
import test_programs as e2e  # noqa: E402  (the end-to-end harness: processes, waits)
from test_programs import HOST  # noqa: E402

PTY_TIMEOUT = 20.0   # any wait for the prompt's output
HINT = "is the server running? (set APPMSG_ADDR or give HOST:PORT)"


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("APPMSG_ADDR", "NO_COLOR")}
    env.update(extra)
    return env


class Cli(e2e.E2E):
    def setUp(self):
        super().setUp()
        self.home = Path(self._tmp) / "home"
        self.home.mkdir()

    def kv(self, port=0) -> e2e.Proc:
        return self.start_server("kv-server", port=port)

    def appmsg(self, *args, input=None, env=None, timeout=e2e.RUN_TIMEOUT):
        """Runs appmsg to completion: (returncode, stdout, stderr)."""
        rc, out, err, _ = self.run_prog("appmsg", *args, input=input, timeout=timeout,
                                        env=env or clean_env(HOME=str(self.home)))
        return rc, out, err

    def assert_usage_error(self, *args, says=None, input=None):
        rc, out, err = self.appmsg(*args, input=input)
        self.assertEqual(rc, 2, f"appmsg {' '.join(map(str, args))}: {out}{err}")
        self.assertIn("usage: appmsg", err)
        if says:
            self.assertIn(says, err)


class TestCall(Cli):
    def test_strings_json_values_and_the_json_line(self):
        ep = f":{self.kv().port}"
        self.assertEqual(self.appmsg("call", ep, "set", "key=a", "value:=42"), (0, "OK\n", ""))
        self.assertEqual(self.appmsg("call", ep, "get", "key=a"), (0, "42\n", ""))
        rc, out, err = self.appmsg("call", ep, "set", "key=b", 'value:={"x": [1, 2], "s": "t"}')
        self.assertEqual(rc, 0, err)
        rc, out, err = self.appmsg("call", ep, "get", "key=b")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"x": [1, 2], "s": "t"})
        self.assertGreater(out.count("\n"), 3, "an object is shown indented")
        rc, out, err = self.appmsg("call", ep, "--json", "get", "key=b")
        self.assertEqual((rc, out.count("\n")), (0, 1), err)
        self.assertEqual(json.loads(out), {"result": {"x": [1, 2], "s": "t"}})
        # = is a string even when it looks like a number.
        self.appmsg("call", ep, "set", "key=c", "value=42")
        self.assertEqual(self.appmsg("call", ep, "--json", "get", "key=c")[1],
                         '{"result":"42"}\n')
        # The address from the environment.
        rc, out, err = self.appmsg("call", "get", "key=a",
                                   env=clean_env(APPMSG_ADDR=f"127.0.0.1{ep}"))
        self.assertEqual((rc, out), (0, "42\n"), err)

    def test_data_inline_from_a_file_and_from_stdin(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("call", ep, "-d", '{"action": "set", "key": "d", "value": [1]}')
        self.assertEqual((rc, out), (0, "OK\n"), err)
        f = Path(self._tmp) / "req.json"
        f.write_text('{"action": "get", "key": "d"}')
        rc, out, err = self.appmsg("call", ep, "--json", "-d", f"@{f}")
        self.assertEqual((rc, json.loads(out)), (0, {"result": [1]}), err)
        rc, out, err = self.appmsg("call", ep, "-d", "@-", input=b'{"action": "ping"}')
        self.assertEqual((rc, out), (0, "pong\n"), err)

    def test_header_request_id_comes_back(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("call", ep, "-v", "--header", "request-id:=7", "ping")
        self.assertEqual((rc, out), (0, "pong\n"), err)
        self.assertIn('"request-id": 7', err)
        rc, out, err = self.appmsg("call", ep, "-v", "--header", "request-id=abc", "ping")
        self.assertIn('"request-id": "abc"', err)

    def test_header_extras_reach_the_server(self):
        # A listener of the test's own reads the request's header as sent and answers.
        import socket
        import struct
        import threading
        lsock = socket.create_server((HOST, 0))
        lsock.settimeout(e2e.IO_TIMEOUT)
        seen = {}

        def serve():
            with lsock, lsock.accept()[0] as c:
                c.settimeout(e2e.IO_TIMEOUT)
                buf = b""
                while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                    buf += c.recv(4096)
                hl = struct.unpack(">H", buf[:2])[0]
                seen["header"] = buf[2:2 + hl].decode()
                body = b'{"result": "ok"}'
                h = json.dumps({"byteorder": "little", "content-type": "text/json",
                                "content-encoding": "utf-8", "content-length": len(body)})
                c.sendall(struct.pack(">H", len(h)) + h.encode() + body)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        ep = f":{lsock.getsockname()[1]}"
        rc, out, err = self.appmsg("call", ep, "--header", "trace:=[1, 2.50]", "--header",
                                   "who=me", "--header", "request-id:=9", "ping")
        t.join(e2e.IO_TIMEOUT)
        self.assertEqual((rc, out), (0, "ok\n"), err)
        self.assertIn('"trace": [1, 2.50]', seen["header"])  # byte for byte, as given
        self.assertIn('"who": "me"', seen["header"])
        self.assertIn('"request-id": 9', seen["header"])

    def test_binary_content(self):
        ep = f":{self.app_server().port}"
        f = Path(self._tmp) / "req.bin"
        f.write_bytes(b"\xff\x00bin")
        ctype = "binary/custom-client-binary-type"
        r = subprocess.run([str(self.bin("appmsg")), "call", ep, "--content-type", ctype, "-d",
                            f"@{f}"], capture_output=True, timeout=e2e.RUN_TIMEOUT,
                           env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"First 10 bytes of request: \xff\x00bin")
        rc, out, err = self.appmsg("call", ep, "--json", "--content-type", ctype, "-d", f"@{f}")
        self.assertEqual(rc, 0, err)
        reply = json.loads(out)
        self.assertEqual(reply["content-type"], "binary/custom-server-binary-type")
        self.assertEqual(bytes.fromhex(reply["content-hex"]),
                         b"First 10 bytes of request: \xff\x00bin")

    def test_error_replies_and_failures(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("call", ep, "get", "key=nothing")
        self.assertEqual((rc, out), (3, ""))
        self.assertIn("NOT_FOUND: no such key", err)
        rc, out, err = self.appmsg("call", f":{self.refused_port()}", "ping")
        self.assertEqual(rc, 1)
        self.assertIn("cannot connect to 127.0.0.1:", err)
        self.assertIn("Connection refused", err)
        self.assertIn(HINT, err)

    def test_bad_input_is_a_usage_error(self):
        ep = f":{self.kv().port}"
        self.assert_usage_error("call", ep, "set", "key=a", "value:=4x", says="value:=4x is not JSON")
        self.assert_usage_error("call", ep, "set", "=a", says="no key before")
        self.assert_usage_error("call", ep, "set", ":=1", says="no key before")
        self.assert_usage_error("call", ep, "set", "plain", says="neither key=TEXT nor key:=JSON")
        self.assert_usage_error("call", ep, "set", "action=x", says="the action is the word")
        self.assert_usage_error("call", ep, says="which action")
        self.assert_usage_error("call", ep, "--bogus", "ping", says="unknown option '--bogus'")
        self.assert_usage_error("call", ep, "-d", "[1, 2]", says="JSON object")
        self.assert_usage_error("call", ep, "-d", "{", says="JSON object")
        self.assert_usage_error("call", ep, "-d", "{}", "ping", says="not both")
        self.assert_usage_error("call", ep, "--content-type", "x/y", "ping", says="goes with -d")
        self.assert_usage_error("call", ep, "--header", "content-length:=1", "ping",
                                says="required members")
        self.assert_usage_error("call", ep, "--header", "request-id:=[", "ping", says="not JSON")
        self.assert_usage_error("call", "[::1", "ping", says="is not an address")
        self.assert_usage_error("call", ep, "-d", "@/nonexistent/file", says="cannot open")
        self.assert_usage_error("call", ep, "--timeout", "x", "ping", says="--timeout needs")
        rc, out, err = self.appmsg("call", "ping", env=clean_env(APPMSG_ADDR="[::1"))
        self.assertEqual(rc, 2)
        self.assertIn("APPMSG_ADDR '[::1' is not an address", err)
        self.assert_usage_error("nosuchcommand", says="no command 'nosuchcommand'")

    def test_help_and_version_of_every_command(self):
        for cmd in ("call", "prompt", "describe", "bench", "ping", "watch"):
            with self.subTest(cmd=cmd):
                rc, out, err = self.appmsg(cmd, "--help")
                self.assertEqual(rc, 0, err)
                self.assertTrue(out.startswith(f"usage: appmsg {cmd} "), out)
                self.assertIn("exit status:", out)
                rc, out, err = self.appmsg(cmd, "--version")
                self.assertEqual(rc, 0, err)
                self.assertRegex(out, r"^appmsg \(appmsg\) \d+\.\d+\.\d+")
        rc, out, err = self.appmsg("--help")
        self.assertEqual(rc, 0, err)
        for cmd in ("call", "prompt", "describe", "bench", "ping", "watch"):
            self.assertIn(f"  {cmd} ", out)


class TestDescribe(Cli):
    def test_kv_server(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("describe", ep)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.splitlines()[0], r"^kv-server \S+ at 127\.0\.0\.1:\d+: 7 actions$")
        self.assertIn("set key=TEXT value:=JSON -> string", out)
        self.assertIn("Stores a value under a key", out)
        self.assertRegex(out, r"value +any +required")
        rc, out, err = self.appmsg("describe", ep, "get")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("get key=TEXT -> any\n"), out)
        rc, out, err = self.appmsg("describe", ep, "--names")
        self.assertEqual(out.split(), ["delete", "describe", "get", "keys", "ping", "set",
                                       "status"])
        self.assertEqual(self.appmsg("describe", ep, "--names", "set")[1].split(),
                         ["key=", "value:="])
        rc, out, err = self.appmsg("describe", ep, "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["openrpc"], "1.2.6")
        self.assertEqual(doc["info"]["title"], "kv-server")
        rc, out, err = self.appmsg("describe", ep, "nope")
        self.assertEqual(rc, 3)
        self.assertIn("no action 'nope'", err)
        self.assert_usage_error("describe", ep, "a", "b", says="too many operands")
        self.assert_usage_error("describe", ep, "--json", "--names", says="not both")

    def test_app_server(self):
        ep = f":{self.app_server().port}"
        rc, out, err = self.appmsg("describe", ep)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.splitlines()[0], r"^app-server \S+ at 127\.0\.0\.1:\d+: \d+ actions$")
        self.assertIn("search value=TEXT -> string", out)
        rc, out, err = self.appmsg("call", ep, "search", "value=morpheus")
        self.assertEqual(rc, 0, err)
        self.assertIn("Follow the white rabbit", out)


class TestPromptPipe(Cli):
    def test_lines_answers_help_and_errors(self):
        ep = f":{self.kv().port}"
        text = ("set key=a value:=42\nget key=a\n\n# a comment\nget key=none\n"
                'set key=o value:={"a": [1, 2]}\nhelp get\nquit\nget key=a\n')
        rc, out, err = self.appmsg("prompt", ep, input=text.encode())
        self.assertEqual(rc, 3, err)
        lines = out.splitlines()
        self.assertEqual(lines[:4], ["OK", "42", "NOT_FOUND: no such key.", "OK"])
        self.assertEqual(lines[4], "get key=TEXT -> any")
        self.assertNotIn("42", lines[5:], "nothing after quit")
        rc, out, err = self.appmsg("prompt", ep, input=b"get key=a value:=[\nget key=a\n")
        self.assertEqual((rc, out), (2, "42\n"), err)
        self.assertIn("not closed", err)
        # appmsg with no command is the prompt.
        rc, out, err = self.appmsg(input=b"ping\n", env=clean_env(APPMSG_ADDR=ep))
        self.assertEqual((rc, out), (0, "pong\n"), err)

    def test_thousands_of_lines_pipelined_in_order(self):
        ep = f":{self.kv().port}"
        n = 5000
        sets = "".join(f"set key=k{i} value:={i}\n" for i in range(n))
        gets = "".join(f"get key=k{i}\n" for i in range(n))
        t0 = time.monotonic()
        rc, out, err = self.appmsg("prompt", ep, input=(sets + gets).encode(), timeout=60)
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[:n], ["OK"] * n)
        self.assertEqual(lines[n:], [str(i) for i in range(n)])
        self.assertLess(time.monotonic() - t0, 30)

    def test_a_server_that_went_away(self):
        rc, out, err = self.appmsg("prompt", f":{self.refused_port()}", input=b"ping\nping\n")
        self.assertEqual(rc, 1)
        self.assertIn("cannot connect to", err)
        self.assertIn("the next request connects again", err)


class Terminal:
    """appmsg's prompt on a pseudo-terminal: what it writes, and keys to type."""

    def __init__(self, test, *args, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: appmsg on the terminal
            try:
                os.execve(str(test.bin("appmsg")), ["appmsg", *map(str, args)], env)
            finally:
                os._exit(127)
        self.buf = b""
        self.test = test

    def type(self, keys: bytes):
        os.write(self.fd, keys)

    def expect(self, pattern: bytes, timeout=PTY_TIMEOUT) -> bytes:
        """Reads until pattern (a regular expression) is seen; returns what came up to it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                seen, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                self.test.fail(f"no {pattern!r} on the terminal within {timeout} s: {self.buf!r}")
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    self.buf += os.read(self.fd, 65536)
                except OSError:
                    self.test.fail(f"the terminal closed before {pattern!r}: {self.buf!r}")

    def close(self, keys=b"\x04") -> int:
        """Types keys (Ctrl-D) and returns the exit status."""
        self.type(keys)
        deadline = time.monotonic() + PTY_TIMEOUT
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 65536)
            except OSError:
                pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.test.fail("appmsg did not end at Ctrl-D")

    def cpu_ticks(self) -> int:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


class TestPromptTerminal(Cli):
    def terminal(self, ep) -> Terminal:
        env = clean_env(HOME=str(self.home), TERM="xterm", NO_COLOR="1")
        env.pop("XDG_STATE_HOME", None)
        t = Terminal(self, "prompt", ep, env=env)
        self.addCleanup(lambda: t.pid and self._reap(t))
        return t

    def _reap(self, t):
        try:
            os.kill(t.pid, signal.SIGKILL)
            os.waitpid(t.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def test_completion_help_history_and_ctrl_c(self):
        port = self.kv().port
        ep = f":{port}"
        t = self.terminal(ep)
        prompt = rf"127\.0\.0\.1:{port}> ".encode()
        t.expect(prompt)
        # "se" TAB completes the action; "k" TAB the member (key=), "v" TAB value:=.
        t.type(b"se\t")
        t.type(b"k\t")
        t.type(b"a v\t")
        t.type(b"7\r")
        t.expect(b"\r\nOK\r\n")
        t.expect(prompt)
        t.type(b"get key=a\r")
        t.expect(b"\r\n7\r\n")
        t.expect(prompt)
        t.type(b"help\r")
        seen = t.expect(prompt)
        self.assertIn(b"Stores a value under a key", seen)
        t.type(b"help set\r")
        seen = t.expect(prompt)
        self.assertIn(b"set key=TEXT value:=JSON -> string", seen)
        t.type(b"half a line\x03")
        t.expect(b"\\^C\r\n" + prompt)
        self.assertEqual(t.close(), 0)
        history = (self.home / ".appmsg_history").read_text()
        self.assertIn("set", history)
        self.assertIn("get\\040key=a", history)
        # The next run has the history: the up arrow brings back the last line.
        t = self.terminal(ep)
        t.expect(prompt)
        t.type(b"\x1b[A\x1b[A\r")   # help set, then help
        t.expect(b"Stores a value under a key")
        t.expect(prompt)
        self.assertEqual(t.close(), 0)

    def test_idle_prompt_costs_nothing(self):
        port = self.kv().port
        t = self.terminal(f":{port}")
        t.expect(rf"127\.0\.0\.1:{port}> ".encode())
        hz = os.sysconf("SC_CLK_TCK")
        before, t0 = t.cpu_ticks(), time.monotonic()
        time.sleep(2)   # (the thing measured: idle time)
        used = (t.cpu_ticks() - before) / hz / (time.monotonic() - t0)
        self.assertLess(used, 0.02, f"the idle prompt used {used:.1%} of a CPU")
        self.assertEqual(t.close(), 0)

    def test_server_goes_away_and_comes_back(self):
        port = e2e.free_port()
        kv = self.kv(port)
        t = self.terminal(f":{port}")
        prompt = rf"127\.0\.0\.1:{port}> ".encode()
        t.expect(prompt)
        t.type(b"ping\r")
        t.expect(b"pong\r\n")
        t.expect(prompt)
        kv.stop()
        t.type(b"ping\r")
        seen = t.expect(prompt)
        self.assertRegex(seen, rb"closed the connection|cannot connect|was lost")
        self.kv(port)
        t.type(b"ping\r")
        t.expect(b"pong\r\n")
        t.expect(prompt)
        self.assertEqual(t.close(), 0)


class TestBench(Cli):
    def check_latency(self, r):
        lat = r["latency_ms"]
        seq = [lat["min"], lat["p50"], lat["p90"], lat["p99"], lat["p99.9"], lat["max"]]
        self.assertEqual(seq, sorted(seq), f"percentiles out of order: {lat}")
        self.assertGreater(lat["max"], 0)

    def test_requests_and_time(self):
        ep = f":{self.app_server().port}"
        rc, out, err = self.appmsg("bench", ep, "search", "value=morpheus", "-c", "4", "-P", "8",
                                   "-n", "5000", "--warmup", "0", "--json")
        self.assertEqual(rc, 0, err)
        r = json.loads(out)
        self.assertEqual((r["requests"], r["errors_total"], r["mismatches"]), (5000, 0, 0))
        self.assertEqual((r["connections"], r["pipeline"]), (4, 8))
        self.assertGreater(r["rps"], 0)
        self.check_latency(r)
        rc, out, err = self.appmsg("bench", ep, "ping", "-c", "3", "-P", "2", "-T", "2", "-t",
                                   "1", "--warmup", "0.2", "--json")
        self.assertEqual(rc, 0, err)
        r = json.loads(out)
        self.assertGreater(r["requests"], 100)
        self.assertAlmostEqual(r["seconds"], 1.0, delta=0.5)
        self.check_latency(r)
        rc, out, err = self.appmsg("bench", ep, "ping", "-c", "2", "-n", "200", "--warmup", "0")
        self.assertEqual(rc, 0, err)
        self.assertIn("requests    200 in", out)
        self.assertRegex(out, r"p50 [\d.]+ +p90 [\d.]+ +p99 [\d.]+ +p99\.9 [\d.]+ +max")

    def test_errors_counted_by_name(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("bench", ep, "get", "key=missing", "-c", "2", "-n", "300",
                                   "--warmup", "0", "--json")
        self.assertEqual(rc, 3, err)
        r = json.loads(out)
        self.assertEqual((r["requests"], r["errors"], r["errors_total"]),
                         (300, {"NOT_FOUND": 300}, 300))
        rc, out, err = self.appmsg("bench", ep, "status", "-c", "1", "-n", "50", "--warmup", "0",
                                   "--json")
        self.assertGreater(json.loads(out)["mismatches"], 0, "status answers change")
        rc, out, err = self.appmsg("bench", f":{self.refused_port()}", "ping", "-n", "10")
        self.assertEqual(rc, 1)
        self.assertIn(HINT, err)

    def test_bad_input(self):
        self.assert_usage_error("bench", "ping", "-n", "10", "-t", "1", says="not both")
        self.assert_usage_error("bench", "ping", "-c", "0", says="--connections needs")
        self.assert_usage_error("bench", "ping", "-P", "x", says="--pipeline needs")
        self.assert_usage_error("bench", says="which action")
        self.assert_usage_error("bench", "set", "value:=[", says="is not JSON")


class TestPingWatch(Cli):
    def test_ping_three(self):
        ep = f":{self.kv().port}"
        rc, out, err = self.appmsg("ping", ep, "-c", "3", "-i", "0.2")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        for i in range(3):
            self.assertRegex(lines[i], rf"^reply from 127\.0\.0\.1:\d+: seq={i + 1} "
                             r"time=\d+\.\d{3} ms$")
        self.assertIn("3 sent, 3 answered, 0% lost", out)
        self.assertRegex(lines[-1], r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$")
        rc, out, err = self.appmsg("ping", f":{self.refused_port()}", "-c", "2", "-i", "0.1")
        self.assertEqual(rc, 1)
        self.assertIn("2 sent, 0 answered, 100% lost", out)
        self.assert_usage_error("ping", "-c", "0", says="--count needs")
        self.assert_usage_error("ping", "get", says="is not HOST:PORT")

    def test_ping_summary_on_ctrl_c(self):
        ep = f":{self.kv().port}"
        p = self.start("appmsg", "ping", ep, "-i", "0.1", env=clean_env())
        e2e.wait_for(lambda: "seq=2" in p.stdout(), "two pings")
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(e2e.EVENT_TIMEOUT), 0, p.stderr())
        self.assertIn("rtt min/avg/max/mdev", p.stdout())

    def test_watch_shows_the_load(self):
        ep = f":{self.app_server().port}"
        load = self.start("appmsg", "bench", ep, "ping", "-c", "2", "-P", "4", "-t", "30",
                          "--warmup", "0", env=clean_env())
        rc, out, err = self.appmsg("watch", ep, "-c", "2", "-i", "0.5")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["time", "req/s", "replies/s", "errors/s", "conns",
                                            "in/s", "out/s"])
        self.assertEqual(len(lines), 3, out)
        for line in lines[1:]:
            f = line.split()
            self.assertGreater(float(f[1]), 500, line)      # req/s under the bench's load
            self.assertAlmostEqual(float(f[1]), float(f[2]), delta=float(f[1]) * 0.1 + 10)
            self.assertEqual(f[3], "0")
            self.assertGreaterEqual(int(f[4]), 3)            # the bench's 2 and watch's own
        load.stop()
        self.assert_usage_error("watch", "-i", "0", says="--interval needs")
        self.assert_usage_error("watch", ep, ep, says="too many operands")


if __name__ == "__main__":
    unittest.main()
