"""Three app-servers behind HAProxy (deploy/haproxy/appmsg.cfg), under verified load.

TestConfig: `haproxy -c` accepts the configuration, with and without its environment variables.
TestHealthCheck: the check speaks appmsg - an app-server is UP; a server that answers with some
other frame and one that never answers are DOWN; over TLS (APPMSG_CHECK_TLS_CA) the check speaks
TLS and TLS clients pass through; a server added at run time through the admin socket is checked
the same way and used.
TestFailover: three app-servers and HAProxy on free loopback ports, all started here; Python
threads send searches through HAProxy - on persistent connections with 8 requests in flight, and
one request per new connection - and check every reply (content and request-id).  Meanwhile:
  1. one app-server is killed (SIGKILL): only requests in flight on connections to it may fail;
     every connection opened after it died is answered in full; HAProxy marks it DOWN within
     3 check intervals (read from the admin socket);
  2. it is started again: HAProxy marks it UP and sends it connections, which it answers;
  3. another is stopped with SIGTERM: its drain finishes every request that reached it and it
     exits 0; no request fails; HAProxy marks it DOWN and new connections go to the others.
Which server served a connection comes from HAProxy's log (one line per connection, with the
client's port).  The counts are printed at the end.

A request left without an answer by a clean end of stream at a frame boundary is sent again on a
new connection (a search can be repeated); one cut by a reset or in the middle of a frame fails.

Run:  python3 -m unittest -v test_haproxy      (from tests/deploy; APPMSG_BIN_DIR: the programs)
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

sys.dont_write_bytecode = True

HERE = Path(__file__).resolve().parent
SRC_DIR = Path(os.environ.get("APPMSG_SOURCE_DIR") or HERE.parents[1])
BIN_DIR = Path(os.environ.get("APPMSG_BIN_DIR") or SRC_DIR / "build" / "examples")
CONFIG = SRC_DIR / "deploy" / "haproxy" / "appmsg.cfg"
HOST = "127.0.0.1"
INTER_MS = 200            # health check interval given to HAProxy (APPMSG_CHECK_INTER)
FALL = 2                  # failed checks that mark a server DOWN, as in the configuration
DEADLINE = 30.0           # the longest any single wait of this test may last
IO_TIMEOUT = 15.0         # a client waiting this long for a reply has failed
WINDOW = 8                # requests in flight on each persistent connection
PERSISTENT_WORKERS = 4
NEW_CONN_WORKERS = 2
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")
ANSWERS = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}
KEYS = list(ANSWERS)


def haproxy_path() -> str:
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if not path:
        raise AssertionError("haproxy is not installed: bash scripts/deps.sh haproxy")
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(n: int):
    """n free loopback ports below the ephemeral range (32768-60999 on Linux), so that no client
    connection of this test is given one of them as its own port while a server is restarted."""
    rng = random.Random()
    ports = []
    for _ in range(1000):
        p = rng.randrange(24000, 32000)
        if p not in ports and port_is_free(p):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise AssertionError("no free loopback ports in 24000-32000")


def request_frame(key: str, rid: int) -> bytes:
    content = json.dumps({"action": "search", "value": key}, ensure_ascii=False).encode("utf-8")
    header = ('{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", '
              f'"content-length": {len(content)}, "request-id": {rid}}}').encode("utf-8")
    return struct.pack(">H", len(header)) + header + content


class FrameReader:
    """Whole frames out of a byte stream: (header dict, content bytes)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            n = self.buf[0] << 8 | self.buf[1]
            if len(self.buf) < 2 + n:
                break
            header = json.loads(bytes(self.buf[2:2 + n]))
            end = 2 + n + header["content-length"]
            if len(self.buf) < end:
                break
            out.append((header, bytes(self.buf[2 + n:end])))
            del self.buf[:end]
        return out


