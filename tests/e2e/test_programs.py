"""End-to-end tests of the example programs (app-server, app-client, echo-*, multiconn-*).

Every test starts the real programs on 127.0.0.1 and talks to them over TCP, with timeouts
everywhere: no test can hang, and every process a test starts is stopped in tearDown (SIGTERM,
then SIGKILL).  A sanitizer report ("ERROR: AddressSanitizer", "runtime error:", and for the
servers "ERROR: LeakSanitizer") in any program's stderr fails the test that ran it.

Environment:
    APPMSG_BIN_DIR       the built programs (default <repo>/build/examples)
    APPMSG_SOURCE_DIR    the source tree (default: two levels above this file)
    APPMSG_LOOP_BACKEND  passed through to the programs (epoll or poll)

Run:  python3 -m unittest -v test_programs      (from tests/e2e)
"""

import ast
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_DIR = Path(os.environ.get("APPMSG_SOURCE_DIR") or HERE.parents[1])
BIN_DIR = Path(os.environ.get("APPMSG_BIN_DIR") or SRC_DIR / "build" / "examples")
PEER = SRC_DIR / "tests" / "peers" / "guide_peer.py"
VECTORS = SRC_DIR / "proto" / "vectors"

sys.dont_write_bytecode = True      # no __pycache__ in the source tree
sys.path.insert(0, str(SRC_DIR / "proto" / "tools"))
sys.path.insert(0, str(SRC_DIR / "tests" / "peers"))
import appmsg_ref  # noqa: E402
import guide_peer  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 30.0      # a program must say "listening on" within this (ASan builds are slow)
IO_TIMEOUT = 10.0         # any single wait for bytes
RUN_TIMEOUT = 30.0        # a client program must finish within this
EVENT_TIMEOUT = 30.0      # any wait for a state (a log line, a descriptor count, a socket queue)
# Every wait above ends as soon as its event comes; the bound is reached only when it never does.
CLIENT_DEFAULT_TIMEOUT = 10.0   # app-client's and multiconn-client's --timeout default
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:",
                     # valgrind's memcheck (see APPMSG_WRAPPER)
                     "Invalid read of size", "Invalid write of size", "Invalid free",
                     "Conditional jump or move depends on uninitialised",
                     "Use of uninitialised value", "definitely lost in")
# APPMSG_WRAPPER runs every program of the project under a tool, e.g.
#   APPMSG_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite"
WRAPPER = shlex.split(os.environ.get("APPMSG_WRAPPER", ""))
# Leaks are checked only for the background programs (servers), which all end through their normal
# shutdown path here; a one-shot run that fails at start-up may leave a trivial leak behind, and
# LeakSanitizer's conservative stack scan makes such reports come and go.
SERVER_SANITIZER_MARKERS = SANITIZER_MARKERS + ("ERROR: LeakSanitizer",)
LISTENING_RE = re.compile(r"listening on (\S+):(\d+)", re.IGNORECASE)

GUIDE_NAMES = ("search-morpheus", "search-dog", "search-nomatch", "binary-double42",
               "invalid-action")
MC_EXPECTED = b"Message 1 from client.Message 2 from client."
DATASET = guide_peer.REQUEST_SEARCH


# --------------------------------------------------------------------------------------------------
# Helpers


def _vec_hex(path: Path) -> bytes:
    """The bytes of a guide vector: its `hex` lines (the only stream directive they use)."""
    out = bytearray()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("hex "):
            out += bytes.fromhex(line[4:].replace(" ", ""))
    return bytes(out)


def load_guide_frames():
    """{name: (request bytes, response bytes)}: the guide's recorded frames, proto/vectors/guide.
    They are part of the repository; a missing one is an error, not a reason to skip."""
    frames = {}
    for name in GUIDE_NAMES:
        req_v = VECTORS / "guide" / f"{name}.request.vec"
        resp_v = VECTORS / "guide" / f"{name}.response.vec"
        frames[name] = (_vec_hex(req_v), _vec_hex(resp_v))
        if not (frames[name][0] and frames[name][1]):
            raise RuntimeError(f"{req_v} or {resp_v} holds no bytes")
    return frames


GUIDE_FRAMES = load_guide_frames()


def free_port() -> int:
    """A loopback port that was free a moment ago, for a program that cannot listen on port 0
    and say where (another process may take it in between: prefer port 0 and the program's
    "listening on" line)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(cond, what, timeout=EVENT_TIMEOUT):
    """Polls cond() until it is true; fails with `what` if it is not within timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.01)


def open_fds(pid) -> int:
    """How many descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_queues(local, remote):
    """(unacknowledged bytes sent, unread bytes received) of the loopback TCP socket from
    local = (host, port) to remote, as `ss` shows them (Send-Q, Recv-Q), from /proc/net/tcp;
    None when there is no such socket."""
    def hexaddr(addr):
        return "%s:%04X" % (socket.inet_aton(addr[0])[::-1].hex().upper(), addr[1])
    want = (hexaddr(local), hexaddr(remote))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def sent_and_read(conn):
    """Whether every byte conn sent has reached the other end and been read there: our Send-Q
    (bytes not yet acknowledged) and the peer socket's Recv-Q (bytes its owner has not read) are
    both empty."""
    mine = conn.sock.getsockname()[:2]
    theirs = conn.sock.getpeername()[:2]
    ours, peer = tcp_queues(mine, theirs), tcp_queues(theirs, mine)
    return ours is not None and peer is not None and ours[0] == 0 and peer[1] == 0


def reply_for(action: str, value: str) -> bytes:
    """The exact reply bytes the guide's server sends for the guide's client's request."""
    req = guide_peer.build_request(action, value)
    return guide_peer.answer(*guide_peer.FrameReader().feed(req)[0])


def json_reply(obj) -> bytes:
    return guide_peer.encode_frame("text/json", "utf-8",
                                   json.dumps(obj, ensure_ascii=False).encode("utf-8"))


def parse_mc_output(text: str):
    """multiconn-client / mc-client stdout -> {connection id: bytes received}."""
    got = {}
    for line in text.splitlines():
        m = re.fullmatch(r"Received (b'.*'|b\".*\") from connection (\d+)", line.strip())
        if m:
            got.setdefault(int(m.group(2)), b"")
            got[int(m.group(2))] += ast.literal_eval(m.group(1))
    return got


