#!/usr/bin/env python3
"""Hostile-peer battery for app-server.  Python 3 standard library only.

    hostile_peer.py [--bin-dir DIR] [--server-cmd 'CMD ...'] [--time-limit S] [--only TEXT] [-v]
                    [--windows]

Starts DIR/app-server (default: build/examples) on 127.0.0.1 port 0 with short timeouts, or runs
--server-cmd (which must print "listening on HOST:PORT" to stderr), and throws every case at it,
one case at a time.  After each case it checks that

  (a) the case's own outcome holds (error reply name and offset, connection closed or kept),
  (b) a fresh client still gets the guide's exact reply to "search morpheus",
  (c) the server's descriptor count (/proc/PID/fd) returns to its baseline within a few seconds,
  (d) its VmRSS stays below baseline + 64 MiB.

Every text/json reply must also be valid UTF-8 JSON, and every framing error's offset must be the
one the reference decoder (proto/tools/appmsg_ref.py) gives.  Some cases start their own,
differently configured app-server (2,000 idle connections, out of descriptors, 16 MiB content,
memory amplification) and check it the same way.  At the end every server must still be
alive, exit 0 on SIGTERM, and have written no sanitizer report to stderr.

--windows runs DIR/app-server.exe under Wine (the programs cross-built for Windows), every case's
own server too, and stops them with SIGINT, which Wine turns into the console's Ctrl-C (its SIGTERM
ends a Windows program at once).  The descriptor and memory checks then watch the Wine process,
whose sockets are descriptors of Wine's server for the prefix (WINEPREFIX): the TCP sockets among
them are what is counted.  Cases about running out of descriptors are POSIX's
alone (Windows sockets count against no such limit) and are listed as not run.

Prints one line per case ("ok   NAME  (detail)" or "FAIL NAME: why") and finally
"N passed, M failed"; exits 1 if anything failed.  Every socket operation has a timeout and the
whole battery stops by itself after --time-limit seconds (default 120).
"""

import argparse
import json
import os
import re
import resource
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "proto", "tools"))
sys.dont_write_bytecode = True    # write nothing outside tests/hostile
import appmsg_ref as ref  # noqa: E402  (the project's reference decoder/encoder)

IO = 5.0                      # default timeout of one socket operation, seconds
RSS_SLACK_KIB = 64 * 1024     # (d): VmRSS may grow at most this much over the baseline
FD_SETTLE = 10.0              # (c): how long the descriptor count may take to come back
LINGER = 2.0                  # conn.c LINGER_MS: a closing connection waits this long for our EOF
SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")
CLK_TCK = os.sysconf("SC_CLK_TCK")
VERBOSE = False


class Fail(Exception):
    pass


def log_lines_since(srv, pos, limit):
    """The server's stderr lines after byte pos (at most limit, shortened), for a report."""
    lines = srv.log_text()[pos:].splitlines()
    out = [("     | " + ln[:300]) for ln in lines[:limit]]
    if len(lines) > limit:
        out.append(f"     | ... {len(lines) - limit} more line(s)")
    return out


# ------------------------------------------------------------------------------------------------
# Frames


def H(header: bytes) -> bytes:
    """A header with its 2-byte big-endian length prefix."""
    return struct.pack(">H", len(header)) + header


def hdr(bo=b'"little"', ct=b'"text/json"', ce=b'"utf-8"', cl=b"41", extra=b"", order=None):
    """The raw bytes of a header object, each field's value given as raw JSON text (None: left
    out), written like the guide's json.dumps."""
    fields = [(b"byteorder", bo), (b"content-type", ct), (b"content-encoding", ce),
              (b"content-length", cl)]
    parts = [b'"' + k + b'": ' + v for k, v in fields if v is not None]
    return b"{" + b", ".join(parts) + extra + b"}"


def json_frame(content: bytes, ce="utf-8") -> bytes:
    return ref.encode({"content-type": "text/json", "content-encoding": ce}, content)


def search_frame(value: str) -> bytes:
    """The guide's client request, byte for byte."""
    return json_frame(json.dumps({"action": "search", "value": value},
                                 ensure_ascii=False).encode())


def binary_frame(content: bytes) -> bytes:
    return ref.encode({"content-type": "binary/custom-client-binary-type",
                       "content-encoding": "binary"}, content)


def guide_reply(result: str) -> bytes:
    """The guide's server reply {"result": RESULT}, byte for byte."""
    content = json.dumps({"result": result}, ensure_ascii=False).encode()
    header = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json",
                         "content-encoding": "utf-8", "content-length": len(content)},
                        ensure_ascii=False).encode()
    return H(header) + content


def binary_reply(content: bytes) -> bytes:
    body = b"First 10 bytes of request: " + content[:10]
    header = json.dumps({"byteorder": sys.byteorder,
                         "content-type": "binary/custom-server-binary-type",
                         "content-encoding": "binary", "content-length": len(body)}).encode()
    return H(header) + body


MORPHEUS = "Follow the white rabbit. \U0001f430"
SEARCH = b'{"action": "search", "value": "morpheus"}'           # 41 bytes
SEARCH_FRAME = search_frame("morpheus")                          # 146 bytes, PROTOCOL.md 1
MORPHEUS_REPLY = guide_reply(MORPHEUS)
assert SEARCH_FRAME == H(hdr()) + SEARCH and len(SEARCH_FRAME) == 146


# ------------------------------------------------------------------------------------------------
# Servers


def parse_opts(argv):
    """The limits an app-server command line sets (app-server's defaults otherwise)."""
    o = {"--max-content": 1 << 20, "--idle-timeout": 60, "--frame-timeout": 10,
         "--max-conns": 10000}
    for i, a in enumerate(argv[:-1]):
        if a in o:
            o[a] = int(argv[i + 1])
    return {"max_content": o["--max-content"], "idle": float(o["--idle-timeout"]),
            "frame": float(o["--frame-timeout"]), "max_conns": o["--max-conns"]}


def wineserver_pid():
    """The wineserver of this process's Wine prefix (WINEPREFIX, else ~/.wine)."""
    prefix = os.path.realpath(os.environ.get("WINEPREFIX") or os.path.expanduser("~/.wine"))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("wineserver"):
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        theirs = env.get(b"WINEPREFIX", os.path.expanduser("~/.wine").encode()).decode()
        if os.path.realpath(theirs) == prefix:
            return int(pid)
    raise Fail(f"no wineserver runs for the prefix {prefix}")


def wine_tcp_sockets(pid):
    """The TCP sockets among a wineserver's descriptors: those of the Wine programs it serves
    (its own pipes and Unix sockets to them come and go with Wine's services, and are not
    counted)."""
    tcp = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                tcp.update(line.split()[9] for line in f)
        except OSError:
            pass
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += link.startswith("socket:[") and link[8:-1] in tcp
    return n