def check_reply(header, content, key, rid):
    """None if the reply answers request rid (search key), else what is wrong."""
    if header.get("request-id") != rid:
        return f"reply with request-id {header.get('request-id')!r} where {rid} was due"
    try:
        got = json.loads(content)
    except ValueError:
        return f"reply content is not JSON: {content[:80]!r}"
    if got != {"result": ANSWERS[key]}:
        return f"wrong answer for {key!r}: {got!r}"
    return None


# --------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A program in the background, output in files; stopped (or killed) in teardown."""

    def __init__(self, argv, tmpdir, name, env=None, preexec_fn=None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.out_path = Path(tmpdir) / f"{name}-{id(self)}.out"
        self.err_path = Path(tmpdir) / f"{name}-{id(self)}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      env=env, preexec_fn=preexec_fn)

    def text(self, which="err") -> str:
        path = self.err_path if which == "err" else self.out_path
        return path.read_bytes().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=15.0):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.p.kill()
                self.p.wait(10)


def wait_for(what, cond, timeout=DEADLINE, interval=0.01):
    """Polls cond() until it returns something true (returned); fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Admin:
    """HAProxy's admin socket."""

    def __init__(self, path):
        self.path = str(path)

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.path)
            s.sendall(cmd.encode() + b"\n")
            data = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data.decode("utf-8", "replace")
                data += chunk

    def stat(self, everything=False):
        """{server name: {field: value}} of the appmsg_servers backend ("show stat"); with
        everything, a list of every row (frontends and backends too)."""
        lines = self.command("show stat").splitlines()
        names = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(names, line.split(","))) for line in lines[1:] if line]
        if everything:
            return rows
        return {r["svname"]: r for r in rows if r.get("pxname") == "appmsg_servers"}

    def state(self, server):
        return self.stat()[server]["status"]

    def op_state(self, server) -> int:
        """srv_op_state from "show servers state" (0: stopped, 2: running)."""
        lines = self.command("show servers state appmsg_servers").splitlines()
        names = lines[1].lstrip("# ").split()
        for line in lines[2:]:
            row = dict(zip(names, line.split()))
            if row.get("srv_name") == server:
                return int(row["srv_op_state"])
        raise AssertionError(f"{server} is not in 'show servers state'")


LOG_RE = re.compile(r"(\d+\.\d+\.\d+\.\d+):(\d+) \[(\d+/\w+/\d+:\d+:\d+:\d+)\.(\d+)\] (\S+) "
                    r"(\S+)/(\S+) (\S+) (\d+) (\S\S) (\S+) (\S+)")


def parse_log(text):
    """HAProxy's connection log lines (option tcplog): {client port: [entries]}, each entry a
    dict with accept (seconds since the epoch), server, term (two-letter end state), retries
    (a '+' in front: redispatched)."""
    out = collections.defaultdict(list)
    for m in LOG_RE.finditer(text):
        accept = time.mktime(time.strptime(m.group(3), "%d/%b/%Y:%H:%M:%S")) + \
            int(m.group(4)) / 1000
        counts = m.group(11).split("/")
        out[int(m.group(2))].append({"accept": accept, "backend": m.group(6),
                                     "server": m.group(7), "term": m.group(10),
                                     "retries": counts[4] if len(counts) == 5 else "0"})
    return out


# --------------------------------------------------------------------------------------------------
# Load


class Conn:
    """One client connection through HAProxy, as the load saw it."""

    def __init__(self, kind, worker, port, opened):
        self.kind = kind                  # "persistent" or "new"
        self.worker = worker
        self.port = port                  # the client's port: its name in HAProxy's log
        self.opened = opened              # time.time() before connect()
        self.closed = None
        self.answered = 0
        self.resent = 0                   # unanswered at a clean end of stream: sent again
        self.failed = 0                   # unanswered at a reset or in the middle of a frame
        self.end = None                   # "client" (we closed), "eof", "reset", "partial"
        self.log = None                   # its HAProxy log entry