class Proc:
    """A program running in the background, its stdout/stderr in files (no pipe can fill up)."""

    def __init__(self, argv, tmpdir, env=None, name=None):
        self.argv = [str(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        stem = f"{self.name}-{id(self)}"
        self.out_path = Path(tmpdir) / f"{stem}.out"
        self.err_path = Path(tmpdir) / f"{stem}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      env=env)
        self.port = None
        self.listen_line = ""
        self.signals_sent = {}      # signal number -> how many times this test sent it

    @property
    def pid(self):
        return self.p.pid

    def stdout(self) -> str:
        return self.out_path.read_bytes().decode("utf-8", "replace")

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def poll(self):
        return self.p.poll()

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        if self.p.poll() is None:
            self.signals_sent[sig] = self.signals_sent.get(sig, 0) + 1
            self.p.send_signal(sig)

    def exit_report(self, rc) -> str:
        """What to say about an exit status that is not 0: a signal nobody here sent is named."""
        if rc is None:
            return f"{self.name} is still running; stderr:\n{self.stderr()}"
        if rc < 0:
            # A server handles the first SIGTERM/SIGINT and dies of a second one while it drains:
            # killed with a count of 1 here means the other came from outside the test.
            sent = self.signals_sent.get(-rc, 0)
            return (f"{self.name} was killed by signal {-rc} ({signal.Signals(-rc).name}); this "
                    f"test sent it {sent} time(s); stderr:\n{self.stderr()}")
        return f"{self.name} exited with {rc}; stderr:\n{self.stderr()}"

    def fds(self) -> int:
        return open_fds(self.p.pid)

    def wait_log(self, pattern, what=None, timeout=EVENT_TIMEOUT):
        """Waits until stderr has a line matching the regular expression pattern."""
        rx = re.compile(pattern)
        wait_for(lambda: any(rx.search(ln) for ln in self.stderr().splitlines())
                 or self.p.poll() is not None,
                 what or f"{self.name} logs /{pattern}/; stderr:\n{self.stderr()}", timeout)
        if not any(rx.search(ln) for ln in self.stderr().splitlines()):
            raise AssertionError(f"{self.name} exited with {self.p.returncode} before logging "
                                 f"/{pattern}/; stderr:\n{self.stderr()}")

    def wait_listening(self, timeout=START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stderr().splitlines():
                m = LISTENING_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                    self.listen_line = line
                    return self.port
            if self.p.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.p.returncode} before "
                                     f"listening; stderr:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"{self.name} did not print 'listening on' within {timeout} s; "
                             f"stderr:\n{self.stderr()}")

    def stop(self, grace=15.0):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.p.kill()
                self.p.wait(10)


class Conn:
    """A test client socket with an appmsg_ref decoder."""

    def __init__(self, port, timeout=IO_TIMEOUT, rcvbuf=None, linger0=False):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if linger0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.settimeout(timeout)
        s.connect((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.linger0 = linger0
        self.timeout = timeout
        self.dec = appmsg_ref.Decoder(max_content_length=1 << 40)
        self.pending = []          # decoded outcomes not yet returned
        self.raw = bytearray()     # every byte received
        self.eof = False

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _recv_some(self, deadline) -> bool:
        """Reads once; False at end of stream (or reset)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        self.pending += self.dec.feed(data)
        return True

    def frames(self, n=1, timeout=None):
        """The next n outcomes (appmsg_ref.Message or Error)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.pending) < n:
            try:
                more = self._recv_some(deadline)
            except socket.timeout:
                raise AssertionError(f"timed out waiting for {n} frame(s), got "
                                     f"{len(self.pending)}; bytes: {bytes(self.raw[-300:])!r}")
            if not more:
                raise AssertionError(f"connection closed after {len(self.pending)} of {n} "
                                     f"frame(s); bytes: {bytes(self.raw[-300:])!r}")
        out, self.pending = self.pending[:n], self.pending[n:]
        for o in out:
            if isinstance(o, appmsg_ref.Error):
                raise AssertionError(f"the server sent a bad frame: {o}")
        return out

    def frame(self, timeout=None):
        return self.frames(1, timeout)[0]

    def read_bytes(self, n, timeout=None) -> bytes:
        """The first n bytes of the stream (fewer if it ends or the time runs out first)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.raw) < n and not self.eof:
            try:
                self._recv_some(deadline)
            except socket.timeout:
                break
        return bytes(self.raw[:n])

    def wait_eof(self, timeout=None) -> bytes:
        """Reads to the end of the stream; returns the bytes that came before it. Fails on timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        before = len(self.raw)
        while not self.eof:
            try:
                self._recv_some(deadline)
            except socket.timeout:
                raise AssertionError("the connection was not closed in time; got "
                                     f"{bytes(self.raw[before:])[:300]!r}")
        return bytes(self.raw[before:])

    def close(self):
        try:
            if not self.linger0:    # wakes a thread blocked sending on this socket
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def assert_no_sanitizer(test, text, who):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            test.fail(f"{who}: sanitizer report in stderr:\n{text[-6000:]}")


class E2E(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        self._tmp = tempfile.mkdtemp(prefix="appmsg-e2e-")
        self._procs = []
        self._conns = []
        self._socks = []
        self._threads = []

    def tearDown(self):
        for c in self._conns:
            c.close()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)    # also wakes a thread blocked in accept()
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        problems = []
        for p in self._procs:
            p.stop()
            err = p.stderr()
            for marker in SERVER_SANITIZER_MARKERS:
                if marker in err:
                    problems.append(f"{p.name} ({' '.join(p.argv[1:])}): sanitizer report:\n"
                                    f"{err[-6000:]}")
                    break
        for t in self._threads:
            t.join(5)
        shutil.rmtree(self._tmp, ignore_errors=True)
        if problems:
            self.fail("\n".join(problems))

    # ---- programs

    def bin(self, prog) -> Path:
        path = BIN_DIR / prog
        if not (path.is_file() and os.access(path, os.X_OK)):
            self.skipTest(f"{prog} is not built: {path} is missing")
        return path

    def start(self, prog, *args, env=None) -> Proc:
        argv = [*WRAPPER, self.bin(prog), *args] if not isinstance(prog, list) \
            else [*prog, *args]
        p = Proc(argv, self._tmp, env=env, name=None if isinstance(prog, list) else prog)
        self._procs.append(p)
        return p

    def start_server(self, prog, *args, port=0) -> Proc:
        """A server on HOST:port (0 when the program picks one), once it says it listens."""
        p = self.start(prog, *args, HOST, str(port))
        p.wait_listening()
        return p

    def app_server(self, *opts) -> Proc:
        p = self.start_server("app-server", *opts)
        backend = os.environ.get("APPMSG_LOOP_BACKEND", "").strip().lower()
        if backend:
            self.assertIn(f"{backend} loop", p.listen_line,
                          "APPMSG_LOOP_BACKEND was not honoured")
        return p

    def refused_port(self) -> int:
        """A loopback port that refuses connections: bound and not listening (the kernel answers
        with a reset), and held until tearDown so that no other process can take it meanwhile."""
        s = socket.socket()
        self._socks.append(s)
        s.bind((HOST, 0))
        return s.getsockname()[1]

    def peer(self, *args) -> Proc:
        p = self.start([sys.executable, str(PEER)], *args)
        p.name = f"guide_peer {args[0]}"
        return p

    def peer_server(self, kind="server") -> Proc:
        p = self.peer(kind, HOST, "0")
        p.wait_listening()
        return p

    def run_prog(self, prog, *args, input=None, timeout=RUN_TIMEOUT, env=None):
        """Runs a program to completion: (returncode, stdout, stderr, seconds)."""
        argv = [*WRAPPER, str(self.bin(prog)), *map(str, args)] if not isinstance(prog, list) \
            else [*prog, *map(str, args)]
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            self.fail(f"{' '.join(argv)} did not finish within {timeout} s; stderr:\n"
                      f"{(e.stderr or b'').decode('utf-8', 'replace')}")
        took = time.monotonic() - t0
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        assert_no_sanitizer(self, err, " ".join(argv))
        return r.returncode, out, err, took

    def run_peer(self, *args, timeout=RUN_TIMEOUT):
        return self.run_prog([sys.executable, str(PEER)], *args, timeout=timeout)

    def client(self, port, **kw) -> Conn:
        c = Conn(port, **kw)
        self._conns.append(c)
        return c

    def thread(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()
        return t

    # ---- assertions

    def assert_exits_zero(self, proc, timeout=EVENT_TIMEOUT):
        rc = proc.wait(timeout)
        self.assertEqual(rc, 0, proc.exit_report(rc))

    def assert_served(self, port, msg="the server no longer answers"):
        """A fresh client gets the right answer to search morpheus."""
        c = self.client(port)
        c.send(guide_peer.build_request("search", "morpheus"))
        got = c.read_bytes(len(reply_for("search", "morpheus")))
        self.assertEqual(got, reply_for("search", "morpheus"), msg)
        c.close()

    def assert_error_reply(self, m, error=None, framing=True):
        """m is a text/json error reply (PROTOCOL.md 5.2); returns its content object."""
        self.assertIsInstance(m, appmsg_ref.Message)
        self.assertEqual(m.content_type, "text/json")
        self.assertEqual(m.content_encoding, "utf-8")
        body = json.loads(m.content.decode("utf-8"))
        self.assertIsInstance(body, dict)
        self.assertIsInstance(body.get("result"), str)
        self.assertTrue(body["result"].startswith("Error"), body)
        if error is not None:
            self.assertEqual(body.get("error"), error, body)
        if error is not None and framing:
            self.assertIsInstance(body.get("offset"), int, body)
        return body


# --------------------------------------------------------------------------------------------------
# The peer itself: it must write the guide's bytes exactly


class TestGuidePeer(unittest.TestCase):
    def setUp(self):
        if sys.byteorder != "little":
            self.skipTest("the guide's frames were recorded on a little-endian machine; the peer "
                          "writes this machine's byte order")

    def test_peer_builds_guide_requests(self):
        built = {
            "search-morpheus": guide_peer.build_request("search", "morpheus"),
            "search-dog": guide_peer.build_request("search", "\U0001f436"),
            "search-nomatch": guide_peer.build_request("search", "nosuchkey"),
            "binary-double42": guide_peer.build_request("double", "42"),
            "invalid-action": guide_peer.build_json_request({"action": "delete", "value": "x"}),
        }
        for name, data in built.items():
            with self.subTest(name):
                self.assertEqual(data, GUIDE_FRAMES[name][0])

    def test_peer_answers_like_the_guide(self):
        for name, (req, resp) in GUIDE_FRAMES.items():
            with self.subTest(name):
                frames = guide_peer.FrameReader().feed(req)
                self.assertEqual(len(frames), 1)
                self.assertEqual(guide_peer.answer(*frames[0]), resp)

    def test_peer_frames_pass_the_reference_decoder(self):
        for name, (req, resp) in GUIDE_FRAMES.items():
            with self.subTest(name):
                for data in (req, resp):
                    out = appmsg_ref.decode(data)
                    self.assertEqual(len(out), 1)
                    self.assertIsInstance(out[0], appmsg_ref.Message)

    def test_peer_reader_any_split(self):
        stream = b"".join(r for r, _ in GUIDE_FRAMES.values())
        for step in (1, 2, 3, 7, 100):
            r = guide_peer.FrameReader()
            got = []
            for i in range(0, len(stream), step):
                got += r.feed(stream[i:i + step])
            self.assertEqual(len(got), len(GUIDE_FRAMES))
            self.assertFalse(r.in_frame)


# --------------------------------------------------------------------------------------------------
# app-server: answers


def skip_unless_little_endian(test):
    if sys.byteorder != "little":
        test.skipTest("the guide's frames were recorded on a little-endian machine; app-server "
                      "writes this machine's byte order")


class TestAppServerAnswers(E2E):
    def test_replies_say_this_machines_byte_order(self):
        # As the guide's server does (sys.byteorder), whatever the request said.
        srv = self.app_server()
        c = self.client(srv.port)
        other = "big" if sys.byteorder == "little" else "little"
        c.send(appmsg_ref.encode({"byteorder": other, "content-type": "text/json",
                                  "content-encoding": "utf-8"},
                                 b'{"action": "search", "value": "ring"}'))
        c.send(guide_peer.build_request("double", "1"))
        for m in c.frames(2):
            self.assertEqual(m.byteorder, sys.byteorder)

    def test_guide_frames_exact(self):
        skip_unless_little_endian(self)
        srv = self.app_server()
        for name, (req, resp) in GUIDE_FRAMES.items():
            with self.subTest(name):
                c = self.client(srv.port)
                c.send(req)
                self.assertEqual(c.read_bytes(len(resp)), resp)

    def test_guide_frames_on_one_connection(self):
        skip_unless_little_endian(self)
        srv = self.app_server()
        c = self.client(srv.port)
        reqs = b"".join(r for r, _ in GUIDE_FRAMES.values())
        resps = b"".join(r for _, r in GUIDE_FRAMES.values())
        c.send(reqs)
        self.assertEqual(c.read_bytes(len(resps)), resps)

    def test_app_client_dataset(self):
        srv = self.app_server()
        cases = [
            (("search", "morpheus"), "Follow the white rabbit. \U0001f430"),
            (("search", "ring"), "In the caves beneath the Misty Mountains. \U0001f48d"),
            (("search", "\U0001f436"), "\U0001f43e Playing ball! \U0001f3d0"),
            (("search", "nosuchkey"), "No match for 'nosuchkey'."),
            (("double", "42"), "First 10 bytes of request: double42"),
            (("delete", "x"), "First 10 bytes of request: deletex"),
            (("verylongaction", "123"), "First 10 bytes of request: verylongac"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, *args)
                self.assertEqual((rc, out), (0, expected + "\n"), err)

    def test_invalid_action_raw_frame(self):
        srv = self.app_server()
        c = self.client(srv.port)
        for action in ("delete", "", "Search", "search ", "é\"\\\t"):
            with self.subTest(action=action):
                c.send(guide_peer.build_json_request({"action": action, "value": "x"}))
                exp = json_reply({"result": f"Error: invalid action '{action}'."})
                self.assertEqual(c.read_bytes(len(c.raw) + len(exp))[-len(exp):], exp)

    def test_invalid_action_long_utf8_reply_is_valid(self):
        # A long action of multibyte characters: the reply must still be well-formed UTF-8
        # JSON (PROTOCOL.md 3) whatever the server does with the length.
        srv = self.app_server()
        c = self.client(srv.port)
        action = "a" + "\u00e9" * 300
        c.send(guide_peer.build_json_request({"action": action, "value": "x"}))
        m = c.frame()
        try:
            body = json.loads(m.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self.fail(f"the reply content is not valid UTF-8 JSON ({e}): ...{m.content[-60:]!r}")
        self.assertTrue(body["result"].startswith("Error: invalid action 'a\u00e9\u00e9"), body)

    def test_search_values_escaped_like_json_dumps(self):
        srv = self.app_server()
        c = self.client(srv.port)
        values = ["", 'a"b', "back\\slash", "tab\tnl\ncr\r", "ctl\x01\x1f\x7f", "\u00e9",
                  "\U0001f436\U0001f436", "x" * 3000, "\u2028", "/", "Morpheus", "morpheus "]
        reqs = b"".join(guide_peer.build_request("search", v) for v in values)
        exp = b"".join(reply_for("search", v) for v in values)
        c.send(reqs)
        self.assertEqual(c.read_bytes(len(exp)), exp)

    def test_request_with_extra_header_and_key_order(self):
        srv = self.app_server()
        c = self.client(srv.port)
        content = b'{"value": "ring", "action": "search", "more": [1, {"a": null}]}'
        frame = appmsg_ref.encode({"content-type": "text/json", "content-encoding": "utf-8"},
                                  content, extras={"x-request-id": 7, "nested": {"a": [1, 2]}})
        c.send(frame)
        exp = reply_for("search", "ring")
        self.assertEqual(c.read_bytes(len(exp)), exp)

    def test_ipv6_loopback(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback here")
        p = self.start("app-server", "::1", "0")
        port = p.wait_listening()
        self.assertIn("[::1]", p.listen_line)
        rc, out, err, _ = self.run_prog("app-client", "::1", port, "search", "ring")
        self.assertEqual((rc, out), (0, DATASET["ring"] + "\n"), err)

    def test_unix_socket(self):
        path = Path(self._tmp) / "app.sock"
        p = self.start("app-server", f"unix:{path}")
        p.wait_log("listening on", timeout=START_TIMEOUT)
        self.assertIn(f"listening on unix:{path}", p.stderr())
        rc, out, err, _ = self.run_prog("app-client", f"unix:{path}", "0", "search", "ring")
        self.assertEqual((rc, out), (0, DATASET["ring"] + "\n"), err)
        p.signal(signal.SIGTERM)
        self.assert_exits_zero(p)
        self.assertFalse(path.exists(), "the server left its socket file behind")

    def test_ipv6_endpoint_in_messages(self):
        rc, _, err, _ = self.run_prog("app-client", "::1", "1", "search", "x")
        self.assertEqual(rc, 1)
        self.assertIn("[::1]:1", err)

    def test_empty_binary_request(self):
        srv = self.app_server()
        c = self.client(srv.port)
        c.send(guide_peer.encode_frame("binary/custom-client-binary-type", "binary", b""))
        m = c.frame()
        self.assertEqual(m.content_type, "binary/custom-server-binary-type")
        self.assertEqual(m.content, b"First 10 bytes of request: ")


# --------------------------------------------------------------------------------------------------
# app-server: pipelining, partial writes, half-close, concurrency


class TestAppServerStreams(E2E):
    def _mixed(self, n):
        keys = list(DATASET) + ["nosuchkey"]
        out = []
        for i in range(n):
            if i % 5 == 4:
                out.append(("double", str(i)))
            elif i % 5 == 3:
                out.append(("search", f"key{i}"))
            else:
                out.append(("search", keys[i % len(keys)]))
        return out

    def test_pipelined_1000_requests_one_write(self):
        srv = self.app_server()
        c = self.client(srv.port, timeout=30)
        reqs = self._mixed(1000)
        data = b"".join(guide_peer.build_request(a, v) for a, v in reqs)
        exp = b"".join(reply_for(a, v) for a, v in reqs)
        # One write, from a thread, so that a full socket buffer cannot deadlock the test.
        self.thread(c.sock.sendall, data)
        got = c.read_bytes(len(exp), timeout=30)
        if got != exp:
            outs = appmsg_ref.decode(got)
            exps = appmsg_ref.decode(exp)
            for i, (g, e) in enumerate(zip(outs, exps)):
                if not (isinstance(g, appmsg_ref.Message) and g.content == e.content):
                    self.fail(f"reply {i} to {reqs[i]} differs: {g} vs {e}")
            self.fail(f"got {len(outs)} replies ({len(got)} bytes) of 1000 ({len(exp)} bytes)")

    def test_app_client_stdin_500_lines(self):
        srv = self.app_server()
        reqs = self._mixed(500)
        reqs[7] = ("search", "two words")
        stdin = "".join(f"{a} {v}\n" for a, v in reqs).encode("utf-8")
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "-", input=stdin)
        self.assertEqual(rc, 0, err)
        expected = []
        for a, v in reqs:
            frames = guide_peer.FrameReader().feed(reply_for(a, v))
            expected.append(guide_peer.result_text(*frames[0]))
        self.assertEqual(out.splitlines(), expected)

    def test_one_byte_writes(self):
        # Each byte is read by the server before the next is sent: 146 reads of one byte.
        srv = self.app_server()
        c = self.client(srv.port)
        req = guide_peer.build_request("search", "\U0001f436")
        for i in range(len(req)):
            c.send(req[i:i + 1])
            if i + 1 < len(req):
                wait_for(lambda: sent_and_read(c), f"the server reads byte {i}")
        exp = reply_for("search", "\U0001f436")
        self.assertEqual(c.read_bytes(len(exp)), exp)

    def test_odd_splits_of_several_frames(self):
        srv = self.app_server()
        c = self.client(srv.port)
        reqs = [("search", "morpheus"), ("double", "42"), ("search", "nope"), ("search", "ring")]
        data = b"".join(guide_peer.build_request(a, v) for a, v in reqs)
        i, step = 0, 1
        while i < len(data):
            c.send(data[i:i + step])
            i += step
            step = step % 13 + 1
            if i < len(data):
                wait_for(lambda: sent_and_read(c), f"the server reads up to byte {i}")
        exp = b"".join(reply_for(a, v) for a, v in reqs)
        self.assertEqual(c.read_bytes(len(exp)), exp)

    def test_half_close_after_request(self):
        srv = self.app_server()
        c = self.client(srv.port)
        c.send(guide_peer.build_request("search", "morpheus"))
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.wait_eof(), reply_for("search", "morpheus"))

    def test_half_close_after_pipelined_requests(self):
        srv = self.app_server()
        c = self.client(srv.port)
        reqs = self._mixed(20)
        c.send(b"".join(guide_peer.build_request(a, v) for a, v in reqs))
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.wait_eof(), b"".join(reply_for(a, v) for a, v in reqs))

    def test_100_concurrent_clients(self):
        srv = self.app_server()
        n = 100
        barrier = threading.Barrier(n, timeout=30)
        errors = []
        reqs = self._mixed(n)

        def one(i):
            try:
                c = Conn(srv.port, timeout=30)
                try:
                    barrier.wait()
                    for a, v in (reqs[i], ("search", f"conn{i}")):
                        c.send(guide_peer.build_request(a, v))
                        exp = reply_for(a, v)
                        got = c.read_bytes(len(c.raw) + len(exp))[-len(exp):]
                        if got != exp:
                            errors.append(f"client {i}: {a} {v}: got {got[-80:]!r}")
                finally:
                    c.close()
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(f"client {i}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running")
        self.assertEqual(errors, [])
        self.assert_served(srv.port)

    def test_max_conns_refuses_politely(self):
        srv = self.app_server("--max-conns", "2")
        a, b = self.client(srv.port), self.client(srv.port)
        for c in (a, b):        # both really are being served
            c.send(guide_peer.build_request("search", "ring"))
            c.frame()
        third = self.client(srv.port)
        body = self.assert_error_reply(third.frame(), "TOO_MANY_CONNS", framing=False)
        self.assertIn("Error", body["result"])
        third.wait_eof()
        a.close()
        deadline = time.monotonic() + 10
        while True:             # the slot frees once the server sees a's close
            c = Conn(srv.port)
            try:
                c.send(guide_peer.build_request("search", "ring"))
                m = c.frame()
                if m.content_type == "text/json" and b"Misty" in m.content:
                    break
            except AssertionError:
                pass
            finally:
                c.close()
            if time.monotonic() > deadline:
                self.fail("a freed slot was never reused")
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------------
# app-server: errors


class TestAppServerErrors(E2E):
    def framing_error(self, srv, data, error, reason_words=()):
        c = self.client(srv.port)
        c.send(data)
        body = self.assert_error_reply(c.frame(), error)
        for w in reason_words:
            self.assertIn(w.lower(), body["result"].lower())
        self.assertEqual(c.wait_eof(), b"", "bytes after the error reply")
        self.assert_served(srv.port)
        return body

    def test_http_request(self):
        srv = self.app_server()
        self.framing_error(srv, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "HEADER_NOT_OBJECT",
                           ("HTTP",))

    def test_tls_client_hello(self):
        srv = self.app_server()
        hello = bytes.fromhex("16030100c4010000c00303") + bytes(range(32)) + b"\x00" * 40
        self.framing_error(srv, hello, "HEADER_NOT_OBJECT", ("TLS",))

    def test_bare_json_without_prefix(self):
        srv = self.app_server()
        self.framing_error(srv, b'{"action": "search", "value": "morpheus"}', "HEADER_NOT_OBJECT",
                           ("JSON", "prefix"))

    def test_header_length_zero(self):
        srv = self.app_server()
        body = self.framing_error(srv, b"\x00\x00", "HEADER_EMPTY")
        self.assertEqual(body["offset"], 0)

    def test_framing_error_after_good_frames(self):
        srv = self.app_server()
        c = self.client(srv.port)
        c.send(guide_peer.build_request("search", "ring") + b"\x00\x00")
        m1, m2 = c.frames(2)
        self.assertIn(b"Misty", m1.content)
        body = self.assert_error_reply(m2, "HEADER_EMPTY")
        self.assertEqual(body["offset"], len(guide_peer.build_request("search", "ring")))
        self.assertEqual(c.wait_eof(), b"")

    def test_content_too_large_reply_before_content(self):
        srv = self.app_server("--max-content", "1000")
        hdr = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json",
                          "content-encoding": "utf-8", "content-length": 2000}).encode()
        c = self.client(srv.port)
        c.send(struct.pack(">H", len(hdr)) + hdr)       # and never the content
        # The content never comes: a server that waited for it would answer TIMEOUT after its
        # frame timeout, so this reply alone shows it answered on the header.
        body = self.assert_error_reply(c.frame(), "CONTENT_TOO_LARGE")
        self.assertEqual(body["offset"], 2)
        self.assertEqual(c.wait_eof(), b"")
        # At the limit is fine.
        c2 = self.client(srv.port)
        c2.send(guide_peer.encode_frame("binary/x", "binary", b"z" * 1000))
        self.assertEqual(c2.frame().content, b"First 10 bytes of request: zzzzzzzzzz")

    def test_invalid_text_json_content_keeps_connection(self):
        srv = self.app_server()
        c = self.client(srv.port)
        bad = [b"{}", b"[]", b"null", b"not JSON", b"\xff\xfe{}", b'{"action": "search"}',
               b'{"action": "search", "value": 42}', b'{"action": 1, "value": "x"}',
               b'{"action": "search", "value": "a\\u0000b"}', b"", b'{"a": 1} x',
               b'{"action": "search", "value": "ring"}  \n']
        ok = reply_for("search", "morpheus")
        for content in bad:
            with self.subTest(content=content):
                c.send(guide_peer.encode_frame("text/json", "utf-8", content))
                m = c.frame()
                if content.endswith(b"  \n"):          # trailing whitespace is valid JSON
                    self.assertIn(b"Misty", m.content)
                else:
                    self.assert_error_reply(m)
                c.send(guide_peer.build_request("search", "morpheus"))
                got = c.frame()
                self.assertEqual(appmsg_ref.encode({"content-type": got.content_type,
                                                    "content-encoding": got.content_encoding},
                                                   got.content), ok)
        self.assert_served(srv.port)

    def test_text_json_in_another_encoding(self):
        srv = self.app_server()
        c = self.client(srv.port)
        c.send(guide_peer.encode_frame("text/json", "latin-1", b'{"action": "search"}'))
        self.assert_error_reply(c.frame(), "BAD_REQUEST", framing=False)
        c.send(guide_peer.build_request("search", "ring"))
        self.assertIn(b"Misty", c.frame().content)

    def test_error_vectors(self):
        """Every invalid vector (default header limit) gets its error name and offset back."""
        vecs = sorted((VECTORS / "invalid").glob("*.vec")) + sorted((VECTORS / "valid").glob("*.vec"))
        if not vecs:
            self.skipTest("no vectors")
        servers = {}
        checked = 0
        for path in vecs:
            vec = appmsg_ref.load_vector(str(path))
            if vec.max_header_length != 65535 or vec.max_content_length > (1 << 52):
                continue
            if vec.max_content_length not in servers:
                opts = () if vec.max_content_length == appmsg_ref.DEFAULT_MAX_CONTENT_LENGTH \
                    else ("--max-content", str(vec.max_content_length))
                servers[vec.max_content_length] = self.app_server(*opts)
            srv = servers[vec.max_content_length]
            n_msgs = sum(1 for e in vec.expected if not isinstance(e, appmsg_ref.Error))
            err = [e for e in vec.expected if isinstance(e, appmsg_ref.Error)]
            with self.subTest(path.name):
                c = self.client(srv.port, timeout=15)

                def send_all(sock=c.sock, data=vec.stream):
                    try:
                        sock.sendall(data)
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                self.thread(send_all)
                rest = c.wait_eof(timeout=15)
                outs = appmsg_ref.decode(rest, max_content_length=1 << 40)
                self.assertTrue(all(isinstance(o, appmsg_ref.Message) for o in outs),
                                f"bad frame from the server: {outs}")
                self.assertEqual(len(outs), n_msgs + len(err),
                                 f"{len(outs)} replies, expected {n_msgs} + {len(err)} error")
                if err:
                    body = self.assert_error_reply(outs[-1], err[0].name)
                    self.assertEqual(body["offset"], err[0].offset, body)
                checked += 1
        self.assertGreater(checked, 100)
        for limit, srv in servers.items():
            self.assertIsNone(srv.poll(), srv.stderr())
            if limit == appmsg_ref.DEFAULT_MAX_CONTENT_LENGTH:
                self.assert_served(srv.port)

    def test_disconnect_mid_frame(self):
        srv = self.app_server()
        req = guide_peer.build_request("search", "morpheus")
        for cut in (1, 2, 50, len(req) - 1):
            c = self.client(srv.port)
            c.send(req[:cut])
            c.close()
        self.assert_served(srv.port)
        self.assertIsNone(srv.poll())

    def test_reset_right_after_request(self):
        srv = self.app_server()
        idle_fds = srv.fds()            # listening, no connection: everything is set up
        big = guide_peer.encode_frame("binary/x", "binary", b"q" * 200000)
        for i in range(20):
            c = self.client(srv.port, linger0=True)
            c.send(guide_peer.build_request("search", "morpheus") if i % 2 else big)
            c.close()                                   # RST, not FIN
        # Every reset connection has been dealt with once the server holds no more descriptors
        # than before them.
        wait_for(lambda: srv.poll() is not None or srv.fds() <= idle_fds,
                 f"the server closes the 20 reset connections (fds {srv.fds()}, {idle_fds} idle)")
        self.assertIsNone(srv.poll(), srv.stderr())
        self.assert_served(srv.port)

    def test_client_that_never_reads(self):
        # A client that pipelines but does not read must not stop others being served.
        srv = self.app_server()
        hog = self.client(srv.port, rcvbuf=4096)
        data = guide_peer.build_request("search", "ring") * 5000

        def flood():
            try:
                hog.sock.settimeout(20)
                hog.sock.sendall(data)
            except OSError:
                pass
        self.thread(flood)
        # Once the server's replies fill the hog's receive buffer, its output backs up.
        wait_for(lambda: tcp_queues(hog.sock.getsockname()[:2], hog.sock.getpeername()[:2])[1]
                 >= 2048, "the hog's receive buffer fills with replies")
        self.assert_served(srv.port)


# --------------------------------------------------------------------------------------------------
# app-server: timeouts, signals, data files, start-up


class TestAppServerLifecycle(E2E):
    # The timeouts below are 1 s; app-server's defaults are 60 s (idle) and 10 s (frame).  The
    # server starts a connection's timer after the client's t0, and timers never fire early, so
    # each close comes at least 1 s after t0; how much later depends on the machine's load, so
    # only "before the defaults could have fired" is asserted, with the log's reason.

    def assert_timed_out_in_log(self, srv, peer):
        srv.wait_log(re.escape(peer) + r".*timed out")

    def test_idle_timeout(self):
        srv = self.app_server("--idle-timeout", "1", "--frame-timeout", "1")
        t0 = time.monotonic()
        c = self.client(srv.port)
        me = "%s:%d" % c.sock.getsockname()[:2]
        self.assertEqual(c.wait_eof(timeout=EVENT_TIMEOUT), b"")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 0.99, "closed before the idle timeout")
        c.close()
        self.assert_timed_out_in_log(srv, me)
        self.assert_served(srv.port)

    def test_idle_timeout_after_a_reply(self):
        srv = self.app_server("--idle-timeout", "1", "--frame-timeout", "1")
        c = self.client(srv.port)
        me = "%s:%d" % c.sock.getsockname()[:2]
        t0 = time.monotonic()
        c.send(guide_peer.build_request("search", "ring"))
        c.frame()
        self.assertEqual(c.wait_eof(timeout=EVENT_TIMEOUT), b"")
        self.assertGreaterEqual(time.monotonic() - t0, 0.99, "closed before the idle timeout")
        c.close()
        self.assert_timed_out_in_log(srv, me)

    def test_frame_timeout(self):
        srv = self.app_server("--idle-timeout", "1", "--frame-timeout", "1")
        c = self.client(srv.port)
        t0 = time.monotonic()
        c.send(guide_peer.build_request("search", "morpheus")[:50])
        m = c.frame(timeout=EVENT_TIMEOUT)
        took = time.monotonic() - t0
        body = self.assert_error_reply(m, "TIMEOUT")
        self.assertEqual(body["offset"], 50)
        self.assertGreaterEqual(took, 0.99, "TIMEOUT before the frame timeout")
        self.assertEqual(c.wait_eof(), b"")
        self.assert_served(srv.port)

    def test_timeout_is_logged_with_peer_address(self):
        # PROTOCOL.md 5.1: every error SHOULD be logged with the peer's address.
        srv = self.app_server("--idle-timeout", "1", "--frame-timeout", "1")
        c = self.client(srv.port)
        me = "%s:%d" % c.sock.getsockname()[:2]
        c.wait_eof(timeout=EVENT_TIMEOUT)
        c.close()               # as a real client does once its connection has been closed
        srv.wait_log("timed out")
        lines = [ln for ln in srv.stderr().splitlines() if "timed out" in ln]
        self.assertTrue(lines, srv.stderr())
        self.assertIn(me, lines[0], "the timeout log line does not name the peer")

    def _signal_exits_zero(self, sig):
        srv = self.app_server()
        idle = self.client(srv.port)
        self.assert_served(srv.port)
        t0 = time.monotonic()
        srv.signal(sig)
        # The idle connection is closed at once (its write side; the server then waits for our
        # end of stream, as a real client sends when it sees the server's).
        self.assertEqual(idle.wait_eof(), b"")
        idle.close()
        self.assert_exits_zero(srv)
        self.assertLess(time.monotonic() - t0, 10,
                        "the server waited for its 10 s drain limit instead of closing at once")

    def test_sigterm_exits_zero(self):
        self._signal_exits_zero(signal.SIGTERM)

    def test_sigint_exits_zero(self):
        self._signal_exits_zero(signal.SIGINT)

    def test_sigterm_finishes_reply_in_flight(self):
        big = "x" * 4_000_000
        data = Path(self._tmp) / "big.json"
        data.write_text(json.dumps({"big": big, "small": "s"}), encoding="utf-8")
        srv = self.app_server("--data", str(data))
        c = self.client(srv.port, timeout=20, rcvbuf=8192)
        c.send(guide_peer.build_request("search", "big"))
        self.assertEqual(len(c.read_bytes(1000)), 1000)   # the reply is being sent
        srv.signal(signal.SIGTERM)
        srv.wait_log(r"finishing \d+ connection")        # the drain has begun
        c.wait_eof(timeout=20)
        self.assertEqual(bytes(c.raw), json_reply({"result": big}))
        self.assert_exits_zero(srv)

    def test_sigterm_mid_frame_request_is_answered(self):
        # A request being received when the signal comes is still read whole and answered.
        srv = self.app_server()
        c = self.client(srv.port)
        req = guide_peer.build_request("search", "ring")
        c.send(req[:60])
        wait_for(lambda: sent_and_read(c), "the server reads the first 60 bytes")
        srv.signal(signal.SIGTERM)
        srv.wait_log(r"finishing \d+ connection")        # the drain has begun, mid-frame
        c.send(req[60:])
        self.assertEqual(c.wait_eof(timeout=15), reply_for("search", "ring"))
        self.assert_exits_zero(srv)

    def test_sigterm_answers_pipelined_requests_in_flight(self):
        srv = self.app_server()
        c = self.client(srv.port)
        reqs = [("search", "morpheus"), ("double", "1"), ("search", "ring")] * 10
        c.send(b"".join(guide_peer.build_request(a, v) for a, v in reqs))
        c.frame()               # the server is working on them
        srv.signal(signal.SIGTERM)
        # Whatever the server had read gets answered whole; the stream then ends cleanly.
        rest = c.wait_eof(timeout=15)
        outs = appmsg_ref.decode(bytes(c.raw), max_content_length=1 << 30)
        self.assertTrue(all(isinstance(o, appmsg_ref.Message) for o in outs), outs[-1:])
        exp = b"".join(reply_for(a, v) for a, v in reqs)
        self.assertTrue(exp.startswith(bytes(c.raw)), f"replies differ: {rest[-100:]!r}")
        self.assert_exits_zero(srv)

    def test_data_file_100000_keys(self):
        data = {f"key{i}": f"value {i} \u2713" for i in range(100000)}
        data["\U0001f436"] = "woof"
        data["quote\"key"] = "back\\slash"
        path = Path(self._tmp) / "data.json"
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        srv = self.app_server("--data", str(path))
        self.assertIn("100002 keys", srv.listen_line)
        c = self.client(srv.port)
        keys = ["key0", "key99999", "key12345", "key100000", "morpheus", "\U0001f436",
                "quote\"key", "key5"]
        c.send(b"".join(guide_peer.build_request("search", k) for k in keys))
        exp = b"".join(json_reply({"result": data.get(k) or f"No match for '{k}'."})
                       for k in keys)
        self.assertEqual(c.read_bytes(len(exp)), exp)
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "search", "key77777")
        self.assertEqual((rc, out), (0, "value 77777 \u2713\n"), err)

    def test_bad_data_files(self):
        self.bin("app-server")
        cases = {
            "not-json": b'{"morpheus": ',
            "not-object": b'["morpheus", "x"]',
            "non-string-value": b'{"morpheus": "ok", "ring": 1}',
            "nested-value": b'{"morpheus": {"a": "b"}}',
            "invalid-utf8": b'{"morpheus": "\xff"}',
            "empty": b"",
        }
        env = dict(os.environ)
        for name, content in cases.items():
            with self.subTest(name):
                path = Path(self._tmp) / f"{name}.json"
                path.write_bytes(content)
                rc, out, err, took = self.run_prog("app-server", "--data", path, HOST, "0",
                                                   timeout=20, env=env)
                self.assertNotEqual(rc, 0, err)
                self.assertNotIn("listening on", err)
                self.assertIn(str(path), err, "the message does not name the file")
        with self.subTest("missing"):
            path = Path(self._tmp) / "no-such-file.json"
            rc, out, err, _ = self.run_prog("app-server", "--data", path, HOST, "0", timeout=20)
            self.assertNotEqual(rc, 0)
            self.assertIn(str(path), err)

    def test_port_in_use(self):
        self.bin("app-server")
        with socket.socket() as holder:
            holder.bind((HOST, 0))
            holder.listen(1)
            port = holder.getsockname()[1]
            rc, out, err, _ = self.run_prog("app-server", HOST, port, timeout=20)
        self.assertNotEqual(rc, 0)
        self.assertIn("in use", err.lower())
        self.assertIn("app-server", err)

    def test_bad_options(self):
        for args in (["--max-content"], ["--max-content", "-1"], ["--idle-timeout", "x"],
                     ["--bogus"], [HOST, "1", "extra"], ["--data"]):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("app-server", *args, timeout=20)
                self.assertEqual(rc, 2, err)
                self.assertIn("usage:", err)


