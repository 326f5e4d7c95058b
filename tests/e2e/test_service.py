"""End-to-end tests of the programs built on the service API and the client library.

kv-server with kv-client (set, get, delete, keys, errors, JSON values), the built-in ping and
status actions of app-server and kv-server, app-client's ping/status/--request-id, request ids
echoed byte for byte on the wire, and the shared command line (--opt VALUE and --opt=VALUE,
--help).  The helpers (programs, sockets, sanitizer checks) are test_programs.py's.

Run:  python3 -m unittest -v test_service      (from tests/e2e)
"""

import fcntl
import json
import os
import signal
import struct
import subprocess
import termios
import time
import unittest

from test_programs import E2E, HOST, appmsg_ref, guide_peer  # noqa: F401  (helpers)


def json_request(obj, extra_header_text: str = "") -> bytes:
    content = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    text = ('{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
            f'"content-length": {len(content)}{extra_header_text}}}')
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw + content


def wait_delivered(sock, timeout=10.0):
    """Waits until everything sent on sock has reached the peer's socket (nothing unacknowledged
    is left in the send queue)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        if queued == 0:
            return
        time.sleep(0.005)
    raise AssertionError("the bytes sent did not reach the server in time")


def raw_frames(data: bytes):
    """[(header text, content)] of the whole frames in data, as bytes on the wire."""
    out = []
    while len(data) >= 2:
        (n,) = struct.unpack(">H", data[:2])
        if len(data) < 2 + n:
            break
        hdr = data[2:2 + n]
        clen = json.loads(hdr)["content-length"]
        if len(data) < 2 + n + clen:
            break
        out.append((hdr, data[2 + n:2 + n + clen]))
        data = data[2 + n + clen:]
    return out


class TestKeyValue(E2E):
    def kv(self, port, *args, expect_rc=0):
        rc, out, err, _ = self.run_prog("kv-client", HOST, port, *args)
        self.assertEqual(rc, expect_rc, f"kv-client {' '.join(args)}: {err}")
        return out, err

    def test_set_get_delete_keys(self):
        srv = self.start_server("kv-server")
        p = srv.port
        self.assertEqual(self.kv(p, "keys")[0], "[]\n")
        self.assertEqual(self.kv(p, "set", "b", "two words")[0], "OK\n")
        self.assertEqual(self.kv(p, "set", "a", "\U0001f436 dog")[0], "OK\n")
        self.assertEqual(self.kv(p, "--json", "set", "n", '{"x": [1, 2.50, null]}')[0], "OK\n")
        self.assertEqual(self.kv(p, "get", "a")[0], "\U0001f436 dog\n")
        self.assertEqual(self.kv(p, "get", "n")[0], '{"x": [1, 2.50, null]}\n')
        self.assertEqual(json.loads(self.kv(p, "keys")[0]), ["a", "b", "n"])
        self.assertEqual(self.kv(p, "set", "b", "replaced")[0], "OK\n")
        self.assertEqual(self.kv(p, "get", "b")[0], "replaced\n")
        self.assertEqual(self.kv(p, "delete", "b")[0], "OK\n")
        out, err = self.kv(p, "get", "b", expect_rc=3)
        self.assertEqual(out, "Error: no such key.\n")
        self.assertIn("NOT_FOUND", err)
        self.kv(p, "delete", "b", expect_rc=3)
        self.assertEqual(json.loads(self.kv(p, "keys")[0]), ["a", "n"])

    def test_errors_on_the_wire(self):
        srv = self.start_server("kv-server")
        c = self.client(srv.port)
        c.send(json_request({"action": "get"}))                      # no key
        c.send(json_request({"action": "set", "key": "k"}))          # no value
        c.send(json_request({"action": "get", "key": "nothing"}))
        c.send(json_request({"action": "frobnicate"}))
        c.send(json_request({"action": "set", "key": "k", "value": {"deep": [True]}}))
        c.send(json_request({"action": "get", "key": "k"}))
        m = c.frames(6)
        self.assert_error_reply(m[0], "BAD_REQUEST", framing=False)
        self.assert_error_reply(m[1], "BAD_REQUEST", framing=False)
        self.assert_error_reply(m[2], "NOT_FOUND", framing=False)
        self.assertEqual(m[3].content, b'{"result": "Error: invalid action \'frobnicate\'."}')
        self.assertEqual(json.loads(m[4].content), {"result": "OK"})
        self.assertEqual(m[5].content, b'{"result": {"deep": [true]}}')

    def test_ping_and_status(self):
        srv = self.start_server("kv-server")
        self.assertEqual(self.kv(srv.port, "ping")[0], "pong\n")
        self.kv(srv.port, "get", "missing", expect_rc=3)
        status = json.loads(self.kv(srv.port, "status")[0])
        for key in ("version", "uptime_s", "connections", "requests", "replies", "errors",
                    "bytes_in", "bytes_out"):
            self.assertIn(key, status)
        self.assertEqual(status["errors"].get("NOT_FOUND"), 1)
        self.assertGreaterEqual(status["requests"], 3)

    def test_kv_server_help_says_it_is_single_threaded(self):
        rc, out, err, _ = self.run_prog("kv-server", "--help")
        self.assertEqual(rc, 0, err)
        self.assertIn("one thread", out)


class TestBuiltins(E2E):
    def test_app_client_ping_and_status(self):
        srv = self.app_server()
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "ping")
        self.assertEqual((rc, out), (0, "pong\n"), err)
        self.run_prog("app-client", HOST, srv.port, "lookup", "x")
        c = self.client(srv.port)
        c.send(b"\x00\x00")                                          # a framing error
        c.wait_eof()
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "status")
        self.assertEqual(rc, 0, err)
        lines = dict(line.split(": ", 1) for line in out.splitlines())
        self.assertEqual(lines["version"], appmsg_version_of(self))
        self.assertEqual(json.loads(lines["errors"]), {"HEADER_EMPTY": 1})
        self.assertGreaterEqual(int(lines["requests"]), 3)
        self.assertGreaterEqual(int(lines["replies"]), 3)
        self.assertGreater(int(lines["bytes_in"]), 0)
        self.assertGreater(int(lines["bytes_out"]), 0)
        self.assertGreaterEqual(int(lines["connections_total"]), 4)

    def test_status_counts_on_the_wire(self):
        srv = self.app_server()
        c = self.client(srv.port)
        c.send(json_request({"action": "search", "value": "morpheus"}))
        c.send(json_request({"action": "nope"}))
        c.send(json_request({"action": "search"}))
        c.send(json_request({"action": "status"}))
        m = c.frames(4)
        status = json.loads(m[3].content)["result"]
        self.assertEqual(status["requests"], 4)
        self.assertEqual(status["replies"], 3)
        self.assertEqual(status["errors"], {"INVALID_ACTION": 1, "BAD_REQUEST": 1})
        self.assertEqual(status["connections"], 1)


def appmsg_version_of(test) -> str:
    rc, out, err, _ = test.run_prog("app-server", "--version")
    return out.split()[-1]


class TestRequestIds(E2E):
    def test_echoed_byte_for_byte_and_absent_when_absent(self):
        srv = self.app_server()
        c = self.client(srv.port)
        ids = ['7', '1.0', '"\\u0041bc"', '{"trace": [1, "x"], "n": null}', '-0.5e+2', '"\U0001f436"']
        for rid in ids:
            c.send(json_request({"action": "search", "value": "ring"}, f', "request-id": {rid}'))
        c.send(json_request({"action": "search", "value": "ring"}))
        c.frames(len(ids) + 1)
        got = raw_frames(bytes(c.raw))
        for rid, (hdr_text, content) in zip(ids, got):
            self.assertTrue(hdr_text.endswith(f', "request-id": {rid}}}'.encode("utf-8")),
                            hdr_text)
            self.assertEqual(json.loads(content)["result"],
                             "In the caves beneath the Misty Mountains. \U0001f48d")
        self.assertEqual(got[-1][0], b'{"byteorder": "little", "content-type": "text/json", '
                                     b'"content-encoding": "utf-8", "content-length": 60}')

    def test_app_client_request_id(self):
        srv = self.app_server()
        rc, out, err, _ = self.run_prog("app-client", "--request-id", "42", HOST, srv.port,
                                        "search", "morpheus")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "Follow the white rabbit. \U0001f430\n")
        self.assertIn("reply 1 has request-id 42", err)
        rc, out, err, _ = self.run_prog("app-client", "--request-id=abc", HOST, srv.port,
                                        "double", "42")
        self.assertEqual(rc, 0, err)
        self.assertIn('reply 1 has request-id "abc"', err)

    def test_the_guide_peer_ignores_request_ids(self):
        peer = self.peer_server()
        rc, out, err, _ = self.run_prog("app-client", "--request-id", "5", HOST, peer.port,
                                        "search", "morpheus")
        self.assertEqual((rc, out), (0, "Follow the white rabbit. \U0001f430\n"), err)
        self.assertIn("reply 1 has no request-id", err)


class TestThreads(E2E):
    def status(self, port):
        c = self.client(port)
        c.send(json_request({"action": "status"}))
        return json.loads(c.frame().content)["result"]

    def test_threads_share_one_port_and_status_sums_them(self):
        srv = self.app_server("--threads", "3")
        self.assertIn("3 threads", srv.listen_line)
        self.assertEqual(len(os.listdir(f"/proc/{srv.pid}/task")), 4)   # 3 workers + main
        n = 60
        for _ in range(n):                  # new connections: the kernel spreads them
            self.assert_served(srv.port)
        st = self.status(srv.port)
        self.assertEqual(st["threads"], 3)
        self.assertEqual(st["requests"], n + 1)
        self.assertEqual(st["replies"], n)
        self.assertGreaterEqual(st["connections_total"], n + 1)

    def test_sigterm_drains_every_thread(self):
        srv = self.app_server("--threads", "2")
        conns = [self.client(srv.port) for _ in range(8)]
        for c in conns:
            c.send(json_request({"action": "search", "value": "morpheus"}) * 50)
        for c in conns:     # every request has reached the server's sockets: none may be lost
            wait_delivered(c.sock)
        srv.signal(signal.SIGTERM)
        for c in conns:
            replies = c.frames(50)
            self.assertTrue(all(json.loads(m.content)["result"].startswith("Follow") for m in replies))
            c.wait_eof()
        self.assertEqual(srv.wait(30), 0, srv.stderr())
        self.assertIn("bye", srv.stderr())

    def test_threads_auto_and_bad_counts(self):
        srv = self.app_server("--threads", "auto")
        if os.cpu_count() > 1:    # one thread per CPU online (a single one prints no count)
            self.assertIn(f"{os.cpu_count()} threads", srv.listen_line)
        self.assert_served(srv.port)
        for bad in ("0", "many", "-2"):
            rc, out, err, _ = self.run_prog("app-server", "--threads", bad, HOST, "0")
            self.assertEqual(rc, 2, err)


class TestReadmeExample(E2E):
    """The programs in README.md ("Write your own service", "The client library") and client.h's
    comment compile, run, answer - and end by themselves."""

    def compile(self, code, name):
        from test_programs import BIN_DIR, SRC_DIR
        build = BIN_DIR.parent
        src = os.path.join(self._tmp, name + ".c")
        exe = os.path.join(self._tmp, name)
        with open(src, "w", encoding="utf-8") as f:
            f.write(code)
        cache = (build / "CMakeCache.txt").read_text(encoding="utf-8", errors="replace")
        sanitize = ["-fsanitize=address,undefined"] if "APPMSG_SANITIZE:BOOL=ON" in cache else []
        # No JSON library: the library needs none.
        cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", *sanitize, "-o", exe, src,
                             f"-I{SRC_DIR / 'include'}", f"-I{build / 'include'}",
                             str(build / "libappmsg.a"), "-lhttp_parser", "-lssl", "-lcrypto",
                             "-lpthread"],
                            capture_output=True, text=True, timeout=120)
        self.assertEqual(cc.returncode, 0, cc.stderr)
        return exe

    def readme_block(self, section):
        from test_programs import SRC_DIR
        readme = (SRC_DIR / "README.md").read_text(encoding="utf-8")
        part = readme.split(section, 1)[1]
        return part.split("```c\n", 1)[1].split("```", 1)[0]

    def test_the_readme_service_works(self):
        from test_programs import free_port
        code = self.readme_block("## Write your own service")
        port = free_port()
        self.assertIn('"65432"', code)
        exe = self.compile(code.replace('"65432"', f'"{port}"'), "hello")
        srv = self.start([exe])
        deadline = time.monotonic() + 30
        while True:                          # it says nothing: wait until it answers a ping
            rc, out, err, _ = self.run_prog("kv-client", "--timeout", "2", HOST, port, "ping")
            if rc == 0 or time.monotonic() > deadline or srv.poll() is not None:
                break
        self.assertEqual((rc, out), (0, "pong\n"), err + srv.stderr())
        c = self.client(port)
        c.send(json_request({"action": "hello", "name": "Ann"}))
        self.assertEqual(json.loads(c.frame().content), {"result": "Hello, Ann!"})
        c.send(json_request({"action": "hello", "name": "Ann", "times": 2}))
        self.assertEqual(json.loads(c.frame().content), {"result": "Hello, Ann! (x2)"})
        c.send(json_request({"action": "hello"}))
        self.assert_error_reply(c.frame(), "BAD_REQUEST", framing=False)
        # Checked against its description before the handler runs, the member named.
        c.send(json_request({"action": "hello", "name": "Ann", "times": "2"}))
        f = c.frame()
        self.assert_error_reply(f, "BAD_REQUEST", framing=False)
        self.assertIn("member 'times' must be an integer", json.loads(f.content)["result"])
        c.send(json_request({"action": "describe", "name": "hello"}))
        method = json.loads(c.frame().content)["result"]
        self.assertEqual([(p["name"], p["required"], p["schema"]) for p in method["params"]],
                         [("name", True, {"type": "string"}),
                          ("times", False, {"type": "integer"})])
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(30), 0, srv.stderr())

    def run_client_example(self, code, name):
        srv = self.app_server()
        self.assertIn('"65432"', code)
        exe = self.compile(code.replace('"65432"', f'"{srv.port}"'), name)
        # It ends by itself once its one call is answered: no signal, no timeout of its own.
        p = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout), (0, "Follow the white rabbit. \U0001f430\n"),
                         p.stderr)
        # With nobody listening, it still ends: the call fails (not sent) and frees the client.
        from test_programs import free_port
        dead = free_port()
        exe = self.compile(code.replace('"65432"', f'"{dead}"').replace("10 s per call", ""),
                           name + "-dead")
        p = subprocess.run([exe], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("not sent", p.stdout)

    def test_the_readme_client_ends_by_itself(self):
        code = self.readme_block("## The client library")
        self.run_client_example(code, "readme-client")

    def test_the_client_h_example_ends_by_itself(self):
        from test_programs import SRC_DIR
        text = (SRC_DIR / "include" / "appmsg" / "client.h").read_text(encoding="utf-8")
        lines = text.split("A whole program:\n", 1)[1].split("\n *\n * A client keeps", 1)[0]
        code = "\n".join(line[len(" *   "):] if line.startswith(" *   ") else ""
                         for line in lines.splitlines())
        self.run_client_example(code, "client-h")


class TestCommandLines(E2E):
    PROGRAMS = ("echo-server", "echo-client", "multiconn-server", "multiconn-client",
                "app-server", "app-client", "kv-server", "kv-client")

    def test_help_lists_every_option_and_the_exit_statuses(self):
        for prog in self.PROGRAMS:
            with self.subTest(prog=prog):
                rc, out, err, _ = self.run_prog(prog, "--help")
                self.assertEqual(rc, 0, err)
                self.assertTrue(out.startswith(f"usage: {prog} "), out)
                self.assertIn("-h, --help", out)
                self.assertIn("--version", out)
                self.assertIn("exit status:", out)
                self.assertIn("2  usage error", out)

    def test_both_option_forms_work_everywhere(self):
        srv = self.app_server()
        for args in (("--timeout", "5"), ("--timeout=5",)):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("app-client", *args, HOST, srv.port, "search", "ring")
                self.assertEqual(rc, 0, err)
        for args in (("--timeout", "5"), ("--timeout=5",)):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("kv-client", *args, HOST, srv.port, "ping")
                self.assertEqual((rc, out), (0, "pong\n"), err)

    def test_bad_values_are_usage_errors(self):
        for argv in (("app-client", "--timeout", "soon", "search", "x"),
                     ("app-client", "--timeout=-1", "search", "x"),
                     ("app-server", "--max-conns", "0"),
                     ("app-server", "--max-content=lots"),
                     ("kv-client", "get"),
                     ("kv-client", "fly", "away"),
                     ("app-client", "search")):
            with self.subTest(argv=argv):
                rc, out, err, _ = self.run_prog(*argv)
                self.assertEqual(rc, 2, err)
                self.assertIn("usage:", err)


if __name__ == "__main__":
    unittest.main()