class Server:
    ALL = []

    def __init__(self, argv, label, nofile=None):
        self.argv, self.label = list(argv), label
        self.opts = parse_opts(self.argv)
        self.logf = tempfile.NamedTemporaryFile(prefix=f"hostile-{label}-", suffix=".log",
                                                delete=False)
        pre = None
        if nofile is not None:
            def pre():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.logf,
                                     preexec_fn=pre)
        Server.ALL.append(self)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 15
        m = None
        while time.monotonic() < deadline:
            m = re.search(r"listening on (\S+):(\d+)", self.log_text())
            if m or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if not m:
            self.kill()
            raise Fail(f"{label} server did not start: {self.log_text()[-500:]!r}")
        self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
        self.fd_base = self.rss_base = None

    def log_text(self):
        with open(self.logf.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def json_log(self):
        """Whether the server writes its log as JSON lines (--log-format json)."""
        return any(a == "--log-format" and b == "json" for a, b in zip(self.argv, self.argv[1:]))

    def json_lines(self, pos=0):
        """The log's lines after character pos, each parsed; Fail for one that is not a JSON
        object with time, level and msg (a partial last line is left for later)."""
        text = self.log_text()[pos:]
        out = []
        for ln in text.splitlines(keepends=True):
            if not ln.endswith("\n"):
                break
            try:
                o = json.loads(ln)
            except ValueError as e:
                raise Fail(f"log line is not JSON ({e}): {ln[:300]!r}")
            if not isinstance(o, dict) or not all(k in o for k in ("time", "level", "msg")):
                raise Fail(f"log line lacks time, level or msg: {ln[:300]!r}")
            out.append(o)
        return out

    def wait_json_line(self, pos, name, offset):
        """Waits (bounded) for a JSON log line after pos naming the error name at offset."""
        deadline = time.monotonic() + 10
        while True:
            for o in self.json_lines(pos):
                if o.get("error") == name and o.get("offset") == offset and o.get("peer"):
                    return o
            if time.monotonic() > deadline:
                raise Fail(f"no JSON log line naming {name} at {offset}: "
                           f"{self.log_text()[pos:][-600:]!r}")
            time.sleep(0.02)

    def alive(self):
        return self.proc.poll() is None

    def fds(self):
        if ARGS.windows:   # a Wine program's sockets are held by the prefix's wineserver
            return wine_tcp_sockets(wineserver_pid())
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def hwm_kib(self):
        """Peak RSS (VmHWM) since the last reset_hwm()."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def reset_hwm(self):
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")          # resets VmHWM to the current RSS (Linux 4.0+)
        except OSError:
            pass

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK   # utime, stime (fields 14, 15)

    def nofile_soft(self):
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        return -1

    def calibrate(self):
        """Records the descriptor baseline (listening, no connection: everything is set up by
        the time the server says it listens), warms up with one client, and records the RSS
        baseline once that client's connection is gone."""
        self.fd_base = self.fds()
        fresh_check(self)
        ok, n, took = wait_fds(self, self.fd_base)
        if not ok:
            raise Fail(f"{self.label} server holds {n} descriptors {took:.1f} s after one client "
                       f"left, {self.fd_base} before it came")
        self.rss_base = self.rss_kib()

    def stop(self):
        """SIGTERM (Windows: SIGINT, Wine's Ctrl-C); returns (exit code, sanitizer lines)."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT if ARGS.windows else signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = "hung after SIGTERM (killed)"
        text = self.log_text()
        bad = [ln for ln in text.splitlines() if any(k in ln for k in SANITIZER_MARKS)]
        return rc, bad

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------
# A client


class Peer:
    def __init__(self, srv, rcvbuf=None, sndbuf=None, timeout=IO):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((srv.host, srv.port))
        self.dec = ref.Decoder(max_content_length=ref.CONTENT_LENGTH_MAX)
        self.raw = bytearray()
        self.msgs = []
        self.taken = 0            # messages handed out by frames()
        self.state = "open"       # open, eof, reset

    def send(self, data, timeout=IO):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def _recv(self, deadline):
        """One recv; False on timeout.  Records EOF / reset in self.state."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            self.state = "reset"
            return True
        if not data:
            self.state = "eof"
            return True
        self.raw += data
        for o in self.dec.feed(data):
            if isinstance(o, ref.Error):
                raise Fail(f"the server sent an invalid frame: {o}")
            check_text_json(o)
            self.msgs.append(o)
        return True

    def frames(self, n, timeout=IO):
        """The next n messages (waits for them)."""
        deadline = time.monotonic() + timeout
        while len(self.msgs) - self.taken < n:
            if self.state != "open":
                raise Fail(f"connection {self.state} after {len(self.msgs) - self.taken} of {n} "
                           f"expected replies")
            if not self._recv(deadline):
                raise Fail(f"no reply within {timeout:.1f} s "
                           f"({len(self.msgs) - self.taken} of {n} arrived)")
        out = self.msgs[self.taken:self.taken + n]
        self.taken += n
        return out

    def until_close(self, timeout=IO):
        """Reads until EOF or reset; returns the state ('eof', 'reset', or 'open' on timeout)."""
        deadline = time.monotonic() + timeout
        while self.state == "open" and self._recv(deadline):
            pass
        return self.state

    def queues(self):
        """(our Send-Q, the server's Recv-Q) for this connection: bytes not yet acknowledged,
        bytes the server has received and not read; None once either socket is gone."""
        mine, theirs = self.sock.getsockname()[:2], self.sock.getpeername()[:2]
        ours, peer = tcp_queues(mine, theirs), tcp_queues(theirs, mine)
        return None if ours is None or peer is None else (ours[0], peer[1])

    def wait_read(self, what):
        """Waits until the server has read every byte sent so far."""
        ok = wait_until(lambda: self.queues() == (0, 0), IO)
        if not ok:
            raise Fail(f"the server did not read what was sent ({what}) within {IO:.0f} s; "
                       f"queues {self.queues()}")

    def raw_of(self, m):
        """The exact bytes of a received message."""
        hl = (self.raw[m.offset] << 8) | self.raw[m.offset + 1]
        return bytes(self.raw[m.offset:m.offset + 2 + hl + len(m.content)])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def rst(self):
        """Closes with SO_LINGER 0: the kernel sends a reset."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


def wait_until(cond, timeout):
    """Polls cond() until it is true (True) or timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _hexaddr(addr):
    return "%s:%04X" % (socket.inet_aton(addr[0])[::-1].hex().upper(), addr[1])


def tcp_queues(local, remote):
    """(tx_queue, rx_queue) of the loopback TCP socket local -> remote from /proc/net/tcp (the
    Send-Q and Recv-Q of `ss`); None when there is no such socket."""
    want = (_hexaddr(local), _hexaddr(remote))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def accept_backlog(srv):
    """Connections waiting in the server's accept queue (a listening socket's Recv-Q)."""
    want = _hexaddr((srv.host, srv.port))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":        # TCP_LISTEN
                return int(fields[4].split(":")[1], 16)
    return 0


def check_text_json(m):
    """Every text/json utf-8 frame the server sends must be one JSON text in UTF-8 (PROTOCOL.md
    3): the guide's client json.loads() it after decoding it as UTF-8."""
    if m.content_type != "text/json" or m.content_encoding.lower() not in ("utf-8", "utf8"):
        return
    try:
        json.loads(m.content.decode("utf-8"))
    except UnicodeDecodeError as e:
        bad = m.content[max(0, e.start - 20):e.start + 10]
        raise Fail(f"the server's text/json reply is not valid UTF-8 ({e.reason} at content byte "
                   f"{e.start}: ...{bad!r}...)")
    except ValueError as e:
        raise Fail(f"the server's text/json reply is not JSON ({e}): {m.content[:200]!r}")


def error_body(m):
    if m.content_type != "text/json" or m.content_encoding != "utf-8":
        raise Fail(f"error reply has content-type {m.content_type!r}/{m.content_encoding!r}")
    try:
        body = json.loads(m.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Fail(f"error reply content is not JSON: {e}: {m.content[:200]!r}")
    if not isinstance(body, dict) or not str(body.get("result", "")).startswith("Error"):
        raise Fail(f"reply is not an error report: {m.content[:300]!r}")
    return body


def expect_reply(p, want: bytes, what="reply", timeout=IO):
    m = p.frames(1, timeout)[0]
    got = p.raw_of(m)
    if got != want:
        raise Fail(f"{what}: got {got[:300]!r}, expected {want[:300]!r}")


def fresh_check(srv):
    """(b): a new client gets the guide's exact answer to search morpheus."""
    p = Peer(srv)
    try:
        p.send(SEARCH_FRAME)
        expect_reply(p, MORPHEUS_REPLY, "fresh client's search morpheus")
    finally:
        p.close()


def wait_fds(srv, want, timeout=FD_SETTLE):
    """Waits until the descriptor count is <= want (None: until it stops changing).  Returns
    (ok, count, seconds)."""
    t0 = time.monotonic()
    last, stable_since = None, t0
    while True:
        n = srv.fds()
        now = time.monotonic()
        if want is not None and n <= want:
            return True, n, now - t0
        if want is None:
            if n != last:
                last, stable_since = n, now
            elif now - stable_since >= 0.3:
                return True, n, now - t0
        if now - t0 >= timeout:
            return False, n, now - t0
        time.sleep(0.05)


def post_checks(srv):
    """(b), (c), (d) and liveness, after a case.  Returns a detail string; raises Fail."""
    if not srv.alive():
        raise Fail(f"{srv.label} server died (exit {srv.proc.returncode}); log tail: "
                   f"{srv.log_text()[-800:]!r}")
    # Descriptors first: a server the case left out of descriptors sheds a fresh client (a
    # reset, if that client sent its request first) until it has seen the case's peers leave.
    ok, n, took = wait_fds(srv, srv.fd_base)
    if not ok:
        raise Fail(f"{srv.label} server holds {n} descriptors {took:.1f} s after the case "
                   f"(baseline {srv.fd_base})")
    fresh_check(srv)
    rss = srv.rss_kib()
    if rss > srv.rss_base + RSS_SLACK_KIB:
        raise Fail(f"{srv.label} server VmRSS {rss} KiB > baseline {srv.rss_base} KiB + 64 MiB")
    return f"fds {n}/{srv.fd_base} after {took:.2f}s, rss {rss} KiB"


# ------------------------------------------------------------------------------------------------
# Case helpers


def ref_outcome(data: bytes, max_content: int, finish=False):
    """What the reference decoder says about a byte stream: (messages, Error or None)."""
    d = ref.Decoder(max_content_length=max_content)
    outs = d.feed(data) + (d.finish() if finish else [])
    errs = [o for o in outs if isinstance(o, ref.Error)]
    return [o for o in outs if isinstance(o, ref.Message)], (errs[0] if errs else None)


def framing_error(srv, data, name, *, answers=0, reason_has=None, quick=False, shut_wr=False,
                  check_ref=True):
    """Sends data; expects `answers` ordinary replies, then one error reply NAME at the offset
    the reference decoder gives, then the server closing the connection.  quick: the reply must
    come before the frame timeout could have fired (it needs no more bytes than were sent)."""
    p = Peer(srv)
    log_pos = len(srv.log_text())
    try:
        t0 = time.monotonic()
        p.send(data)
        if shut_wr:
            p.sock.shutdown(socket.SHUT_WR)
        wait = srv.opts["frame"] + 5
        msgs = p.frames(answers + 1, wait)
        took = time.monotonic() - t0
        for m in msgs[:answers]:
            if m.content_type == "text/json" and b'"error"' in m.content:
                raise Fail(f"a good frame before the bad one was refused: {m.content!r}")
        body = error_body(msgs[-1])
        got = body.get("error")
        if got != name:
            raise Fail(f"error {got!r}, expected {name} (result {body.get('result')!r})")
        detail = f"{name} at {body.get('offset')}"
        if check_ref:
            _, rerr = ref_outcome(data, srv.opts["max_content"], finish=shut_wr)
            if rerr is None or rerr.name != name:
                raise Fail(f"test bug? reference decoder says {rerr}, the case expects {name}")
            if body.get("offset") != rerr.offset:
                raise Fail(f"{name} offset {body.get('offset')}, PROTOCOL.md 5 (reference "
                           f"decoder) says {rerr.offset}; reply {body!r}")
        if reason_has:
            if not any(r.lower() in body["result"].lower() for r in reason_has):
                raise Fail(f"reason {body['result']!r} does not mention {' / '.join(reason_has)}")
            detail += f" ...{body['result'][body['result'].find('looks like') - 5:][:55]!r}"
        if quick and took >= srv.opts["frame"]:
            raise Fail(f"error reply took {took:.2f} s: not before the frame timeout "
                       f"({srv.opts['frame']:.0f} s) could have fired")
        st = p.until_close(LINGER + 3)
        if st == "open":
            raise Fail("connection still open after the framing error reply")
        if len(p.msgs) > answers + 1:
            raise Fail(f"{len(p.msgs) - answers - 1} extra frame(s) after the error reply")
        if srv.json_log():  # the log names it too, as a machine reads it
            srv.wait_json_line(log_pos, name, body.get("offset"))
            detail += ", logged as JSON"
        return f"{detail}, {took * 1000:.0f} ms, then {st}"
    finally:
        p.close()


def request_error(srv, content, *, ce="utf-8", ct="text/json", names=None, exact=None):
    """A whole frame whose request is bad: an error reply at once, and the connection goes on."""
    p = Peer(srv)
    try:
        frame = H(hdr(ct=json.dumps(ct).encode(), ce=json.dumps(ce).encode(),
                      cl=str(len(content)).encode())) + content
        t0 = time.monotonic()
        p.send(frame)
        m = p.frames(1, IO)[0]
        took = time.monotonic() - t0
        if exact is not None:
            if p.raw_of(m) != exact:
                raise Fail(f"got {p.raw_of(m)[:300]!r}, expected {exact[:300]!r}")
            body = json.loads(m.content)
        else:
            body = error_body(m)
        if names is not None and body.get("error") not in names:
            raise Fail(f"error {body.get('error')!r}, expected one of {names}: {body!r}")
        # At once, not on a timeout: the same connection is then still served.
        p.send(SEARCH_FRAME)
        expect_reply(p, MORPHEUS_REPLY, "search on the same connection after the error")
        r = body["result"]
        return f"{body.get('error', '-')} {r[:60]!r}{'...' if len(r) > 60 else ''}, conn kept"
    finally:
        p.close()


# ------------------------------------------------------------------------------------------------
# The cases


CASES = []


POSIX_ONLY = set()   # cases about what Windows does not have (--windows does not run them)


def case(name, posix_only=False):
    def deco(f):
        CASES.append((name, f))
        if posix_only:
            POSIX_ONLY.add(name)
        return f
    return deco


def add_framing(name, data, err, **kw):
    CASES.append((name, lambda srv: framing_error(srv, data, err, **kw)))


def add_request(name, content, **kw):
    CASES.append((name, lambda srv: request_error(srv, content, **kw)))


# ---- framing ----

add_framing("hdrlen-0", b"\x00\x00", "HEADER_EMPTY", quick=True)
add_framing("hdrlen-0-then-data", b"\x00\x00" + SEARCH_FRAME, "HEADER_EMPTY")
add_framing("hdr-not-json-bareword", H(b'{"byteorder": little}') + SEARCH, "HEADER_JSON")
add_framing("hdr-not-json-unclosed", H(b'{"byteorder": "little", "content-type": "text/json"'),
            "HEADER_JSON")
add_framing("hdr-not-json-single-quotes", H(b"{'byteorder': 'little'}"), "HEADER_JSON")
add_framing("hdr-array", H(b"[]"), "HEADER_NOT_OBJECT")
add_framing("hdr-string", H(b'"x"'), "HEADER_NOT_OBJECT")
add_framing("hdr-number", H(b"1"), "HEADER_NOT_OBJECT")
add_framing("hdr-whitespace-only", H(b" \t\r\n "), "HEADER_NOT_OBJECT")
add_framing("hdr-bom", H(b"\xef\xbb\xbf" + hdr()) + SEARCH, "HEADER_NOT_OBJECT")
add_framing("hdr-trailing-bytes", H(hdr() + b" x") + SEARCH, "HEADER_TRAILING")
add_framing("hdr-trailing-object", H(hdr() + b"{}") + SEARCH, "HEADER_TRAILING")
add_framing("hdr-trailing-nul", H(hdr() + b"\x00") + SEARCH, "HEADER_TRAILING")
for _n, _seq in [("ff", b"\xff"), ("overlong-c0-80", b"\xc0\x80"),
                 ("overlong-e0-80-80", b"\xe0\x80\x80"), ("surrogate-ed-a0-80", b"\xed\xa0\x80"),
                 ("above-10ffff-f4-90", b"\xf4\x90\x80\x80"), ("truncated-f0-9f", b"\xf0\x9f"),
                 ("lone-continuation-80", b"\x80")]:
    add_framing(f"hdr-utf8-{_n}", H(hdr(ct=b'"text/' + _seq + b'json"')) + SEARCH, "HEADER_UTF8")
add_framing("hdr-utf8-in-key", H(hdr(extra=b', "x\xc0\x80": 1')) + SEARCH, "HEADER_UTF8")
add_framing("hdr-raw-ctl-01", H(hdr(ct=b'"text/\x01json"')) + SEARCH, "HEADER_JSON")
add_framing("hdr-raw-newline", H(hdr(ct=b'"text/\njson"')) + SEARCH, "HEADER_JSON")
add_framing("hdr-raw-nul", H(hdr(ct=b'"text/json\x00"')) + SEARCH, "HEADER_JSON")
add_framing("hdr-escaped-nul", H(hdr(ct=b'"text/json\\u0000x"')) + SEARCH, "HEADER_JSON")
add_framing("hdr-lone-surrogate-escape", H(hdr(ce=b'"\\ud800"')) + SEARCH, "HEADER_JSON")
add_framing("hdr-nan", H(hdr(cl=b"NaN")) + SEARCH, "HEADER_JSON")
add_framing("cl-leading-zero-041", H(hdr(cl=b"041")) + SEARCH, "HEADER_JSON")
add_framing("dup-content-length", H(hdr(cl=b"41", extra=b', "content-length": 0')) + SEARCH,
            "HEADER_DUPLICATE")
add_framing("dup-content-length-escaped",
            H(hdr(cl=b"0", extra=b', "content-l\\u0065ngth": 41')) + SEARCH, "HEADER_DUPLICATE")
add_framing("dup-byteorder-same", H(hdr(extra=b', "byteorder": "little"')) + SEARCH,
            "HEADER_DUPLICATE")
for _k in ("bo", "ct", "ce", "cl"):
    add_framing(f"missing-{_k}", H(hdr(**{_k: None})) + SEARCH, "FIELD_MISSING")
add_framing("missing-all", H(b"{}"), "FIELD_MISSING")
add_framing("key-case-Content-Length",
            H(hdr(cl=None, extra=b', "Content-Length": 41')) + SEARCH, "FIELD_MISSING")
add_framing("type-byteorder-1", H(hdr(bo=b"1")) + SEARCH, "FIELD_TYPE")
add_framing("type-ctype-null", H(hdr(ct=b"null")) + SEARCH, "FIELD_TYPE")
add_framing("type-cenc-array", H(hdr(ce=b'["utf-8"]')) + SEARCH, "FIELD_TYPE")
add_framing("type-ctype-object", H(hdr(ct=b'{"a": "b"}')) + SEARCH, "FIELD_TYPE")
for _v, _e in [(b"-1", "CONTENT_LENGTH"), (b"-0", "CONTENT_LENGTH"), (b"1.5", "CONTENT_LENGTH"),
               (b"41.0", "CONTENT_LENGTH"), (b"4.1e1", "CONTENT_LENGTH"),
               (b"1e30", "CONTENT_LENGTH"), (b"1E400", "CONTENT_LENGTH"),
               (b"true", "FIELD_TYPE"), (b'"8"', "FIELD_TYPE"), (b"null", "FIELD_TYPE"),
               (b"[41]", "FIELD_TYPE"),
               (b"9007199254740993", "CONTENT_TOO_LARGE"),           # 2^53 + 1
               (b"9223372036854775808", "CONTENT_TOO_LARGE"),        # 2^63
               (b"18446744073709551621", "CONTENT_TOO_LARGE"),       # 2^64 + 5 (wraps to 5?)
               (b"18446744073709551616", "CONTENT_TOO_LARGE"),       # 2^64 (wraps to 0?)
               (b"9" * 400, "CONTENT_TOO_LARGE")]:
    add_framing(f"cl-{_v[:24].decode()}", H(hdr(cl=_v)) + SEARCH, _e)
add_framing("cl-65537-no-content", H(hdr(ct=b'"binary/x"', ce=b'"binary"', cl=b"65537")),
            "CONTENT_TOO_LARGE", quick=True)
add_framing("byteorder-middle", H(hdr(bo=b'"middle"')) + SEARCH, "BYTEORDER")
add_framing("byteorder-Little", H(hdr(bo=b'"Little"')) + SEARCH, "BYTEORDER")
add_framing("depth-33", H(hdr(extra=b', "x": ' + b"[" * 32 + b"]" * 32)) + SEARCH, "HEADER_DEPTH")
add_framing("depth-33-objects", H(hdr(extra=b', "x": ' + b'{"a": ' * 32 + b"1" + b"}" * 32))
            + SEARCH, "HEADER_DEPTH")
add_framing("depth-10000-brackets", H(hdr(extra=b', "x": ' + b"[" * 10000 + b"]" * 10000))
            + SEARCH, "HEADER_DEPTH")
add_framing("depth-65000-unclosed", H(b'{"x": ' + b"[" * 65000), "HEADER_DEPTH")
add_framing("truncated-then-shut-wr", SEARCH_FRAME[:60], "TRUNCATED", shut_wr=True)
add_framing("good-then-bad-frame-offset", SEARCH_FRAME + H(b"[]"), "HEADER_NOT_OBJECT",
            answers=1)
add_framing("good-then-dup-offset", SEARCH_FRAME * 2 + H(hdr(extra=b', "content-length": 0')),
            "HEADER_DUPLICATE", answers=2)


@case("depth-32-accepted")
def _(srv):
    p = Peer(srv)
    try:
        p.send(H(hdr(extra=b', "x": ' + b"[" * 31 + b"]" * 31)) + SEARCH)
        expect_reply(p, MORPHEUS_REPLY, "depth-32 header (allowed)")
        return "answered"
    finally:
        p.close()


@case("hdr-65535-bytes-accepted")
def _(srv):
    base = hdr(extra=b', "pad": ""')
    h = hdr(extra=b', "pad": "' + b"p" * (65535 - len(base)) + b'"')
    assert len(h) == 65535
    p = Peer(srv)
    try:
        p.send(H(h) + SEARCH)
        expect_reply(p, MORPHEUS_REPLY, "65535-byte header")
        return "answered"
    finally:
        p.close()


@case("cl-65536-at-limit-accepted")
def _(srv):
    content = bytes(range(256)) * 256
    p = Peer(srv)
    try:
        p.send(binary_frame(content))
        expect_reply(p, binary_reply(content), "65536-byte binary request")
        return "answered"
    finally:
        p.close()


# ---- content ----

add_request("content-utf8-ff", b'{"action": "search", "value": "\xff"}', names={"CONTENT_UTF8"})
add_request("content-utf8-overlong", b'{"action": "search", "value": "\xc0\xaf"}',
            names={"CONTENT_UTF8"})
add_request("content-utf8-surrogate", b'{"action": "search", "value": "\xed\xa0\x80"}',
            names={"CONTENT_UTF8"})
add_request("content-not-json", b"search morpheus", names={"CONTENT_JSON"})
add_request("content-empty", b"", names={"CONTENT_JSON"})
add_request("content-trailing", SEARCH + b" x", names={"CONTENT_JSON"})
add_request("content-escaped-nul", b'{"action": "search", "value": "morpheus\\u0000x"}',
            names={"CONTENT_JSON"})
add_request("content-lone-surrogate", b'{"action": "search", "value": "\\udc00"}',
            names={"CONTENT_JSON"})
for _c in (b"{}", b"[]", b"null", b"0", b'""', b"true", b'["search", "morpheus"]'):
    add_request(f"content-{_c.decode()[:12]}", _c)
add_request("search-no-value", b'{"action": "search"}')
for _v in (b"42", b"null", b'["morpheus"]', b'{"k": "morpheus"}', b"true"):
    add_request(f"search-value-{_v.decode()[:10]}", b'{"action": "search", "value": ' + _v + b"}")
add_request("action-not-string", b'{"action": ["search"], "value": "morpheus"}')
add_request("action-unknown", b'{"action": "delete", "value": "morpheus"}',
            exact=guide_reply("Error: invalid action 'delete'."))
add_request("reply-utf8-long-content-encoding", b"{}", ce="a" + "\u00e9" * 60,
            names={"BAD_REQUEST"})
add_request("reply-utf8-long-invalid-action",
            json.dumps({"action": "a" + "\u00e9" * 300, "value": "x"},
                       ensure_ascii=False).encode())
add_request("search-escaped-surrogate-pair", b'{"action": "search", "value": "\\ud83d\\udc36"}',
            exact=guide_reply("\U0001f43e Playing ball! \U0001f3d0"))


@case("content-duplicate-value-key")
def _(srv):
    """{"value": "nosuch", "value": "morpheus"}: the guide's server (json.loads) and this
    project's --data loader let the last one win; a server that reads the first disagrees with
    any Python front end about what was asked (smuggling).  Either an error reply or the
    last-wins answer passes."""
    p = Peer(srv)
    try:
        p.send(json_frame(b'{"action": "search", "value": "nosuch", "value": "morpheus"}'))
        m = p.frames(1)[0]
        got = p.raw_of(m)
        if got == MORPHEUS_REPLY:
            return "last one wins, as in Python"
        body = json.loads(m.content)
        if body.get("result", "").startswith("Error"):
            return f"refused: {body['result'][:60]!r}"
        raise Fail(f"answered {body['result']!r}: the first of two \"value\" keys won; the "
                   f"guide's Python server answers {MORPHEUS!r} (last wins)")
    finally:
        p.close()


add_request("content-nested-65000", b"[" * 65000, names={"CONTENT_JSON"})
add_request("content-nested-in-value", b'{"action": "search", "value": ' + b"[" * 60000 + b"1"
            + b"]" * 5000, names={"CONTENT_JSON"})
add_request("content-encoding-latin-1", b'{"action": "search", "value": "caf\xe9"}',
            ce="latin-1", names={"BAD_REQUEST"})
add_request("content-encoding-empty", SEARCH, ce="", names={"BAD_REQUEST"})


@case("search-long-value-echoed")
def _(srv):
    v = "x" * 60000 + "\u00e9\U0001f430"
    p = Peer(srv)
    try:
        p.send(search_frame(v))
        expect_reply(p, guide_reply(f"No match for '{v}'."), "60 KB no-match reply")
        return "60 KB reply exact"
    finally:
        p.close()


# ---- another protocol ----

HTTP_GET = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:65432\r\nUser-Agent: curl/7.88.1\r\n"
            b"Accept: */*\r\n\r\n")


def tls_client_hello():
    body = (b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(range(32, 64))
            + b"\x00\x08\x13\x01\x13\x02\x13\x03\xc0\x2f" + b"\x01\x00")
    ext_sni = b"\x00\x00\x00\x0e\x00\x0c\x00\x00\x09localhost"
    exts = ext_sni + b"\x00\x15" + struct.pack(">H", 508 - len(body) - 2 - len(ext_sni) - 4)
    exts += b"\x00" * (508 - len(body) - 2 - len(exts))
    hs = body + struct.pack(">H", len(exts)) + exts
    assert len(hs) == 508
    rec = b"\x01" + struct.pack(">I", len(hs))[1:] + hs
    out = b"\x16\x03\x01" + struct.pack(">H", len(rec)) + rec
    assert out[:11] == bytes.fromhex("1603010200010001fc0303")
    return out


add_framing("proto-http-get", HTTP_GET, "HEADER_NOT_OBJECT", reason_has=["HTTP"], quick=True)
add_framing("proto-http-post-partial", b"POS", "HEADER_NOT_OBJECT", reason_has=["HTTP"],
            quick=True)
add_framing("proto-http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HEADER_NOT_OBJECT",
            reason_has=["HTTP"], quick=True)
add_framing("proto-tls-client-hello", tls_client_hello(), "HEADER_NOT_OBJECT", reason_has=["TLS"],
            quick=True)
add_framing("proto-bare-json", SEARCH, "HEADER_NOT_OBJECT", reason_has=["length prefix"],
            quick=True)
add_framing("proto-bare-json-array", b'[{"action": "search"}]', "HEADER_NOT_OBJECT",
            reason_has=["length prefix"], quick=True)


# ---- slow peers ----

@case("slow-byte-by-byte-10ms")
def _(srv):
    p = Peer(srv)
    try:
        t0 = time.monotonic()
        for b in SEARCH_FRAME:
            p.send(bytes([b]))
            time.sleep(0.01)
        expect_reply(p, MORPHEUS_REPLY, "request sent byte by byte")
        return f"answered after {time.monotonic() - t0:.1f} s of dribbling"
    finally:
        p.close()


@case("slow-frame-stalls")
def _(srv):
    ft = srv.opts["frame"]
    p = Peer(srv)
    try:
        t0 = time.monotonic()
        p.send(SEARCH_FRAME[:50])
        m = p.frames(1, ft + 20)[0]
        took = time.monotonic() - t0
        body = error_body(m)
        if body.get("error") != "TIMEOUT" or body.get("offset") != 50:
            raise Fail(f"expected TIMEOUT at offset 50, got {body!r}")
        # The frame's timer starts when the server reads it, after t0; timers never fire early.
        # How late it may come depends on the machine's load, not on the server.
        if took < ft - 0.01:
            raise Fail(f"TIMEOUT reply after {took:.2f} s, frame timeout is {ft:.0f} s")
        st = p.until_close(LINGER + 3)
        if st == "open":
            raise Fail("connection not closed after the TIMEOUT reply")
        return f"TIMEOUT at 50 after {took:.2f} s, then {st}"
    finally:
        p.close()


@case("slow-stalls-in-prefix-header-content")
def _(srv):
    """Three frames stop at once: after 1 prefix byte, inside the header, inside the content
    (its buffer already allocated).  Each gets TIMEOUT at the offset where it stopped."""
    ft = srv.opts["frame"]
    cuts = [1, 50, 115]
    peers = []
    try:
        t0 = time.monotonic()
        for k in cuts:
            p = Peer(srv)
            p.send(SEARCH_FRAME[:k])
            peers.append(p)
        got = []
        for k, p in zip(cuts, peers):
            body = error_body(p.frames(1, ft + 20)[0])
            took = time.monotonic() - t0
            if body.get("error") != "TIMEOUT" or body.get("offset") != k:
                raise Fail(f"stalled after {k} bytes: expected TIMEOUT at {k}, got {body!r}")
            if took < ft - 0.01:
                raise Fail(f"TIMEOUT after {took:.2f} s, frame timeout is {ft:.0f} s")
            if p.until_close(LINGER + 3) == "open":
                raise Fail(f"stalled after {k} bytes: not closed after the TIMEOUT reply")
            got.append(f"{k}: {took:.2f}s")
        return "TIMEOUT at " + ", ".join(got)
    finally:
        for p in peers:
            p.close()


@case("slow-idle-no-bytes")
def _(srv):
    it = srv.opts["idle"]
    t0 = time.monotonic()               # before the connection, so before its idle timer
    p = Peer(srv)
    try:
        st = p.until_close(it + 20)
        took = time.monotonic() - t0
        if st == "open":
            raise Fail(f"idle connection still open after {took:.1f} s")
        if p.raw:
            raise Fail(f"idle connection got bytes: {bytes(p.raw[:200])!r}")
        if took < it - 0.01:
            raise Fail(f"closed after {took:.2f} s, before the idle timeout {it:.0f} s")
        return f"{st} after {took:.2f} s"
    finally:
        p.close()


@case("slow-idle-after-request")
def _(srv):
    it = srv.opts["idle"]
    p = Peer(srv)
    try:
        t0 = time.monotonic()           # before the request, so before the server reads it
        p.send(SEARCH_FRAME)
        expect_reply(p, MORPHEUS_REPLY)
        st = p.until_close(it + 20)
        took = time.monotonic() - t0
        if st == "open" or len(p.msgs) != 1:
            raise Fail(f"state {st} after {took:.1f} s, {len(p.msgs)} frames")
        if took < it - 0.01:
            raise Fail(f"closed {took:.2f} s after the request, idle timeout is {it:.0f} s")
        return f"{st} {took:.2f} s after the request"
    finally:
        p.close()


@case("slow-never-reads-replies")
def _(srv):
    """Sends 60 KB searches (60 KB replies) and never reads: the server must stop reading, then
    cut the connection off, while other clients are served."""
    ft = srv.opts["frame"]
    value = "n" * 60000
    req = search_frame(value)
    p = Peer(srv, rcvbuf=4096)
    s = p.sock
    sent = 0
    try:
        s.setblocking(False)
        t0 = time.monotonic()
        last_progress = t0
        buf = memoryview(req)
        pos = 0
        while time.monotonic() - last_progress < 1.0 and time.monotonic() - t0 < 8:
            try:
                n = s.send(buf[pos:])
            except BlockingIOError:
                time.sleep(0.02)
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            sent += n
            pos = (pos + n) % len(req)       # whole frames, back to back
            last_progress = time.monotonic()
        stalled = time.monotonic()
        mid = srv.fds()
        fresh_check(srv)                     # others are served meanwhile
        ok, n, took = wait_fds(srv, srv.fd_base, ft + 8)
        if not ok:
            raise Fail(f"after sending {sent} bytes without reading, the server still holds "
                       f"{n} descriptors {took:.1f} s later (baseline {srv.fd_base})")
        cut = time.monotonic() - stalled
        why = ("output cap" if "output cap" in srv.log_text() else
               "timed out" if "timed out" in srv.log_text() else "?")
        return (f"{sent / 1e6:.1f} MB sent before the server stopped reading; cut off "
                f"{cut:.1f} s after the stall ({why}); fds {mid} -> {n}")
    finally:
        p.rst()


# ---- floods ----

@case("flood-300-conns-max-200")
def _(srv):
    mc = srv.opts["max_conns"]
    if mc > 1000:
        return f"skipped: --max-conns {mc}"
    total = mc + 100
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(total):
            s = socket.socket()
            s.settimeout(IO)
            s.connect((srv.host, srv.port))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, i)
        data = [b""] * total
        done = [False] * total
        t0 = time.monotonic()
        # Until the server has closed the connections above its limit (each after a refusal
        # reply, or bare), however long a busy machine makes that take.
        while sum(done) < total - mc and time.monotonic() - t0 < 2 * IO:
            for key, _ in sel.select(0.05):
                i = key.data
                try:
                    b = socks[i].recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    b = b""
                if b:
                    data[i] += b
                else:
                    done[i] = True
                    sel.unregister(socks[i])
        served = [i for i in range(total) if not done[i] and not data[i]]
        replied = [i for i in range(total) if done[i] and data[i]]
        bare = [i for i in range(total) if done[i] and not data[i]]
        odd = [i for i in range(total) if not done[i] and data[i]]
        for i in replied:
            msgs, err = ref_outcome(data[i], ref.CONTENT_LENGTH_MAX)
            if err or len(msgs) != 1:
                raise Fail(f"refused connection got {data[i][:200]!r}")
            body = error_body(msgs[0])
            if body.get("error") != "TOO_MANY_CONNS" or "try again" not in body["result"]:
                raise Fail(f"refusal reply {body!r}")
        if odd or len(served) != mc or not replied:
            raise Fail(f"{len(served)} served (want {mc}), {len(replied)} refused with a reply, "
                       f"{len(bare)} closed bare, {len(odd)} odd")
        # The server keeps answering: every served connection gets its search answered.
        for i in served:
            socks[i].setblocking(True)
            socks[i].settimeout(IO)
            socks[i].sendall(SEARCH_FRAME)
        for i in served:
            got = b""
            while len(got) < len(MORPHEUS_REPLY):
                b = socks[i].recv(4096)
                if not b:
                    break
                got += b
            if got != MORPHEUS_REPLY:
                raise Fail(f"served connection {i} got {got[:200]!r}")
        # Once the refusals are over (the server has seen our ends of stream and closed them: it
        # holds only the served connections), one more connection is told TOO_MANY_CONNS.
        for i in replied + bare:
            socks[i].close()
        ok, n, took = wait_fds(srv, srv.fd_base + len(served))
        if not ok:
            raise Fail(f"the refused connections are still held {took:.1f} s after they closed: "
                       f"{n} fds, {srv.fd_base} + {len(served)} served")
        p = Peer(srv)
        try:
            m = p.frames(1, IO)[0]
            body = error_body(m)
            if body.get("error") != "TOO_MANY_CONNS":
                raise Fail(f"connection {mc + 1} at the limit got {body!r}")
            if p.until_close(LINGER + 3) == "open":
                raise Fail("refused connection not closed")
        finally:
            p.close()
        return (f"{len(served)} served and all answered, {len(replied)} TOO_MANY_CONNS, "
                f"{len(bare)} closed bare (more than 64 refusals at once)")
    finally:
        sel.close()
        for s in socks:
            s.close()