# --------------------------------------------------------------------------------------------------
# app-client errors


class TestAppClient(E2E):
    def test_refused(self):
        port = self.refused_port()
        rc, out, err, _ = self.run_prog("app-client", HOST, port, "search", "morpheus")
        self.assertEqual(rc, 1)
        self.assertIn("is the server running", err)
        self.assertEqual(out, "")

    def test_missing_unix_socket_names_the_endpoint(self):
        # A connect that fails at once (here ENOENT; EADDRNOTAVAIL for ::1 on a machine without
        # IPv6) names the endpoint and the reason, as a refused TCP connect does.
        path = Path(self._tmp) / "no-server-here.sock"
        rc, out, err, _ = self.run_prog("app-client", f"unix:{path}", "0", "search", "x")
        self.assertEqual(rc, 1, err)
        self.assertIn(f"unix:{path}", err)
        self.assertNotIn("event loop failed", err)

    def test_unknown_host(self):
        rc, out, err, _ = self.run_prog("app-client", "no-such-host.invalid", "65432", "search",
                                        "x", "--timeout", "5")
        self.assertEqual(rc, 1, err)
        self.assertTrue(err.strip())

    def test_bad_usage(self):
        for args in ([], [HOST], ["search"], [HOST, "1", "search"], ["a", "b", "c", "d", "e"],
                     ["--bogus", "search", "x"], ["--timeout", "0", "search", "x"],
                     ["--timeout", "abc", "search", "x"], ["--timeout"]):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("app-client", *args)
                self.assertEqual(rc, 2, err)
                self.assertIn("usage:", err)

    def test_timeout_against_silent_server(self):
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(4)
        held = []

        def accept():
            try:
                lsock.settimeout(15)
                held.append(lsock.accept()[0])    # and say nothing
            except OSError:
                pass
        self.thread(accept)
        rc, out, err, took = self.run_prog("app-client", "--timeout", "1", HOST,
                                           lsock.getsockname()[1], "search", "morpheus",
                                           timeout=20)
        for s in held:
            self._socks.append(s)
        self.assertEqual(rc, 1, err)
        self.assertIn("timed out", err)
        self.assertGreaterEqual(took, 0.99)
        self.assertLess(took, CLIENT_DEFAULT_TIMEOUT, "--timeout 1 was not honoured")

    def test_server_closes_without_reply(self):
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(4)

        def accept_and_close():
            try:
                lsock.settimeout(15)
                s = lsock.accept()[0]
                s.recv(1000)
                s.close()
            except OSError:
                pass
        self.thread(accept_and_close)
        rc, out, err, _ = self.run_prog("app-client", HOST, lsock.getsockname()[1], "search", "x")
        self.assertEqual(rc, 1, err)

    def test_protocol_error_reply_exit_3(self):
        srv = self.app_server("--max-content", "10")
        rc, out, err, _ = self.run_prog("app-client", HOST, srv.port, "search", "morpheus")
        self.assertEqual(rc, 3, err)
        self.assertTrue(out.startswith("Error"), out)

    def garbage_reply(self):
        """app-client against a peer that answers with an HTTP response and keeps the
        connection open until the client closes it: (rc, stderr, whether the client closed)."""
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(4)
        client_closed = []

        def serve():
            try:
                lsock.settimeout(15)
                s = lsock.accept()[0]
                self._socks.append(s)
                s.settimeout(15)
                s.recv(1000)
                s.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                while s.recv(1000):
                    pass
                client_closed.append(True)
            except OSError:
                pass
        t = self.thread(serve)
        rc, out, err, _ = self.run_prog("app-client", HOST, lsock.getsockname()[1], "search", "x")
        t.join(10)
        return rc, err, bool(client_closed)

    def test_garbage_reply(self):
        rc, err, client_closed = self.garbage_reply()
        self.assertEqual(rc, 1, err)
        # It gave up on the garbage itself: neither an end of stream nor its timeout ended it.
        self.assertTrue(client_closed, err)
        self.assertNotIn("timed out", err)

    def test_garbage_reply_is_named_not_called_a_close(self):
        # A reply that is not a frame at all: app-client says what was wrong with it, not that
        # the server closed the connection (app-client closed it, after HEADER_NOT_OBJECT).
        rc, err, _ = self.garbage_reply()
        self.assertEqual(rc, 1, err)
        self.assertNotIn("closed the connection", err)
        self.assertRegex(err, r"HEADER_NOT_OBJECT|not a JSON object")