class Load:
    """Searches through HAProxy from threads; every reply checked."""

    def __init__(self, port):
        self.port = port
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.conns = []
        self.errors = []                  # wrong replies, timeouts, refused connections
        self.answered = 0
        self.worker_answered = collections.Counter()
        self.next_id = 0
        self.threads = []

    def start(self):
        for i in range(PERSISTENT_WORKERS):
            self._thread(self.persistent, f"p{i}")
        for i in range(NEW_CONN_WORKERS):
            self._thread(self.new_conns, f"n{i}")

    def _thread(self, fn, name):
        t = threading.Thread(target=self._guard, args=(fn, name), daemon=True, name=name)
        self.threads.append(t)
        t.start()

    def _guard(self, fn, name):
        try:
            fn(name)
        except Exception as e:            # noqa: BLE001 - reported, fails the test
            self.error(f"worker {name}: {type(e).__name__}: {e}")

    def error(self, text):
        with self.lock:
            self.errors.append(text)
        self.stop_event.set()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(DEADLINE)
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            self.errors.append(f"workers still running after {DEADLINE} s: {alive}")

    def new_request(self, key=None):
        with self.lock:
            self.next_id += 1
            rid = self.next_id
        key = key if key is not None else KEYS[rid % len(KEYS)]
        return key, rid

    def answered_by(self, worker):
        with self.lock:
            return self.worker_answered[worker]

    def _open(self, kind, worker):
        opened = time.time()
        try:
            s = socket.create_connection((HOST, self.port), timeout=IO_TIMEOUT)
        except OSError as e:
            raise AssertionError(f"cannot connect to HAProxy: {e}") from e
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(kind, worker, s.getsockname()[1], opened)
        with self.lock:
            self.conns.append(c)
        return s, c

    def _run_conn(self, s, c, outstanding, more):
        """Sends what is outstanding, then reads replies; more() gives the next request, or
        None when no more are to be sent.  Returns the requests left without an answer."""
        reader = FrameReader()
        sending_ok = True
        try:
            s.sendall(b"".join(request_frame(k, r) for k, r in outstanding))
        except OSError:
            sending_ok = False            # the peer may have closed: read what it sent
        while outstanding:
            try:
                data = s.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no reply within {IO_TIMEOUT} s on port {c.port}")
            except OSError:
                c.end = "reset"
                return outstanding
            if not data:
                c.end = "partial" if reader.buf else "eof"
                return outstanding
            fresh = []
            frames = reader.feed(data)
            for header, content in frames:
                key, rid = outstanding.popleft()
                why = check_reply(header, content, key, rid)
                if why:
                    raise AssertionError(f"port {c.port}: {why}")
                nxt = more()
                if nxt is not None:
                    fresh.append(nxt)
            c.answered += len(frames)
            with self.lock:
                self.answered += len(frames)
                self.worker_answered[c.worker] += len(frames)
            if fresh:
                outstanding.extend(fresh)     # if they cannot be sent, they stay unanswered
                if sending_ok:
                    try:
                        s.sendall(b"".join(request_frame(k, r) for k, r in fresh))
                    except OSError:
                        sending_ok = False
        c.end = "client"
        return outstanding

    def _finish(self, s, c, left):
        c.closed = time.time()
        s.close()
        if left and c.end == "eof":
            c.resent = len(left)
            return list(left)             # sent again on the next connection
        c.failed = len(left)
        return []

    def _worker(self, name, kind, first_requests, more):
        again, resends = [], 0
        while not self.stop_event.is_set() or again:
            resends = resends + 1 if again else 0
            if resends > 5:
                raise AssertionError(f"{len(again)} requests unanswered on 5 connections in a row")
            s, c = self._open(kind, name)
            s.settimeout(IO_TIMEOUT)
            outstanding = collections.deque(again or first_requests())
            again = self._finish(s, c, self._run_conn(s, c, outstanding, more))

    def persistent(self, name):
        """One connection at a time, WINDOW requests in flight; a new one when it ends."""
        self._worker(name, "persistent", lambda: [self.new_request() for _ in range(WINDOW)],
                     lambda: None if self.stop_event.is_set() else self.new_request())

    def new_conns(self, name):
        """One request per connection, the connection closed after its reply."""
        self._worker(name, "new", lambda: [self.new_request()], lambda: None)