@case("flood-500-connect-then-reset")
def _(srv):
    for i in range(500):
        s = socket.socket()
        s.settimeout(IO)
        s.connect((srv.host, srv.port))
        if i % 2:
            s.send(SEARCH_FRAME[:i % 146])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return "500 connections reset at once, half of them mid-frame"


def aux_server(args, label, **kw):
    srv = Server([*ARGS.wrapper, ARGS.server_bin, *args, "127.0.0.1", "0"], label, **kw)
    srv.calibrate()
    return srv


def aux_finish(srv, detail):
    """Post-checks and shutdown of a case's own server."""
    try:
        detail += "; " + post_checks(srv)
    finally:
        rc, bad = srv.stop()
    if rc != 0 or bad:
        raise Fail(f"{srv.label} server: SIGTERM exit {rc!r}; sanitizer lines {bad[:5]!r}")
    return detail


def aux_cleanup(srv):
    """On a case's failure path: stop its server anyway and show any sanitizer report."""
    if srv.proc.returncode is None:
        rc, bad = srv.stop()
        if rc != 0 or bad:
            print(f"     {srv.label} server: SIGTERM exit {rc!r}; sanitizer lines {bad[:5]!r}; "
                  f"log {srv.logf.name}", flush=True)


@case("flood-2000-idle-conns")
def _(_main):
    want = 2000
    srv = aux_server(["--max-conns", "10000", "--idle-timeout", "60", "--frame-timeout", "10"],
                     "idle2000")
    note = ""
    try:
        limit = srv.nofile_soft()
        mine = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit < want + 50 or mine < want + 300:
            want = max(min(limit - 50, mine - 300), 100)
            note = (f" (RLIMIT_NOFILE: server {limit}, this process {mine}: only {want} "
                    f"connections)")
        socks = []
        try:
            rss0, fd0 = srv.rss_kib(), srv.fds()
            for _ in range(want):
                s = socket.socket()
                s.settimeout(IO)
                s.connect((srv.host, srv.port))
                socks.append(s)
            ok, n, took = wait_fds(srv, None, 10)
            if n < fd0 + want:
                raise Fail(f"server holds {n} descriptors with {want} connections open "
                           f"(baseline {fd0})")
            rss1 = srv.rss_kib()
            per = (rss1 - rss0) * 1024 / want
            fresh_check(srv)
        finally:
            for s in socks:
                s.close()
        if per > 64 * 1024:
            raise Fail(f"{per:.0f} bytes of RSS per idle connection")
        detail = (f"{want} open: fds {fd0} -> {n}, rss {rss0} -> {rss1} KiB = {per:.0f} bytes "
                  f"per idle connection{note}")
        return aux_finish(srv, detail)
    finally:
        aux_cleanup(srv)