# --------------------------------------------------------------------------------------------------
# Interoperability with the independent Python peer


class TestInterop(E2E):
    REQUESTS = [("search", "morpheus"), ("search", "nosuchkey"), ("double", "42"),
                ("search", "\U0001f436"), ("search", "ring")]

    def test_app_client_against_peer_server(self):
        peer = self.peer_server()
        for a, v in self.REQUESTS:
            with self.subTest(action=a, value=v):
                rc1, ours, err1, _ = self.run_prog("app-client", HOST, peer.port, a, v)
                rc2, theirs, err2, _ = self.run_peer("client", HOST, peer.port, a, v)
                self.assertEqual(rc2, 0, err2)
                self.assertEqual(rc1, 0, err1)
                self.assertEqual(ours, theirs)
                self.assertEqual(ours, guide_peer.result_text(
                    *guide_peer.FrameReader().feed(reply_for(a, v))[0]) + "\n")

    def test_peer_client_against_app_server(self):
        peer = self.peer_server()
        srv = self.app_server()
        for a, v in self.REQUESTS + [("delete", "x")]:
            with self.subTest(action=a, value=v):
                rc1, ours, err1, _ = self.run_peer("client", HOST, srv.port, a, v)
                rc2, theirs, err2, _ = self.run_peer("client", HOST, peer.port, a, v)
                self.assertEqual((rc1, rc2), (0, 0), err1 + err2)
                self.assertEqual(ours, theirs)

    def test_app_client_stdin_single_request_to_one_shot_server(self):
        peer = self.peer_server()
        rc, out, err, _ = self.run_prog("app-client", HOST, peer.port, "-",
                                        input=b"search morpheus\n")
        self.assertEqual((rc, out), (0, "Follow the white rabbit. \U0001f430\n"), err)

    def test_app_client_stdin_two_requests_to_one_shot_server(self):
        # The guide's server answers one request, then closes: the second is never answered.
        # Whether app-client then reads an end of stream or a reset (the server closed with our
        # second request unread) is up to timing; both are the same to a user.
        peer = self.peer_server()
        rc, out, err, _ = self.run_prog("app-client", HOST, peer.port, "-",
                                        input=b"search morpheus\nsearch ring\n")
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "Follow the white rabbit. \U0001f430\n")
        self.assertIn("closed the connection after 1 of 2 answers", err)