# --------------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """Three app-servers and HAProxy, on loopback ports picked here."""

    def __init__(self, test, tmpdir):
        self.test = test
        self.tmp = Path(tmpdir)
        self.procs = []
        self.servers = {}                 # name -> Proc
        self.ports = {}                   # name -> port
        self.haproxy = None
        self.admin = Admin(self.tmp / "admin.sock")
        self.log_path = None

    def app_server(self, name, port, *opts):
        app = BIN_DIR / "app-server"
        if not (app.is_file() and os.access(app, os.X_OK)):
            raise AssertionError(f"app-server is not built: {app} is missing")
        p = Proc([app, *opts, HOST, str(port)], self.tmp, name)
        self.procs.append(p)
        wait_for(f"{name} to listen on {port}",
                 lambda: "listening on" in p.text() or not p.alive())
        if not p.alive():
            raise AssertionError(f"{name} exited with {p.p.returncode}:\n{p.text()}")
        self.servers[name] = p
        self.ports[name] = port
        return p

    def start(self, servers, extra_env=None):
        """servers: {name: port}, where app1..app3 of the configuration are."""
        for attempt in range(3):
            listen = pick_ports(1)[0]
            env = dict(os.environ)
            env.update({
                "APPMSG_LISTEN": f"{HOST}:{listen}",
                "APPMSG_CHECK_INTER": f"{INTER_MS}ms",
                "APPMSG_HAPROXY_SOCKET": str(self.admin.path),
                "APPMSG_HAPROXY_LOG": "stdout",
            })
            for i, (name, port) in enumerate(servers.items(), 1):
                env[f"APPMSG_SERVER{i}"] = f"{HOST}:{port}"
            env.update(extra_env or {})
            # On one CPU HAProxy runs one thread (it starts one per CPU it may use): with more,
            # a log line is dropped when two threads want to write one at the same moment, and
            # this test reads every connection's line.
            cpu = min(os.sched_getaffinity(0))
            p = Proc([haproxy_path(), "-db", "-f", CONFIG], self.tmp, "haproxy", env=env,
                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
            self.procs.append(p)
            try:
                wait_for("HAProxy's admin socket", lambda: self._admin_ready() or not p.alive())
            except AssertionError:
                raise AssertionError(f"HAProxy did not start:\n{p.text()}")
            if p.alive():
                self.haproxy = p
                self.listen_port = listen
                self.log_path = p.out_path
                return
            if attempt == 2 or "bind" not in p.text().lower():
                raise AssertionError(f"HAProxy exited with {p.p.returncode}:\n{p.text()}")

    def _admin_ready(self):
        try:
            return "appmsg_servers" in self.admin.command("show stat")
        except OSError:
            return False

    def wait_state(self, server, state, timeout=DEADLINE):
        t0 = time.monotonic()
        wait_for(f"HAProxy to mark {server} {state}",
                 lambda: self.admin.state(server) == state, timeout=timeout, interval=0.005)
        return time.monotonic() - t0

    def log_text(self):
        return self.log_path.read_bytes().decode("utf-8", "replace") if self.log_path else ""

    def stop(self):
        problems = []
        for p in self.procs:
            p.stop()
            if p.name.startswith("app"):
                err = p.text()
                if any(m in err for m in SANITIZER_MARKERS):
                    problems.append(f"{p.name}: sanitizer report:\n{err[-4000:]}")
        return problems


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="appmsg-deploy-")
        self.cluster = Cluster(self, self.tmp)

    def tearDown(self):
        problems = self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            self.fail("\n".join(problems))


# --------------------------------------------------------------------------------------------------
# Tests