@case("flood-out-of-fds-nofile-64", posix_only=True)
def _(_main):
    srv = aux_server(["--max-conns", "10000", "--idle-timeout", "30", "--frame-timeout", "10"],
                     "nofile64", nofile=64)
    socks = []
    try:
        fd0 = srv.fds()
        for _ in range(200):
            s = socket.socket()
            s.settimeout(IO)
            s.connect((srv.host, srv.port))
            socks.append(s)
        # Out of descriptors, the server sheds what it cannot take: its accept queue empties.
        if not wait_until(lambda: accept_backlog(srv) == 0, 2 * IO):
            raise Fail(f"{accept_backlog(srv)} connections still wait to be accepted or shed "
                       f"{2 * IO:.0f} s after they came")
        # Measure CPU over 2 s while a new connection attempt arrives every 50 ms.
        c0, t0 = srv.cpu_s(), time.monotonic()
        extra_eof = 0
        while time.monotonic() - t0 < 2.0:
            s = socket.socket()
            s.settimeout(IO)
            s.connect((srv.host, srv.port))
            try:
                if s.recv(1) == b"":
                    extra_eof += 1
            except (ConnectionResetError, socket.timeout):
                pass
            s.close()
            time.sleep(0.05)
        cpu = srv.cpu_s() - c0
        wall = time.monotonic() - t0
        peak = srv.fds()
        if not srv.alive():
            raise Fail(f"server died out of descriptors: {srv.log_text()[-800:]!r}")
        answered = eof = other = 0
        for s in socks:
            try:
                s.settimeout(0.01)
                try:
                    first = s.recv(1)
                except socket.timeout:
                    first = None
                if first == b"":
                    eof += 1
                    continue
                s.settimeout(IO)
                s.sendall(SEARCH_FRAME)
                got = b""
                while len(got) < len(MORPHEUS_REPLY):
                    b = s.recv(4096)
                    if not b:
                        break
                    got += b
                if got == MORPHEUS_REPLY:
                    answered += 1
                elif got == b"":
                    eof += 1
                else:
                    other += 1
            except (ConnectionResetError, BrokenPipeError):
                eof += 1
            except socket.timeout:
                other += 1
        for s in socks:
            s.close()
        socks = []
        if cpu > 0.5:
            raise Fail(f"spins out of descriptors: {cpu:.2f} s CPU in {wall:.1f} s")
        if other or answered == 0 or answered + eof != 200 or peak > 64:
            raise Fail(f"of 200: {answered} answered, {eof} closed, {other} neither; peak "
                       f"fds {peak}")
        detail = (f"fds {fd0} -> {peak}; of 200: {answered} served, {eof} shed (EOF); "
                  f"{extra_eof}/~40 more shed while measuring; CPU {cpu:.3f} s in {wall:.1f} s")
        return aux_finish(srv, detail)
    finally:
        for s in socks:
            s.close()
        aux_cleanup(srv)