# --------------------------------------------------------------------------------------------------
# echo


class TestEcho(E2E):
    def test_echo_pair(self):
        srv = self.start_server("echo-server")
        rc, out, err, _ = self.run_prog("echo-client", HOST, srv.port)
        self.assertEqual((rc, out), (0, "Received b'Hello, world'\n"), err)
        self.assert_exits_zero(srv)
        self.assertRegex(srv.stdout(), r"Connected by \(?'?127\.0\.0\.1'?[:,] ?\d+\)?")

    def test_echo_client_against_python_server(self):
        self.bin("echo-client")
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(1)
        seen = []

        def serve():
            try:
                lsock.settimeout(15)
                s, _ = lsock.accept()
                s.settimeout(15)
                with s:
                    while True:
                        data = s.recv(1024)
                        if not data:
                            break
                        seen.append(data)
                        s.sendall(data)
            except OSError:
                pass
        t = self.thread(serve)
        rc, out, err, _ = self.run_prog("echo-client", HOST, lsock.getsockname()[1])
        self.assertEqual((rc, out), (0, "Received b'Hello, world'\n"), err)
        t.join(10)
        self.assertEqual(b"".join(seen), b"Hello, world")

    def test_python_client_against_echo_server(self):
        srv = self.start_server("echo-server")
        c = self.client(srv.port)
        payload = b"Hello, world" + bytes(range(256)) * 40
        self.thread(c.sock.sendall, payload)
        self.assertEqual(c.read_bytes(len(payload)), payload)
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.wait_eof(), b"")
        self.assert_exits_zero(srv)

    def test_echo_client_refused(self):
        rc, out, err, _ = self.run_prog("echo-client", HOST, self.refused_port())
        self.assertEqual(rc, 1)
        self.assertIn("is the server running", err)


