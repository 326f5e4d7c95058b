"""The Windows programs under Wine against the Linux ones and the guide's Python peer.

Across the two systems, over loopback: app-server.exe answers the Linux app-client and the guide's
client; app-client.exe gets answers from the Linux app-server and from the guide's server (one
request, and lines on its standard input); appmsg.exe calls and describes the Linux kv-server and
app-server; the echo, multiconn and kv pairs both ways; and app-server.exe drains on Ctrl-C.  Every answer is compared with what the Linux programs give
(Windows programs end their lines with CRLF, as Windows programs do: lines are compared without
it).

Environment:
    APPMSG_BIN_DIR       the Linux programs (default <repo>/build/examples)
    APPMSG_WIN_BIN_DIR   the Windows programs (default <repo>/build-windows/examples)
    WINEPREFIX           the Wine prefix to use (default <repo>/build-windows/wine)

Run:  python3 -m unittest -v test_wine      (from tests/windows)
"""

import os
import signal
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE.parent / "e2e"))
import test_programs as e2e  # noqa: E402  (the end-to-end harness: processes, peers, waits)
from test_programs import HOST, guide_peer, reply_for  # noqa: E402

SRC_DIR = e2e.SRC_DIR
WIN_BIN_DIR = Path(os.environ.get("APPMSG_WIN_BIN_DIR") or SRC_DIR / "build-windows" / "examples")
WINE_ENV = dict(os.environ, WINEDEBUG="-all",
                WINEPREFIX=os.environ.get("WINEPREFIX") or str(SRC_DIR / "build-windows" / "wine"))
# Wine starts slower than a native program, and each start costs a second or more.
WINE_TIMEOUT = 60.0


def lines(text: str) -> str:
    """Text with Windows line ends made Unix ones."""
    return text.replace("\r\n", "\n")


class Wine(e2e.E2E):
    """E2E with programs of either system: prog "app-server" is Linux's, "app-server.exe" the
    Windows one under Wine."""

    def win(self, prog) -> list:
        path = WIN_BIN_DIR / prog
        if not path.is_file():
            self.fail(f"{prog} is not built: {path} is missing (build-windows/)")
        return ["wine", str(path)]

    def start_win(self, prog, *args) -> e2e.Proc:
        p = e2e.Proc([*self.win(prog), *map(str, args)], self._tmp, env=WINE_ENV, name=prog)
        self._procs.append(p)
        return p

    def win_server(self, prog, *args) -> e2e.Proc:
        p = self.start_win(prog, *args, HOST, "0")
        p.wait_listening(timeout=WINE_TIMEOUT)
        return p

    def run_win(self, prog, *args, input=None):
        rc, out, err, _ = self.run_prog(self.win(prog), *args, input=input, timeout=WINE_TIMEOUT,
                                        env=WINE_ENV)
        return rc, lines(out), lines(err)


class TestAppAcrossSystems(Wine):
    REQUESTS = [("search", "morpheus"), ("search", "nosuchkey"), ("double", "42"),
                ("search", "\U0001f436"), ("search", "ring")]

    def test_app_server_exe_answers_the_linux_client_and_the_guides(self):
        srv = self.win_server("app-server.exe")
        peer = self.peer_server()
        for a, v in self.REQUESTS:
            with self.subTest(action=a, value=v):
                rc1, ours, err1, _ = self.run_prog("app-client", HOST, srv.port, a, v)
                rc2, theirs, err2, _ = self.run_peer("client", HOST, peer.port, a, v)
                rc3, guides, err3, _ = self.run_peer("client", HOST, srv.port, a, v)
                self.assertEqual((rc1, rc2, rc3), (0, 0, 0), err1 + err2 + err3)
                self.assertEqual(ours, theirs)
                self.assertEqual(guides, theirs)
        # The raw reply, byte for byte (the byte order is the one the program runs on).
        c = self.client(srv.port)
        c.send(guide_peer.build_request("search", "morpheus"))
        self.assertEqual(c.read_bytes(len(reply_for("search", "morpheus"))),
                         reply_for("search", "morpheus"))

    def test_app_client_exe_against_the_linux_server_and_the_guides(self):
        srv = self.app_server()
        peer = self.peer_server()
        for a, v in self.REQUESTS:
            with self.subTest(action=a, value=v):
                rc1, ours, err1 = self.run_win("app-client.exe", HOST, srv.port, a, v)
                rc2, native, err2, _ = self.run_prog("app-client", HOST, srv.port, a, v)
                rc3, guides, err3 = self.run_win("app-client.exe", HOST, peer.port, a, v)
                self.assertEqual((rc1, rc2, rc3), (0, 0, 0), err1 + err2 + err3)
                self.assertEqual(ours, native)
                self.assertEqual(guides, native)

    def test_app_client_exe_sends_each_line_of_its_input(self):
        srv = self.app_server()
        text = "".join(f"search {k}\n" for k in ("morpheus", "ring", "nosuchkey")) * 20
        rc, out, err = self.run_win("app-client.exe", HOST, srv.port, "-", input=text.encode())
        rc2, native, err2, _ = self.run_prog("app-client", HOST, srv.port, "-",
                                             input=text.encode())
        self.assertEqual((rc, rc2), (0, 0), err + err2)
        self.assertEqual(out, native)
        self.assertEqual(out.count("\n"), 60)

    def test_app_server_exe_drains_on_ctrl_c(self):
        srv = self.win_server("app-server.exe")
        self.assert_served(srv.port)
        # Wine turns SIGINT into the console's Ctrl-C event for the program.
        srv.signal(signal.SIGINT)
        rc = srv.wait(e2e.EVENT_TIMEOUT)
        self.assertEqual(rc, 0, srv.exit_report(rc))
        self.assertIn("interrupted", srv.stderr())