# ---- large content ----

@case("large-16MiB-binary")
def _(_main):
    srv = aux_server(["--max-content", "16777216", "--idle-timeout", "10", "--frame-timeout",
                      "10", "--max-conns", "100"], "big16m")
    try:
        content = (bytes(range(256)) * 65536)[7:] + b"\x00" * 7
        assert len(content) == 1 << 24
        frame = binary_frame(content)
        p = Peer(srv, timeout=20)
        try:
            t0, c0 = time.monotonic(), srv.cpu_s()
            p.send(frame, timeout=20)
            expect_reply(p, binary_reply(content), "16 MiB binary request", timeout=20)
            took, cpu = time.monotonic() - t0, srv.cpu_s() - c0
        finally:
            p.close()
        # Linear work costs milliseconds; quadratic (a buffer regrown per read) seconds.  CPU
        # time, not wall time: the machine's load must not count.
        if cpu > 3.0:
            raise Fail(f"16 MiB request cost the server {cpu:.2f} s of CPU ({took:.2f} s)")
        rss_after = srv.rss_kib()
        # The same server: 16 MiB + 1 is refused before any content, 100,000 '[' does not crash.
        r1 = framing_error(srv, H(hdr(ct=b'"binary/x"', ce=b'"binary"', cl=b"16777217")),
                           "CONTENT_TOO_LARGE", quick=True)
        r2 = request_error(srv, b"[" * 100000, names={"CONTENT_JSON"})
        r3 = request_error(srv, b'{"action": "search", "value": ' + b"[" * 1000000,
                           names={"CONTENT_JSON"})
        detail = (f"answered in {took * 1000:.0f} ms, {cpu:.2f} s CPU (rss {rss_after} KiB "
                  f"after); "
                  f"16 MiB+1: {r1}; 100,000 '[': {r2}; 1,000,000 '[' in value: {r3[:40]}")
        return aux_finish(srv, detail)
    finally:
        aux_cleanup(srv)