class TestConfig(unittest.TestCase):
    def check(self, env_extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPMSG_")}
        env.update(env_extra)
        r = subprocess.run([haproxy_path(), "-c", "-f", str(CONFIG)], capture_output=True,
                           env=env, timeout=60)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("Configuration file is valid", out)
        self.assertNotIn("[WARNING]", out)
        self.assertNotIn("[ALERT]", out)

    def test_valid_with_its_defaults(self):
        self.check({})

    def test_valid_with_every_variable_set(self):
        with tempfile.TemporaryDirectory(prefix="appmsg-deploy-") as tmp:
            self.check({"APPMSG_LISTEN": "127.0.0.1:24999", "APPMSG_SERVER1": "127.0.0.1:25001",
                        "APPMSG_SERVER2": "127.0.0.1:25002", "APPMSG_SERVER3": "[::1]:25003",
                        "APPMSG_CHECK_INTER": "200ms",
                        "APPMSG_HAPROXY_SOCKET": f"{tmp}/admin.sock",
                        "APPMSG_HAPROXY_LOG": "stdout", "APPMSG_HAPROXY_STATS": "127.0.0.1:24998"})

    def test_the_health_check_sends_a_ping_frame(self):
        """The bytes of the send-binary lines are one ping request frame, exactly."""
        text = CONFIG.read_text(encoding="utf-8")
        sent = bytes.fromhex("".join(re.findall(r"^\s*tcp-check send-binary (\S+)", text, re.M)))
        n = sent[0] << 8 | sent[1]
        header = json.loads(sent[2:2 + n])
        self.assertEqual(header, {"byteorder": "little", "content-type": "text/json",
                                  "content-encoding": "utf-8", "content-length": len(sent) - 2 - n})
        self.assertEqual(json.loads(sent[2 + n:]), {"action": "ping"})
        pong = re.findall(r"^\s*tcp-check expect .*binary (\S+)$", text, re.M)[-1]
        self.assertEqual(json.loads(bytes.fromhex(pong)), {"result": "pong"})


class TestHealthCheck(ClusterTest):
    def test_only_an_appmsg_server_that_answers_pong_is_up(self):
        """app1: app-server (UP).  app2: the guide's Python server, whose reply to ping is an
        error frame (DOWN: no pong).  app3: a socket that accepts and never answers (DOWN when the
        check times out)."""
        p1, p2, p3 = pick_ports(3)
        self.cluster.app_server("app1", p1)
        guide = Proc([sys.executable, SRC_DIR / "tests" / "peers" / "guide_peer.py", "server",
                      HOST, str(p2)], self.tmp, "guide")
        self.cluster.procs.append(guide)
        wait_for("the guide server to listen", lambda: not port_is_free(p2) or not guide.alive())
        self.assertTrue(guide.alive(), guide.text())
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind((HOST, p3))
        silent.listen(64)                 # the kernel accepts; nobody reads or answers
        self.cluster.start({"app1": p1, "app2": p2, "app3": p3})
        self.cluster.wait_state("app1", "UP")
        self.cluster.wait_state("app2", "DOWN")
        self.cluster.wait_state("app3", "DOWN")
        stat = self.cluster.admin.stat()
        self.assertEqual(stat["app1"]["check_status"], "L7OK")
        self.assertIn("no pong", self.cluster.admin.command("show stat"))
        self.assertEqual(stat["app3"]["check_status"], "L7TOUT")
        # And through HAProxy, a client is answered by app1.
        s = socket.create_connection((HOST, self.cluster.listen_port), timeout=IO_TIMEOUT)
        with s:
            s.sendall(request_frame("ring", 1))
            reader, frames = FrameReader(), []
            while not frames:
                data = s.recv(65536)
                self.assertTrue(data, "HAProxy closed the connection without a reply")
                frames = reader.feed(data)
            self.assertIsNone(check_reply(*frames[0], "ring", 1))


    def test_app_servers_over_tls(self):
        """APPMSG_CHECK_TLS_CA: the check speaks TLS (an app-server over TLS is UP, a plaintext one
        DOWN), and a TLS client is answered through HAProxy, which passes TLS through."""
        certs = Path(self.tmp) / "certs"
        r = subprocess.run(["bash", str(SRC_DIR / "tests" / "tls" / "make_certs.sh"), str(certs)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        p1, p2, p3 = pick_ports(3)
        self.cluster.app_server("app1", p1, "--tls-cert", certs / "server.pem",
                                "--tls-key", certs / "server.key")
        self.cluster.app_server("app2", p2)
        self.cluster.start({"app1": p1, "app2": p2, "app3": p3},
                           extra_env={"APPMSG_CHECK_TLS_CA": str(certs / "ca.pem")})
        self.cluster.wait_state("app1", "UP")
        self.cluster.wait_state("app2", "DOWN")
        self.cluster.wait_state("app3", "DOWN")
        self.assertEqual(self.cluster.admin.stat()["app1"]["check_status"], "L7OK")
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        raw = socket.create_connection((HOST, self.cluster.listen_port), timeout=IO_TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(request_frame("\U0001f436", 7))
            reader, frames = FrameReader(), []
            while not frames:
                data = s.recv(65536)
                self.assertTrue(data, "HAProxy closed the connection without a reply")
                frames = reader.feed(data)
            self.assertIsNone(check_reply(*frames[0], "\U0001f436", 7))

    def test_a_server_added_at_run_time(self):
        """A server added through the admin socket (as the README shows) is checked with the same
        ping, marked UP, and given connections."""
        p1, p2, p3, p4 = pick_ports(4)
        self.cluster.app_server("app1", p1)
        self.cluster.app_server("app4", p4)
        self.cluster.start({"app1": p1, "app2": p2, "app3": p3})   # app2, app3: nothing there
        admin = self.cluster.admin
        for cmd in (f"add server appmsg_servers/app4 {HOST}:{p4} check inter {INTER_MS}ms "
                    "fall 2 rise 2", "enable health appmsg_servers/app4",
                    "enable server appmsg_servers/app4"):
            out = admin.command(cmd).strip()
            self.assertIn(out, ("", "New server registered."), cmd)
        self.cluster.wait_state("app4", "UP")
        self.assertEqual(admin.stat()["app4"]["check_status"], "L7OK")

        def app4_used():
            with socket.create_connection((HOST, self.cluster.listen_port), timeout=IO_TIMEOUT) as s:
                s.sendall(request_frame("morpheus", 1))
                reader, frames = FrameReader(), []
                while not frames:
                    data = s.recv(65536)
                    self.assertTrue(data, "HAProxy closed the connection without a reply")
                    frames = reader.feed(data)
                self.assertIsNone(check_reply(*frames[0], "morpheus", 1))
            return int(admin.stat()["app4"]["stot"]) > 0

        wait_for("a connection to reach app4", app4_used)


class TestFailover(ClusterTest):
    def test_kill_restart_and_drain_under_load(self):
        c = self.cluster
        ports = dict(zip(("app1", "app2", "app3"), pick_ports(3)))
        opts = {"app1": [], "app2": [], "app3": ["--threads", "2"]}   # one on two threads
        for name, port in ports.items():
            c.app_server(name, port, *opts[name])
        c.start(ports)
        for name in ports:
            c.wait_state(name, "UP")
        load = Load(c.listen_port)
        self.addCleanup(load.stop)
        load.start()
        report = {}               # what the summary prints

        def progress(what, count=1000):
            """Waits until count more requests are answered and every persistent worker has been
            answered since (so each has reconnected if its connection ended)."""
            base = load.answered
            per = {f"p{i}": load.answered_by(f"p{i}") for i in range(PERSISTENT_WORKERS)}
            wait_for(what, lambda: load.errors or (
                load.answered >= base + count and
                all(load.answered_by(w) > n for w, n in per.items())))
            self.assertEqual(load.errors, [], "\n".join(load.errors))

        def stot(name):
            return int(c.admin.stat()[name]["stot"])

        # Warm: every server has had connections, and requests are being answered.
        wait_for("every server to be given connections",
                 lambda: load.errors or all(stot(n) > 0 for n in ports))
        progress("the load to get going")

        # 1. SIGKILL the server with the most connections open right now.
        t = {}                            # when things happened (time.time())
        stat = c.admin.stat()
        victim = max(ports, key=lambda n: int(stat[n]["scur"]))
        report["killed_open_conns"] = int(stat[victim]["scur"])
        chkfail0 = int(stat[victim]["chkfail"])
        t["kill"] = time.time()
        c.servers[victim].p.kill()
        c.servers[victim].p.wait(DEADLINE)
        t["reaped"] = time.time()         # from here on, nothing listens on its port
        report["down_after_s"] = c.wait_state(victim, "DOWN")
        t["down"] = time.time()
        self.assertEqual(c.admin.op_state(victim), 0)
        report["down_failed_checks"] = int(c.admin.stat()[victim]["chkfail"]) - chkfail0
        progress("the load to go on without the killed server")

        # 2. Start it again on its port: UP, and given connections that it answers.
        t["restart"] = time.time()
        c.app_server(victim, ports[victim], *opts[victim])
        report["up_after_s"] = c.wait_state(victim, "UP")
        before = stot(victim)
        wait_for(f"{victim} to be given connections again",
                 lambda: load.errors or stot(victim) >= before + 5)
        progress("the load to go on with the restarted server")

        # 3. SIGTERM another server that has connections: it drains and exits 0.
        stat = c.admin.stat()
        drained = max((n for n in ports if n != victim), key=lambda n: int(stat[n]["scur"]))
        report["drained_open_conns"] = int(stat[drained]["scur"])
        t["term"] = time.time()
        c.servers[drained].p.send_signal(signal.SIGTERM)
        rc = c.servers[drained].wait(DEADLINE)
        t["exited"] = time.time()
        self.assertEqual(rc, 0, f"{drained} after SIGTERM:\n{c.servers[drained].text()}")
        c.wait_state(drained, "DOWN")
        t["drain_down"] = time.time()
        remaining = [n for n in ports if n != drained]
        before = {n: stot(n) for n in remaining}
        progress("the load to go on without the drained server")
        # Together, not each: leastconn gives every new connection to the server with the
        # fewest open, which may be the same one for as long as the persistent connections
        # stay unevenly spread.
        wait_for("the other servers to take the drained one's connections",
                 lambda: sum(stot(n) for n in remaining) > sum(before.values()))

        load.stop()
        self.assertEqual(load.errors, [], "\n".join(load.errors))
        self.attach_log(load)

        # Requests went unanswered only on connections to the killed server that were open
        # when it died, and on the drained server's connections - and none of those failed:
        # the drain answered every request that reached it.
        bad = []
        for conn in load.conns:
            server = conn.log["server"]
            if not (conn.failed or conn.resent):
                continue
            if server == victim and conn.opened < t["reaped"] and conn.closed >= t["kill"]:
                continue
            if server == drained and conn.failed == 0 and conn.closed >= t["term"]:
                continue
            bad.append(f"{conn.kind} connection from port {conn.port} to {server}, opened "
                       f"{conn.opened - t['kill']:+.3f} s from the kill: {conn.answered} answered, "
                       f"{conn.failed} failed, {conn.resent} sent again, end {conn.end}, "
                       f"HAProxy end state {conn.log['term']}")
        self.assertEqual(bad, [], "requests unanswered where none may be")
        # Once the drained server had exited, no connection went to it.
        late = [conn.port for conn in load.conns
                if conn.opened > t["exited"] and conn.log["server"] == drained]
        self.assertEqual(late, [], "connections sent to the drained server after it exited")
        # The restarted server answered connections.
        served = [conn for conn in load.conns
                  if conn.log["server"] == victim and conn.opened > t["restart"] and conn.answered]
        self.assertTrue(served, "the restarted server answered nothing")
        # DOWN within 3 check intervals of the kill, after FALL failed checks.
        self.assertEqual(report["down_failed_checks"], FALL)
        self.assertLessEqual(report["down_after_s"], 3 * INTER_MS / 1000,
                             f"{victim} marked DOWN {report['down_after_s']:.3f} s after it died")

        self.summarize(load, report, victim, drained, t)

    def attach_log(self, load):
        """Finds each connection's line in HAProxy's log (by its client port and time)."""
        c = self.cluster
        # HAProxy logs a connection when it ends: wait until every one has ended.
        wait_for("HAProxy to close every connection",
                 lambda: all(int(r["scur"]) == 0 for r in c.admin.stat(everything=True)))
        text = c.log_text()
        log = parse_log(text)
        missing = []
        for conn in load.conns:
            entries = [e for e in log.get(conn.port, ())
                       if conn.opened - 1 <= e["accept"] <= conn.closed + 1]
            if entries:
                conn.log = min(entries, key=lambda e: abs(e["accept"] - conn.opened))
            else:
                seen = [line for line in text.splitlines() if f":{conn.port} " in line]
                missing.append(f"{conn.kind} connection from port {conn.port}, opened at "
                               f"{conn.opened:.3f}, closed at {conn.closed:.3f}, end {conn.end}, "
                               f"{conn.answered} answered; log lines with its port: {seen}")
        dropped = [line for line in c.admin.command("show info").splitlines() if "Drop" in line]
        self.assertEqual(missing, [], f"connections missing from HAProxy's log ({dropped})")

    def summarize(self, load, report, victim, drained, t):
        conns = load.conns

        def within(x, a, b):
            return t[a] <= x.log["accept"] <= t[b] + 0.1

        cut = [x for x in conns if x.log["server"] == victim and x.opened < t["reaped"] and
               (x.failed or x.resent)]
        drain = [x for x in conns if x.log["server"] == drained and x.resent]
        moved = [x for x in conns if x.log["retries"].startswith("+")]
        after_restart = [x for x in conns if x.log["server"] == victim and x.opened > t["restart"]]
        by_kind = collections.Counter(x.kind for x in conns)
        lines = [
            f"failover: {load.answered} requests answered and checked, on "
            f"{by_kind['persistent']} persistent connections ({PERSISTENT_WORKERS} at a time, "
            f"{WINDOW} requests in flight) and {by_kind['new']} new connections (one request "
            f"each); errors: {len(load.errors)}",
            f"  SIGKILL {victim} ({report['killed_open_conns']} connections open): "
            f"{sum(x.failed + x.resent for x in cut)} requests in flight on {len(cut)} of its "
            f"connections unanswered - {sum(x.failed for x in cut)} cut by a reset or mid-frame "
            f"(failed), {sum(x.resent for x in cut)} at a clean end of stream (sent again, "
            f"answered); every connection opened after it died answered in full; "
            f"{sum(within(x, 'kill', 'down') for x in moved)} new connections redispatched "
            f"from it; DOWN after {report['down_after_s']:.3f} s "
            f"({report['down_failed_checks']} failed checks {INTER_MS} ms apart)",
            f"  restart {victim}: UP after {report['up_after_s']:.3f} s, then given "
            f"{len(after_restart)} connections, {sum(x.answered for x in after_restart)} "
            f"requests answered",
            f"  SIGTERM {drained} ({report['drained_open_conns']} connections open): exit 0 after "
            f"{t['exited'] - t['term']:.3f} s, 0 requests failed; "
            f"{sum(x.resent for x in drain)} requests sent after its drain had closed "
            f"{len(drain)} connections, sent again and answered; "
            f"{sum(within(x, 'term', 'drain_down') for x in moved)} new connections "
            f"redispatched from it; DOWN {t['drain_down'] - t['term']:.3f} s after SIGTERM",
        ]
        print("\n" + "\n".join(lines), flush=True)


if __name__ == "__main__":
    unittest.main()