class TestAppmsgAcrossSystems(Wine):
    def test_appmsg_exe_calls_and_describes_the_linux_services(self):
        kv = self.start_server("kv-server")
        ep = f"127.0.0.1:{kv.port}"
        rc, out, err = self.run_win("appmsg.exe", "call", ep, "set", "key=a", "value:=[1, 2]")
        self.assertEqual((rc, out), (0, "OK\n"), err)
        rc, out, err = self.run_win("appmsg.exe", "call", ep, "--json", "get", "key=a")
        self.assertEqual((rc, out), (0, '{"result":[1,2]}\n'), err)
        rc, out, err = self.run_win("appmsg.exe", "call", ep, "get", "key=none")
        self.assertEqual(rc, 3, out + err)
        self.assertIn("NOT_FOUND", err)
        rc, out, err = self.run_win("appmsg.exe", "describe", ep, "--names")
        self.assertEqual((rc, out.split()),
                         (0, ["delete", "describe", "get", "keys", "ping", "set", "status"]), err)
        # The prompt without libedit, from a pipe: the same answers, in order.
        rc, out, err = self.run_win("appmsg.exe", "prompt", ep,
                                    input=b"get key=a\nping\nget key=none\n")
        self.assertEqual(rc, 3, err)
        self.assertEqual(out.splitlines()[-2:], ["pong", "NOT_FOUND: no such key."])
        app = self.app_server()
        rc, out, err = self.run_win("appmsg.exe", "describe", f"127.0.0.1:{app.port}")
        self.assertEqual(rc, 0, err)
        self.assertIn("search value=TEXT -> string", out)
        rc, out, err = self.run_win("appmsg.exe", "call", f"127.0.0.1:{app.port}", "search",
                                    "value=morpheus")
        native = self.run_prog("appmsg", "call", f"127.0.0.1:{app.port}", "search",
                               "value=morpheus")
        self.assertEqual((rc, out), (0, native[1]), err)


class TestTlsAcrossSystems(Wine):
    """TLS (OpenSSL cross-built for Windows) between the systems, mutual TLS included."""

    def setUp(self):
        super().setUp()
        self.certs = Path(self._tmp) / "tls"
        subprocess.run(["sh", str(SRC_DIR / "tests" / "tls" / "make_certs.sh"), str(self.certs)],
                       check=True, timeout=60)

    def pem(self, name) -> str:
        return str(self.certs / name)

    def test_tls_both_ways_with_client_certificates(self):
        mutual = ["--tls-cert", self.pem("server.pem"), "--tls-key", self.pem("server.key"),
                  "--tls-client-ca", self.pem("ca.pem")]
        client = ["--tls", "--tls-ca", self.pem("ca.pem"), "--tls-cert", self.pem("client.pem"),
                  "--tls-key", self.pem("client.key")]
        want = "Follow the white rabbit. \U0001f430\n"
        srv = self.win_server("app-server.exe", *mutual)
        rc, out, err, _ = self.run_prog("app-client", *client, HOST, srv.port, "search",
                                        "morpheus")
        self.assertEqual((rc, out), (0, want), err)
        srv = self.start_server("app-server", *mutual)
        rc, out, err = self.run_win("app-client.exe", *client, HOST, srv.port, "search",
                                    "morpheus")
        self.assertEqual((rc, out), (0, want), err)
        # Without its certificate the Windows client is refused, and says so.
        rc, out, err = self.run_win("app-client.exe", "--tls", "--tls-ca", self.pem("ca.pem"),
                                    HOST, srv.port, "search", "morpheus")
        self.assertNotEqual(rc, 0, out)


class TestPairsAcrossSystems(Wine):
    def test_echo_both_ways(self):
        srv = self.win_server("echo-server.exe")
        rc, out, err, _ = self.run_prog("echo-client", HOST, srv.port)
        self.assertEqual((rc, out), (0, "Received b'Hello, world'\n"), err)
        self.assert_exits_zero(srv, timeout=WINE_TIMEOUT)
        srv = self.start_server("echo-server")
        rc, out, err = self.run_win("echo-client.exe", HOST, srv.port)
        self.assertEqual((rc, out), (0, "Received b'Hello, world'\n"), err)
        self.assert_exits_zero(srv)

    def test_multiconn_both_ways(self):
        srv = self.win_server("multiconn-server.exe")
        rc, out, err, _ = self.run_prog("multiconn-client", "--timeout", "20", HOST, srv.port, 10)
        self.check_mc(rc, out, err, 10)
        srv = self.start_server("multiconn-server")
        rc, out, err = self.run_win("multiconn-client.exe", "--timeout", "20", HOST, srv.port, 10)
        self.check_mc(rc, out, err, 10)

    def check_mc(self, rc, out, err, n):
        self.assertEqual(rc, 0, err)
        got = e2e.parse_mc_output(out)
        self.assertEqual(sorted(got), list(range(1, n + 1)), out)
        for cid, data in got.items():
            self.assertEqual(data, e2e.MC_EXPECTED, f"connection {cid}")

    def test_kv_both_ways(self):
        srv = self.win_server("kv-server.exe")
        for argv in (["set", "k", "v1"], ["get", "k"]):
            rc, out, err, _ = self.run_prog("kv-client", HOST, srv.port, *argv)
            self.assertEqual(rc, 0, err)
        self.assertIn("v1", out)
        srv = self.start_server("kv-server")
        for argv in (["set", "k", "v2"], ["get", "k"]):
            rc, out, err = self.run_win("kv-client.exe", HOST, srv.port, *argv)
            self.assertEqual(rc, 0, err)
        self.assertIn("v2", out)


if __name__ == "__main__":
    unittest.main()