def big_extras_header(content_length):
    """A 65534-byte header whose extra key holds a 32,700-element array: small on the wire,
    one heap object per two bytes if parsed into a tree."""
    base = hdr(ct=b'"binary/x"', ce=b'"binary"', cl=str(content_length).encode(),
               extra=b', "x": [')[:-1]
    n = (65535 - len(base) - 2 + 1) // 2
    h = base + b",".join([b"0"] * n) + b"]}"
    assert len(h) <= 65535
    return H(h)


@case("mem-stalled-frames-with-64KiB-headers")
def _(_main):
    """100 peers each send a 64 KiB header (valid, an array in an extra key) announcing 64 KiB of
    content, then stall until the frame timeout.  By the limits the server may hold 64 KiB of
    header + 64 KiB of content per connection (12.5 MiB for 100); its peak RSS must stay below
    baseline + 64 MiB."""
    n = 100
    srv = aux_server(["--idle-timeout", "2", "--frame-timeout", "2", "--max-conns", "200",
                      "--max-content", "65536"], "extras")
    peers = []
    try:
        frame = big_extras_header(65536)
        srv.reset_hwm()
        rss0, c0, t0 = srv.rss_kib(), srv.cpu_s(), time.monotonic()
        for _ in range(n):
            p = Peer(srv)
            p.send(frame)
            peers.append(p)
        for p in peers:       # each frame is held until its TIMEOUT reply
            body = error_body(p.frames(1, srv.opts["frame"] + 20)[0])
            if body.get("error") != "TIMEOUT":
                raise Fail(f"expected TIMEOUT for the stalled frame, got {body!r}")
        peak, cpu = srv.hwm_kib(), srv.cpu_s() - c0
        for p in peers:
            p.close()
        peers = []
        wait_fds(srv, srv.fd_base)
        per = (peak - rss0) * 1024 // n
        detail = (f"{n} x {len(frame)} bytes sent: VmHWM {rss0} -> {peak} KiB = {per} bytes "
                  f"per stalled frame ({per / len(frame):.0f}x the bytes sent), {cpu:.2f} s CPU, "
                  f"VmRSS {srv.rss_kib()} KiB after they closed")
        if peak - rss0 > RSS_SLACK_KIB:
            raise Fail("memory amplification: " + detail)
        return aux_finish(srv, detail)
    finally:
        for p in peers:
            p.close()
        aux_cleanup(srv)