# --------------------------------------------------------------------------------------------------
# multiconn


class TestMulticonn(E2E):
    def check_mc(self, rc, out, err, n):
        self.assertEqual(rc, 0, err)
        got = parse_mc_output(out)
        self.assertEqual(sorted(got), list(range(1, n + 1)), out[-2000:])
        for cid, data in got.items():
            self.assertEqual(data, MC_EXPECTED, f"connection {cid}")

    def test_pair(self):
        srv = self.start_server("multiconn-server")
        for n in (1, 2, 50):
            with self.subTest(num_conns=n):
                rc, out, err, _ = self.run_prog("multiconn-client", "--timeout", "20", HOST,
                                                srv.port, n)
                self.check_mc(rc, out, err, n)
        self.assertIsNone(srv.poll())

    def test_client_against_python_server(self):
        self.bin("multiconn-client")
        peer = self.peer_server("mc-server")
        for n in (2, 50):
            with self.subTest(num_conns=n):
                rc, out, err, _ = self.run_prog("multiconn-client", "--timeout", "20", HOST,
                                                peer.port, n)
                self.check_mc(rc, out, err, n)

    def test_python_client_against_server(self):
        srv = self.start_server("multiconn-server")
        for n in (2, 50):
            with self.subTest(num_conns=n):
                rc, out, err, _ = self.run_peer("mc-client", HOST, srv.port, n)
                self.check_mc(rc, out, err, n)

    def test_server_echoes_large_and_binary(self):
        srv = self.start_server("multiconn-server")
        c = self.client(srv.port)
        payload = bytes(range(256)) * 4000
        self.thread(c.sock.sendall, payload)
        self.assertEqual(c.read_bytes(len(payload), timeout=20), payload)

    def test_server_sigterm_exits_zero(self):
        srv = self.start_server("multiconn-server")
        c = self.client(srv.port)
        c.send(b"ping")
        self.assertEqual(c.read_bytes(4), b"ping")
        srv.signal(signal.SIGTERM)
        self.assert_exits_zero(srv)

    def test_client_refused(self):
        rc, out, err, _ = self.run_prog("multiconn-client", "--timeout", "10", HOST,
                                        self.refused_port(), 2)
        self.assertEqual(rc, 1)
        self.assertIn("is the server running", err)

    def _python_server(self, handler):
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(16)
        lsock.settimeout(15)

        def serve():
            try:
                while True:
                    s, _ = lsock.accept()
                    self._socks.append(s)
                    s.settimeout(15)
                    handler(s)
            except OSError:
                pass
        self.thread(serve)
        return lsock.getsockname()[1]

    def test_client_short_echo_fails(self):
        self.bin("multiconn-client")

        def short(s):
            s.recv(1024)
            s.sendall(b"Message 1")
            s.close()
        port = self._python_server(short)
        rc, out, err, _ = self.run_prog("multiconn-client", "--timeout", "10", HOST, port, 1)
        self.assertEqual(rc, 1, err)

    def test_client_timeout_against_silent_server(self):
        self.bin("multiconn-client")
        port = self._python_server(lambda s: None)
        rc, out, err, took = self.run_prog("multiconn-client", "--timeout", "1", HOST, port, 3)
        self.assertEqual(rc, 1, err)
        self.assertGreaterEqual(took, 0.99)
        self.assertLess(took, CLIENT_DEFAULT_TIMEOUT, "--timeout 1 was not honoured")

    def test_client_bad_usage(self):
        for args in ([], [HOST], [HOST, "1"], [HOST, "1", "0"], [HOST, "1", "x"],
                     ["--timeout", "0", HOST, "1", "1"]):
            with self.subTest(args=args):
                rc, out, err, _ = self.run_prog("multiconn-client", *args)
                self.assertEqual(rc, 2, err)