@case("mem-4MiB-json-request")
def _(_main):
    """One text/json request of 4 MiB ('[0,0,...]') on a server allowing 16 MiB: the peak RSS may
    grow by the content and a copy or two (bound: 64 MiB + 4 x 4 MiB), and a second client
    should not wait long meanwhile."""
    srv = aux_server(["--max-content", "16777216", "--idle-timeout", "30", "--frame-timeout",
                      "10", "--max-conns", "100"], "json4m")
    try:
        n = 1 << 21
        content = b"[" + b"0," * (n - 1) + b"0]"
        frame = json_frame(content)
        srv.reset_hwm()
        rss0, c0 = srv.rss_kib(), srv.cpu_s()
        p = Peer(srv, timeout=60)
        q = Peer(srv)
        rtts, errs, stop = [], [], threading.Event()

        def bystander():             # searches back to back meanwhile; the slowest answer
            try:                     # tells how long the event loop was blocked
                while not stop.is_set():
                    t = time.monotonic()
                    q.send(SEARCH_FRAME)
                    expect_reply(q, MORPHEUS_REPLY, "bystander's search", timeout=60)
                    rtts.append(time.monotonic() - t)
                    time.sleep(0.005)
            except (Fail, OSError) as e:
                errs.append(e)

        th = threading.Thread(target=bystander, daemon=True)
        try:
            th.start()
            t0 = time.monotonic()
            p.send(frame, timeout=60)
            body = error_body(p.frames(1, 60)[0])
            took = time.monotonic() - t0
        finally:
            stop.set()
            th.join(65)
            p.close()
            q.close()
        if errs:
            raise Fail(f"bystander: {errs[0]}")
        waited = max(rtts or [0])
        peak, cpu = srv.hwm_kib(), srv.cpu_s() - c0
        grow = peak - rss0
        bound = RSS_SLACK_KIB + 4 * len(content) // 1024
        detail = (f"{len(content)} bytes: reply {body['result'][:40]!r} after {took:.2f} s "
                  f"({cpu:.2f} s CPU); a bystander's search waited up to {waited:.2f} s; VmHWM {rss0} -> {peak} "
                  f"KiB (+{grow * 1024 / len(content):.0f} bytes per content byte), VmRSS "
                  f"{srv.rss_kib()} KiB after")
        if grow > bound:
            raise Fail(f"memory amplification (bound +{bound} KiB): " + detail)
        return aux_finish(srv, detail)
    finally:
        aux_cleanup(srv)


# ---- faults ----

@case("fault-reset-mid-frame")
def _(srv):
    p = Peer(srv)
    p.send(SEARCH_FRAME[:70])
    p.wait_read("70 bytes")           # the server is mid-frame when the reset comes
    p.rst()
    return "RST after 70 of 146 bytes"


@case("fault-reset-mid-header-prefix")
def _(srv):
    p = Peer(srv)
    p.send(b"\x00")
    p.wait_read("1 byte")             # the server is mid-prefix when the reset comes
    p.rst()
    return "RST after 1 byte"


@case("fault-reset-after-request")
def _(srv):
    p = Peer(srv)
    p.send(SEARCH_FRAME)
    p.rst()
    return "RST right after a full request"


@case("fault-half-close-after-request")
def _(srv):
    p = Peer(srv)
    try:
        p.send(SEARCH_FRAME + search_frame("ring"))
        p.sock.shutdown(socket.SHUT_WR)
        expect_reply(p, MORPHEUS_REPLY, "first reply after SHUT_WR")
        expect_reply(p, guide_reply("In the caves beneath the Misty Mountains. \U0001f48d"),
                     "second reply after SHUT_WR")
        st = p.until_close(IO)
        if st != "eof":
            raise Fail(f"after the replies: {st}, expected EOF")
        return "both replies, then EOF"
    finally:
        p.close()


@case("fault-reset-during-large-write")
def _(srv):
    req = search_frame("s" * 60000)
    p = Peer(srv, rcvbuf=8192)
    p.send(req * 30, timeout=10)          # ~1.8 MB of replies queued
    got = 0
    p.sock.settimeout(IO)
    while got < 20000:
        b = p.sock.recv(4096)
        if not b:
            raise Fail("closed while replies were being written")
        got += len(b)
    p.rst()
    ok, n, took = wait_fds(srv, srv.fd_base)     # the server has dealt with the reset
    if not srv.alive():
        raise Fail(f"server died (signal?) exit {srv.proc.returncode}")
    if not ok:
        raise Fail(f"the reset connection is still held {took:.1f} s later ({n} fds)")
    return f"read {got} bytes of ~1.8 MB replies, then RST"


@case("fault-pipeline-100-close-unread")
def _(srv):
    p = Peer(srv)
    p.send(b"".join(search_frame(k) for k in ["morpheus", "ring", "\U0001f436", "zz"] * 25))
    p.close()
    return "100 requests sent, closed without reading"


@case("fault-pipeline-100-answered-in-order")
def _(srv):
    keys = ["morpheus", "ring", "\U0001f436", "nosuch"] * 25
    answers = {"morpheus": MORPHEUS, "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
               "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0", "nosuch": "No match for 'nosuch'."}
    p = Peer(srv)
    try:
        p.send(b"".join(search_frame(k) for k in keys))
        for i, k in enumerate(keys):
            expect_reply(p, guide_reply(answers[k]), f"pipelined reply {i}")
        return "100 replies exact and in order"
    finally:
        p.close()


@case("fault-error-then-peer-never-closes")
def _(srv):
    p = Peer(srv)
    try:
        p.send(H(b"[]"))
        m = p.frames(1)[0]
        error_body(m)
        t0 = time.monotonic()
        ok, n, took = wait_fds(srv, srv.fd_base, LINGER + 6)
        if not ok:
            raise Fail(f"server still holds the connection {took:.1f} s after the error reply "
                       f"while the peer keeps it open ({n} fds, baseline {srv.fd_base})")
        return f"server let go after {time.monotonic() - t0:.2f} s of lingering"
    finally:
        p.close()


@case("fault-error-then-garbage-stream")
def _(srv):
    p = Peer(srv)
    try:
        p.send(b"\x00\x00")
        p.frames(1)
        t0 = time.monotonic()
        junk = b"\xff" * 4096
        closed_at = None
        p.sock.settimeout(0.05)
        while time.monotonic() - t0 < LINGER + 4:
            try:
                p.sock.send(junk)
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed_at = time.monotonic() - t0
                break
            if srv.fds() <= srv.fd_base:
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.01)
        if closed_at is None:
            raise Fail(f"server kept a refused connection open for {LINGER + 4:.0f} s while the "
                       f"peer kept sending")
        return f"server let go after {closed_at:.2f} s of garbage"
    finally:
        p.rst()


# ------------------------------------------------------------------------------------------------
# Driver


def shutdown_with_peers(srv):
    """SIGTERM while an idle peer and a half-sent request are attached: the request is still
    answered, the idle peer is closed, no new connection is accepted, the process exits."""
    idle, half = Peer(srv), Peer(srv)
    try:
        half.send(SEARCH_FRAME[:70])
        half.wait_read("70 bytes")        # mid-frame when the signal comes
        t0 = time.monotonic()
        log_pos = len(srv.log_text())
        srv.proc.send_signal(signal.SIGINT if ARGS.windows else signal.SIGTERM)
        # The rest of the request comes after the drain has begun.
        if not wait_until(lambda: re.search(r"finishing \d+ connection", srv.log_text()[log_pos:])
                          or not srv.alive(), IO):
            raise Fail(f"no 'finishing N connection(s)' in the log {IO:.0f} s after SIGTERM")
        half.send(SEARCH_FRAME[70:])
        expect_reply(half, MORPHEUS_REPLY, "request completed after SIGTERM")
        if half.until_close(LINGER + 3) == "open":
            raise Fail("connection not closed after its last reply during the drain")
        st = idle.until_close(LINGER + 3)
        idle_t = time.monotonic() - t0
        if st == "open":
            raise Fail("idle connection not closed during the drain")
        try:
            Peer(srv, timeout=2).close()
            raise Fail("a new connection was accepted after SIGTERM")
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        idle.close()
        half.close()
        try:
            srv.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise Fail("still running 15 s after SIGTERM")
        return (f"SIGTERM: half-sent request completed and answered, idle peer closed after "
                f"{idle_t:.2f} s, exit after {time.monotonic() - t0:.2f} s")
    finally:
        idle.close()
        half.close()


def watchdog(limit):
    def fire():
        print(f"FAIL battery: time limit of {limit:.0f} s exceeded; stopping", flush=True)
        for s in Server.ALL:
            s.kill()
        os._exit(1)
    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


def main():
    global ARGS, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(SRC, "build", "examples"))
    ap.add_argument("--server-cmd", help="command line of the server under test (it must print "
                    "'listening on HOST:PORT' to stderr)")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--windows", action="store_true",
                    help="DIR/app-server.exe under Wine (see above)")
    ARGS = ap.parse_args()
    VERBOSE = ARGS.verbose
    ARGS.server_bin = os.path.join(ARGS.bin_dir, "app-server.exe" if ARGS.windows else "app-server")
    ARGS.wrapper = ["wine"] if ARGS.windows else []
    if ARGS.server_cmd and "--bin-dir" not in sys.argv:
        ARGS.server_bin = shlex.split(ARGS.server_cmd)[0]   # for the cases' own servers
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2400:
        print(f"note: this process may open only {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
              f" descriptors; the 2,000-connection case will be short of them")
    watchdog(ARGS.time_limit)
    t_start = time.monotonic()

    if ARGS.server_cmd:
        main_argv = shlex.split(ARGS.server_cmd)
    else:
        main_argv = [*ARGS.wrapper, ARGS.server_bin, "--idle-timeout", "2", "--frame-timeout",
                     "2", "--max-conns", "200", "--max-content", "65536", "--log-format", "json",
                     "127.0.0.1", "0"]
    passed = failed = 0

    def start_main():
        s = Server(main_argv, "main")
        s.calibrate()
        return s

    srv = start_main()
    print(f"server: {' '.join(main_argv)}  pid {srv.pid} on {srv.host}:{srv.port}, "
          f"fd baseline {srv.fd_base}, rss baseline {srv.rss_base} KiB, log {srv.logf.name}",
          flush=True)
    rss_max = srv.rss_base
    for name, fn in CASES:
        if ARGS.only and ARGS.only not in name:
            continue
        if ARGS.windows and name in POSIX_ONLY:
            print(f"n/a  {name}  (POSIX only: Windows has no descriptor limit to run out of)",
                  flush=True)
            continue
        t0 = time.monotonic()
        log_pos = len(srv.log_text())
        try:
            detail = fn(srv)
            why = None
        except Fail as e:
            why, detail = str(e), None
        except (OSError, socket.timeout) as e:
            why, detail = f"{type(e).__name__}: {e}", None
        try:
            post = post_checks(srv)
            rss_max = max(rss_max, srv.rss_kib()) if srv.alive() else rss_max
        except (Fail, OSError) as e:
            post = None
            why = (why + "; " if why else "") + f"after the case: {e}"
        took = time.monotonic() - t0
        if why is None:
            passed += 1
            print(f"ok   {name}  ({detail}; {post}; {took:.1f}s)", flush=True)
            for ln in log_lines_since(srv, log_pos, 40) if VERBOSE else []:
                print(ln, flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {why}", flush=True)
            for ln in log_lines_since(srv, log_pos, 40 if VERBOSE else 4) if srv.alive() else []:
                print(ln, flush=True)
            if not srv.alive():
                print(f"     main server died (exit {srv.proc.returncode}); restarting it. "
                      f"Log tail:\n{srv.log_text()[-1500:]}", flush=True)
                srv = start_main()

    # The end: still alive, SIGTERM -> 0 (finishing a request in flight), no sanitizer report.
    why = None
    drain = ""
    if not srv.alive():
        why = f"server not alive at the end (exit {srv.proc.returncode})"
    else:
        try:
            drain = shutdown_with_peers(srv)
        except (Fail, OSError) as e:
            why = f"SIGTERM with peers attached: {type(e).__name__}: {e}"
    rc, bad = srv.stop()
    if why is None and rc != 0:
        why = f"SIGTERM exit status {rc!r}, expected 0"
    if why is None and not bad and srv.json_log():
        try:  # every line the main server logged, to its "bye", is one JSON object
            srv.json_lines()
        except Fail as e:
            why = f"its log: {e}"
    if bad:
        why = (why + "; " if why else "") + f"sanitizer report in stderr: {bad[:5]!r}"
    if why:
        failed += 1
        print(f"FAIL shutdown: {why}; log {srv.logf.name}")
    else:
        passed += 1
        print(f"ok   shutdown  ({drain}; exit 0, no sanitizer report; rss baseline "
              f"{srv.rss_base} KiB, max {rss_max} KiB; battery {time.monotonic() - t_start:.0f} s)")
    for s in Server.ALL:
        s.kill()
        if why is None and failed == 0:
            try:
                os.unlink(s.logf.name)
            except OSError:
                pass
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