# --------------------------------------------------------------------------------------------------
# Every program: -h, --version, address in use


PROGRAMS = ("app-server", "app-client", "echo-server", "echo-client", "multiconn-server",
            "multiconn-client")


class TestCommandLine(E2E):
    def test_help_and_version(self):
        for prog in PROGRAMS:
            for opt in ("-h", "--help", "--version"):
                with self.subTest(prog=prog, opt=opt):
                    if not (BIN_DIR / prog).is_file():
                        self.skipTest(f"{prog} is not built: {BIN_DIR / prog} is missing")
                    rc, out, err, _ = self.run_prog(prog, opt, timeout=15)
                    self.assertEqual(rc, 0, err)
                    if opt == "--version":
                        self.assertRegex(out, r"\d+\.\d+")
                    else:
                        self.assertTrue(out.startswith(f"usage: {prog}"), out)

    def test_servers_port_in_use(self):
        for prog in ("app-server", "echo-server", "multiconn-server"):
            with self.subTest(prog=prog):
                if not (BIN_DIR / prog).is_file():
                    self.skipTest(f"{prog} is not built")
                with socket.socket() as holder:
                    holder.bind((HOST, 0))
                    holder.listen(1)
                    rc, out, err, _ = self.run_prog(prog, HOST, holder.getsockname()[1],
                                                    timeout=15)
                self.assertNotEqual(rc, 0)
                self.assertIn("in use", err.lower())


if __name__ == "__main__":
    unittest.main()
