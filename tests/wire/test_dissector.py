"""The Wireshark dissector (proto/wireshark/appmsg.lua) on traffic captured at test time.

setUpClass starts app-server on a free loopback port and dumpcap on that port, then makes every
connection below: real app-client runs, and raw sockets for the segmentation and errors the
programs never produce.  It waits (for dumpcap's own reports, never a fixed sleep) until every
connection is closed in the capture, stops dumpcap, and each test reads the capture with
`tshark -X lua_script:appmsg.lua -T fields -e appmsg....` and checks every field and the count of
frames, connection by connection.

Environment:
    APPMSG_BIN_DIR      the built programs (default <repo>/build/examples)
    APPMSG_SOURCE_DIR   the source tree (default: two levels above this file)
    APPMSG_KEEP_CAPTURE a directory to copy the capture into (for looking at it by hand)

Run:  python3 -m unittest -v test_dissector      (from tests/wire)
"""

import fcntl
import json
import os
import re
import select
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
LUA = SRC_DIR / "proto" / "wireshark" / "appmsg.lua"

sys.dont_write_bytecode = True
sys.path.insert(0, str(SRC_DIR / "proto" / "tools"))
import appmsg_ref  # noqa: E402

HOST = "127.0.0.1"
START_TIMEOUT = 30.0     # app-server / dumpcap must be ready within this (ASan builds are slow)
IO_TIMEOUT = 10.0        # any single wait for bytes
CAPTURE_TIMEOUT = 60.0   # every connection must be seen closed in the capture within this
TSHARK_TIMEOUT = 120.0
SIOCOUTQNSD = 0x894B     # linux: bytes in a socket's send queue not yet sent
SEP = "\x1f"             # between occurrences of a field in one packet

# tshark without the user's own configuration: no personal plugins folder (an installed copy of the
# dissector would clash with the one under test) and no personal preferences.
CLEAN_HOME = tempfile.TemporaryDirectory(prefix="appmsg-wire-home-")
TSHARK_ENV = dict(os.environ, HOME=CLEAN_HOME.name,
                  XDG_CONFIG_HOME=os.path.join(CLEAN_HOME.name, ".config"))

GUIDE_REQUEST_HEADER = ('{"byteorder": "little", "content-type": "text/json", '
                        '"content-encoding": "utf-8", "content-length": %d}')


def frame(content_type: str, encoding: str, content: bytes, extra: str = "") -> bytes:
    """A frame written as the guide's json.dumps writes it; extra is raw header text."""
    header = ('{"byteorder": "little", "content-type": %s, "content-encoding": %s, '
              '"content-length": %d%s}' % (json.dumps(content_type), json.dumps(encoding),
                                             len(content), extra)).encode()
    return struct.pack(">H", len(header)) + header + content


def search(value: str, extra: str = "") -> bytes:
    content = json.dumps({"action": "search", "value": value}, ensure_ascii=False).encode()
    return frame("text/json", "utf-8", content, extra)


def registered_tcp_ports() -> set:
    """The TCP ports tshark gives to some other dissector by default."""
    out = subprocess.run(["tshark", "-G", "decodes"], capture_output=True, text=True,
                         timeout=TSHARK_TIMEOUT, env=TSHARK_ENV).stdout
    return {int(p) for t, p, *_ in (line.split("\t") for line in out.splitlines() if "\t" in line)
            if t == "tcp.port" and p.isdigit()}


class Server:
    """app-server on a loopback port that no other dissector claims; stderr read by a thread."""

    def __init__(self, avoid: set):
        for _ in range(20):
            self.p = subprocess.Popen([str(BIN_DIR / "app-server"), "-v", HOST, "0"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
            self.lines = []
            self.cond = threading.Condition()
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
            m = self.wait_line(re.compile(r"listening on \S+:(\d+)"), START_TIMEOUT)
            self.port = int(m.group(1))
            if self.port not in avoid:
                return
            self.stop()
        raise AssertionError("no free port outside the registered ones in 20 tries")

    def _read(self):
        for raw in self.p.stderr:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def wait_line(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line is None:
                        raise AssertionError("app-server exited:\n" + self.log())
                    m = pattern.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"app-server never logged {pattern.pattern!r}:\n"
                                         + self.log())
                self.cond.wait(left)

    def log(self) -> str:
        with self.cond:
            return "\n".join(line for line in self.lines if line is not None)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.p.wait(10)
        self.reader.join(10)
        self.p.stderr.close()


class Dumpcap:
    """dumpcap on lo for one TCP port.  Every few hundred milliseconds dumpcap flushes its file and
    reports "Packets: N" on stderr; each report is the moment to look at what the file holds."""

    def __init__(self, port: int, path: Path):
        self.path = path
        self.p = subprocess.Popen(["dumpcap", "-i", "lo", "-f", f"tcp port {port}", "-w",
                                   str(path)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.text = ""
        self.reports = 0
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # "File: ..." comes once the interface is open and its filter set: from then on every
        # packet is kept.
        self.wait(lambda: "File: " in self.text, START_TIMEOUT, "start")

    def _read(self):
        while True:
            chunk = os.read(self.p.stderr.fileno(), 4096)
            with self.cond:
                if not chunk:
                    self.text += "\n<exit>"
                    self.cond.notify_all()
                    return
                self.text += chunk.decode("utf-8", "replace")
                self.reports = self.text.count("Packets: ")
                self.cond.notify_all()

    def wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not ready():
                if "<exit>" in self.text:
                    raise AssertionError(f"dumpcap exited before {what}:\n{self.text}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"dumpcap: no {what} within {timeout} s:\n{self.text}")
                self.cond.wait(left)

    def wait_until(self, done, timeout):
        """Calls done() after each of dumpcap's reports until it returns True."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self.cond:
                while self.reports == seen and "<exit>" not in self.text:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"capture incomplete after {timeout} s:\n{self.text}")
                    self.cond.wait(left)
                seen = self.reports
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"capture incomplete after {timeout} s:\n{self.text}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.p.wait(10)
        self.reader.join(10)
        self.p.stderr.close()


def closed_streams(path: Path) -> int:
    """The TCP connections of the capture that are over: FIN both ways, or a reset."""
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.stream",
                        "-e", "tcp.srcport", "-e", "tcp.flags.fin", "-e", "tcp.flags.reset"],
                       capture_output=True, text=True, timeout=TSHARK_TIMEOUT, env=TSHARK_ENV)
    fins, resets = {}, set()
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        stream, port, fin, rst = parts[0], parts[1], parts[2], parts[3]
        if fin in ("1", "True"):
            fins.setdefault(stream, set()).add(port)
        if rst in ("1", "True"):
            resets.add(stream)
    return len({s for s, ports in fins.items() if len(ports) == 2} | resets)


class Client:
    """A raw client socket on a port no other dissector claims, reading replies with the reference
    decoder."""

    def __init__(self, port: int, avoid: set, nodelay=False):
        for _ in range(20):
            s = socket.socket()
            s.bind((HOST, 0))
            if s.getsockname()[1] not in avoid:
                break
            s.close()
        else:
            raise AssertionError("no client port outside the registered ones in 20 tries")
        self.s = s
        if nodelay:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(IO_TIMEOUT)
        s.connect((HOST, port))
        self.port = s.getsockname()[1]
        self.dec = appmsg_ref.Decoder(max_content_length=1 << 24)

    def send(self, data: bytes):
        self.s.sendall(data)

    def send_each_byte(self, data: bytes):
        """One byte per TCP segment: each byte leaves the socket before the next is written."""
        for i in range(len(data)):
            self.s.send(data[i:i + 1])
            deadline = time.monotonic() + IO_TIMEOUT
            while struct.unpack("i", fcntl.ioctl(self.s, SIOCOUTQNSD, b"\0" * 4))[0] > 0:
                if time.monotonic() > deadline:
                    raise AssertionError("a byte stayed in the send queue")
                select.select([], [], [], 0.001)

    def replies(self, n: int) -> list:
        out = []
        deadline = time.monotonic() + IO_TIMEOUT
        while len(out) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(out)} of {n} replies")
            chunk = self.s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {len(out)} of {n} replies")
            out += self.dec.feed(chunk)
        return out

    def until_closed(self) -> list:
        """Reads replies until the server closes the connection."""
        out = []
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            chunk = self.s.recv(65536)
            if not chunk:
                return out
            out += self.dec.feed(chunk)
        raise AssertionError("the server did not close the connection")

    def close(self):
        self.s.close()


def run_client(port: int, *args, stdin=None) -> str:
    r = subprocess.run([str(BIN_DIR / "app-client"), "--timeout", str(IO_TIMEOUT), HOST, str(port),
                        *args], input=stdin, capture_output=True, timeout=IO_TIMEOUT * 3)
    assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r.stdout.decode()


class Dissector(unittest.TestCase):
    """Each test looks at one connection (by its client port) of the one capture."""

    conns = {}           # name -> client port, for the raw connections
    tool_ports = []      # client ports of the app-client runs, in order

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="appmsg-wire-")
        cls.avoid = registered_tcp_ports()
        cls.pcap = Path(cls.tmp.name) / "appmsg.pcapng"
        cls.server = Server(cls.avoid)
        cls.port = cls.server.port
        cap = Dumpcap(cls.port, cls.pcap)
        try:
            count = cls.make_traffic()
            cap.wait_until(lambda: closed_streams(cls.pcap) >= count, CAPTURE_TIMEOUT)
        finally:
            cap.stop()
            cls.server.stop()
        keep = os.environ.get("APPMSG_KEEP_CAPTURE")
        if keep:
            shutil.copy(cls.pcap, keep)
        cls.cache = {}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def make_traffic(cls) -> int:
        """Every connection of the capture; returns their count."""
        port, avoid, conns = cls.port, cls.avoid, cls.conns
        accepted = 0

        def accepted_one():
            nonlocal accepted
            accepted += 1

        # The programs themselves.
        assert run_client(port, "search", "morpheus") == "Follow the white rabbit. 🐰\n"
        assert run_client(port, "search", "🐶") == "🐾 Playing ball! 🏐\n"
        assert run_client(port, "double", "42") == "First 10 bytes of request: double42\n"
        out = run_client(port, "-", stdin=b"search morpheus\nsearch ring\n")
        assert "Follow the white rabbit" in out and "Misty Mountains" in out, out
        for _ in range(4):
            accepted_one()

        # One frame, one byte per segment.
        c = Client(port, avoid, nodelay=True)
        c.send_each_byte(search("morpheus"))
        assert c.replies(1)[0].content == '{"result": "Follow the white rabbit. 🐰"}'.encode()
        c.close()
        conns["one_byte"] = c.port
        accepted_one()

        # Three pipelined requests in one write (one segment), the second with a request id.
        c = Client(port, avoid)
        c.send(search("morpheus") + search("ring", ', "request-id": 7') + search("nosuchkey"))
        assert len(c.replies(3)) == 3
        c.close()
        conns["pipelined"] = c.port
        accepted_one()

        # Not appmsg: an HTTP request on the port; the server answers with an error and closes.
        c = Client(port, avoid)
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        cls.http_replies = c.until_closed()
        c.close()
        conns["http"] = c.port
        accepted_one()

        # An error reply: content-length above the server's limit.
        c = Client(port, avoid)
        header = (GUIDE_REQUEST_HEADER % 2000000).encode()
        c.send(struct.pack(">H", len(header)) + header)
        cls.too_large_replies = c.until_closed()
        c.close()
        conns["too_large"] = c.port
        accepted_one()

        # Malformed frames: header length 0, a header that is not JSON, a required field missing.
        for name, data in (("empty", b"\x00\x00"),
                           ("not_json", b"\x00\x07{nope!}"),
                           ("missing", struct.pack(">H", 73)
                            + b'{"byteorder": "little", "content-type": "text/json", '
                              b'"content-length": 2}{}')):
            c = Client(port, avoid)
            c.send(data)
            c.until_closed()
            c.close()
            conns[name] = c.port
            accepted_one()

        # Content that is not JSON: a content error, the connection goes on.
        c = Client(port, avoid)
        c.send(frame("text/json", "utf-8", b'{"action": "search", "value": }') + search("ring"))
        cls.content_replies = c.replies(2)
        c.close()
        conns["bad_content"] = c.port
        accepted_one()

        # A 200,000-byte frame (several segments on lo), then a small one.
        c = Client(port, avoid)
        big = bytes(range(256)) * 781 + b"\x01" * 64
        c.send(frame("binary/custom-client-binary-type", "binary", big) + search("ring"))
        assert len(c.replies(2)) == 2
        c.close()
        conns["big"] = c.port
        accepted_one()
        return accepted

    # ---- reading the capture

    FIELDS = ("frame.number", "tcp.srcport", "tcp.dstport", "tcp.len", "appmsg.header_length",
              "appmsg.header", "appmsg.byteorder", "appmsg.content_type",
              "appmsg.content_encoding", "appmsg.content_length", "appmsg.content",
              "appmsg.request_id", "appmsg.action", "appmsg.result", "appmsg.error",
              "appmsg.malformed", "appmsg.content.invalid", "appmsg.not_reassembled",
              "_ws.expert.message",
              "appmsg.continuation", "_ws.col.Info", "_ws.col.Protocol")

    def tshark(self, *prefs):
        """Rows (dicts of field -> list of occurrences) of every packet, for these preferences."""
        key = prefs
        if key not in self.cache:
            argv = ["tshark", "-n", "-r", str(self.pcap), "-X", f"lua_script:{LUA}",
                    "-T", "fields", "-E", "separator=\t", "-E", f"aggregator={SEP}",
                    "-E", "occurrence=a"]
            for p in prefs:
                argv += ["-o", p]
            for name in self.FIELDS:
                argv += ["-e", name]
            r = subprocess.run(argv, capture_output=True, timeout=TSHARK_TIMEOUT, env=TSHARK_ENV)
            err = r.stderr.decode("utf-8", "replace")
            self.assertEqual(r.returncode, 0, err)
            self.assertNotRegex(err, r"(?i)lua.*error|error.*lua", err)
            rows = []
            for line in r.stdout.decode("utf-8").split("\n"):
                if not line:
                    continue
                vals = line.split("\t")
                self.assertEqual(len(vals), len(self.FIELDS), line)
                rows.append({k: (v.split(SEP) if v else []) for k, v in zip(self.FIELDS, vals)})
            self.cache[key] = rows
        return self.cache[key]

    def main_view(self):
        return self.tshark(f"appmsg.tcp_ports:{self.port}", "tcp.try_heuristic_first:TRUE")

    def packets(self, rows, client_port, direction=None):
        """The packets of one connection with appmsg in them; direction 'request' or 'reply'."""
        out = []
        for r in rows:
            ports = (int(r["tcp.srcport"][0]), int(r["tcp.dstport"][0]))
            if client_port not in ports or not r["_ws.col.Protocol"] == ["appmsg"]:
                continue
            is_req = ports[0] == client_port
            if direction is None or (direction == "request") == is_req:
                out.append(r)
        return out

    def frames(self, rows, client_port, direction):
        """Every appmsg frame of one direction of one connection, as dicts: a field that every
        frame of its packet has gives its own value; any other field, the packet's list."""
        out = []
        for r in self.packets(rows, client_port, direction):
            n = len(r["appmsg.header_length"])
            for i in range(n):
                out.append({k: (r[k][i] if len(r[k]) == n and n > 1 else
                                r[k][0] if len(r[k]) == 1 and n == 1 else r[k])
                            for k in self.FIELDS})
        return out

    def assert_frame(self, fr, ctype, encoding, content: bytes, header: str = None, **more):
        hdr = header or ('{"byteorder": "little", "content-type": "%s", "content-encoding": "%s", '
                         '"content-length": %d}' % (ctype, encoding, len(content)))
        self.assertEqual(fr["appmsg.header_length"], str(len(hdr.encode())))
        self.assertEqual(fr["appmsg.header"], hdr)
        self.assertEqual(fr["appmsg.byteorder"], "little")
        self.assertEqual(fr["appmsg.content_type"], ctype)
        self.assertEqual(fr["appmsg.content_encoding"], encoding)
        self.assertEqual(fr["appmsg.content_length"], str(len(content)))
        self.assertEqual(fr["appmsg.content"], content.hex())
        for k, v in more.items():
            self.assertEqual(fr["appmsg." + k], v, k)

    def tool_streams(self, rows):
        """The client ports of the app-client runs, in the order they ran."""
        raw = set(self.conns.values())
        seen = []
        for r in rows:
            p = int(r["tcp.srcport"][0])
            if int(r["tcp.dstport"][0]) == self.port and p not in raw and p not in seen:
                seen.append(p)
        return seen

    # ---- the programs

    def test_a_search_request_and_its_reply_show_action_result_and_every_header_field(self):
        rows = self.main_view()
        port = self.tool_streams(rows)[0]
        req = self.frames(rows, port, "request")
        rep = self.frames(rows, port, "reply")
        self.assertEqual((len(req), len(rep)), (1, 1))
        self.assert_frame(req[0], "text/json", "utf-8",
                          b'{"action": "search", "value": "morpheus"}', action="search",
                          result=[])
        self.assertEqual(req[0]["_ws.col.Info"], 'Request search "morpheus"')
        self.assert_frame(rep[0], "text/json", "utf-8",
                          '{"result": "Follow the white rabbit. 🐰"}'.encode(),
                          result="Follow the white rabbit. 🐰", action=[])
        self.assertEqual(rep[0]["_ws.col.Info"], 'Response "Follow the white rabbit. 🐰"')

    def test_non_ascii_values_come_through_as_utf8(self):
        rows = self.main_view()
        port = self.tool_streams(rows)[1]
        req, rep = self.frames(rows, port, "request"), self.frames(rows, port, "reply")
        self.assertEqual(req[0]["_ws.col.Info"], 'Request search "🐶"')
        self.assertEqual(rep[0]["appmsg.result"], "🐾 Playing ball! 🏐")

    def test_the_guides_binary_request_and_reply(self):
        rows = self.main_view()
        port = self.tool_streams(rows)[2]
        req, rep = self.frames(rows, port, "request"), self.frames(rows, port, "reply")
        self.assertEqual((len(req), len(rep)), (1, 1))
        self.assert_frame(req[0], "binary/custom-client-binary-type", "binary", b"double42",
                          action=[], result=[])
        self.assertEqual(req[0]["_ws.col.Info"], "Request binary/custom-client-binary-type 8 bytes")
        body = b"First 10 bytes of request: double42"
        self.assert_frame(rep[0], "binary/custom-server-binary-type", "binary", body)
        self.assertEqual(rep[0]["_ws.col.Info"],
                         f"Response binary/custom-server-binary-type {len(body)} bytes")

    def test_app_client_pipelining_gives_two_requests_and_two_replies_in_order(self):
        rows = self.main_view()
        port = self.tool_streams(rows)[3]
        req, rep = self.frames(rows, port, "request"), self.frames(rows, port, "reply")
        self.assertEqual([f["_ws.col.Info"] for f in req if "|" not in f["_ws.col.Info"]],
                         [f["_ws.col.Info"] for f in req if "|" not in f["_ws.col.Info"]])
        self.assertEqual([f["appmsg.action"] for f in req], ["search", "search"])
        self.assertEqual([f["appmsg.result"] for f in rep],
                         ["Follow the white rabbit. 🐰",
                          "In the caves beneath the Misty Mountains. 💍"])

    def test_the_capture_holds_exactly_the_expected_frames(self):
        rows = self.main_view()
        tools = self.tool_streams(rows)
        self.assertEqual(len(tools), 4)
        counts = [(len(self.frames(rows, p, "request")), len(self.frames(rows, p, "reply")))
                  for p in tools]
        self.assertEqual(counts, [(1, 1), (1, 1), (1, 1), (2, 2)])
        # The request whose content-length is above the server's limit never completes.
        expect = {"one_byte": (1, 1), "pipelined": (3, 3), "http": (0, 1), "too_large": (0, 1),
                  "empty": (0, 1), "not_json": (0, 1), "missing": (0, 1), "bad_content": (2, 2),
                  "big": (2, 2)}
        got = {}
        rows = self.tshark(f"appmsg.tcp_ports:{self.port}")     # raw clients: no other claims
        for name, port in self.conns.items():
            got[name] = tuple(sum(1 for f in self.frames(rows, port, d)
                                  if f["appmsg.content_length"])
                              for d in ("request", "reply"))
        self.assertEqual(got, expect)

    # ---- segmentation

    def test_a_frame_sent_one_byte_per_segment_is_reassembled_into_one(self):
        rows = self.main_view()
        port = self.conns["one_byte"]
        frame_len = len(search("morpheus"))
        payloads = [r for r in rows if r["tcp.srcport"] == [str(port)]
                    and r["tcp.len"] and r["tcp.len"][0] != "0"]
        self.assertEqual([r["tcp.len"][0] for r in payloads], ["1"] * frame_len)
        req = self.frames(rows, port, "request")
        self.assertEqual(len(req), 1)
        self.assert_frame(req[0], "text/json", "utf-8",
                          b'{"action": "search", "value": "morpheus"}', action="search")
        self.assertEqual(req[0]["frame.number"], payloads[-1]["frame.number"][0])
        self.assertEqual(req[0]["_ws.col.Info"], 'Request search "morpheus"')

    def test_three_pipelined_requests_in_one_segment_are_three_frames(self):
        rows = self.main_view()
        port = self.conns["pipelined"]
        pkts = self.packets(rows, port, "request")
        self.assertEqual(len(pkts), 1)
        p = pkts[0]
        self.assertEqual(p["tcp.len"], [str(len(search("morpheus") + search("ring", ', "request-id": 7')
                                                + search("nosuchkey")))])
        self.assertEqual(p["appmsg.action"], ["search"] * 3)
        self.assertEqual(len(p["appmsg.header_length"]), 3)
        self.assertEqual(p["appmsg.request_id"], ["7"])
        self.assertEqual(p["_ws.col.Info"], ['Request search "morpheus" | Request search "ring" | '
                                             'Request search "nosuchkey"'])
        results = [f["appmsg.result"] for f in self.frames(rows, port, "reply")]
        self.assertEqual(results, ["Follow the white rabbit. 🐰",
                                   "In the caves beneath the Misty Mountains. 💍",
                                   "No match for 'nosuchkey'."])

    def test_a_frame_across_several_segments_is_reassembled_and_the_next_one_found(self):
        rows = self.main_view()
        port = self.conns["big"]
        segments = [r for r in rows if r["tcp.srcport"] == [str(port)]
                    and r["tcp.len"] and r["tcp.len"][0] != "0"]
        self.assertGreaterEqual(len(segments), 3)
        req = self.frames(rows, port, "request")
        self.assertEqual(len(req), 2)
        big = bytes(range(256)) * 781 + b"\x01" * 64
        self.assert_frame(req[0], "binary/custom-client-binary-type", "binary", big,
                          action=["search"])    # the packet's: the second frame's
        self.assertEqual(req[1]["appmsg.content_length"], str(len(search("ring")) - 105))

    def test_a_frame_above_the_reassembly_maximum_is_not_reassembled(self):
        rows = self.tshark(f"appmsg.tcp_ports:{self.port}", "tcp.try_heuristic_first:TRUE",
                           "appmsg.max_frame:100000")
        port = self.conns["big"]
        pkts = self.packets(rows, port, "request")
        first = pkts[0]
        self.assertEqual(first["appmsg.content_length"][:1], ["200000"])
        self.assertEqual(len(first["appmsg.not_reassembled"]), 1)
        self.assertIn("not reassembled", first["_ws.col.Info"][0])
        cont = sum(len(bytes.fromhex(r["appmsg.continuation"][0])) for r in pkts
                   if r["appmsg.continuation"])
        shown = len(bytes.fromhex(first["appmsg.content"][0])) if first["appmsg.content"] else 0
        self.assertEqual(shown + cont, 200000)
        # The frame after it is found all the same.
        self.assertEqual(sum((r["appmsg.action"] for r in pkts), []), ["search"])
        # A request that announces 2,000,000 bytes shows its header at once.
        pkts = self.packets(rows, self.conns["too_large"], "request")
        self.assertEqual(len(pkts), 1)
        self.assertEqual(pkts[0]["appmsg.content_length"], ["2000000"])
        self.assertEqual(len(pkts[0]["appmsg.not_reassembled"]), 1)
        self.assertEqual(pkts[0]["_ws.col.Info"],
                         ["Request text/json 2000000 bytes (not reassembled)"])

    # ---- errors and other protocols

    def test_an_error_reply_shows_its_name_and_reason(self):
        self.assertEqual(self.too_large_replies[0].header["content-type"], "text/json")
        rows = self.main_view()
        port = self.conns["too_large"]
        rep = self.frames(rows, port, "reply")
        self.assertEqual(len(rep), 1)
        body = json.loads(self.too_large_replies[0].content)
        self.assertEqual(rep[0]["appmsg.error"], "CONTENT_TOO_LARGE")
        self.assertEqual(rep[0]["appmsg.result"], body["result"])
        self.assertEqual(rep[0]["_ws.col.Info"],
                         'Error CONTENT_TOO_LARGE "%s"' % body["result"][:80]
                         + ("..." if len(body["result"]) > 80 else ""))
        # The request itself is a well-formed frame whose content never came.
        self.assertEqual(self.frames(rows, port, "request"), [])

    def test_a_non_appmsg_stream_on_the_port_is_marked_malformed_not_misread(self):
        # Without trying heuristics first: Wireshark's HTTP heuristic would take the stream.
        rows = self.tshark(f"appmsg.tcp_ports:{self.port}")
        port = self.conns["http"]
        req = self.packets(rows, port, "request")
        self.assertEqual(len(req), 1)
        self.assertEqual(len(req[0]["appmsg.malformed"]), 1)
        self.assertIn("not appmsg", " ".join(req[0]["_ws.expert.message"]))
        self.assertEqual(req[0]["appmsg.content_type"], [])
        rep = self.frames(rows, port, "reply")
        self.assertEqual(len(rep), 1)
        self.assertEqual(rep[0]["appmsg.error"], "HEADER_NOT_OBJECT")
        self.assertTrue(rep[0]["_ws.col.Info"].startswith("Error HEADER_NOT_OBJECT "))

    def test_malformed_frames_get_expert_info_and_no_fields(self):
        rows = self.main_view()
        for name, text, error in (("empty", "header length 0", "HEADER_EMPTY"),
                                  ("not_json", "not a strict JSON object", "HEADER_JSON"),
                                  ("missing", 'required header key "content-encoding" is missing',
                                   "FIELD_MISSING")):
            with self.subTest(name):
                port = self.conns[name]
                req = self.packets(rows, port, "request")
                self.assertEqual(len(req), 1)
                self.assertEqual(len(req[0]["appmsg.malformed"]), 1)
                self.assertIn(text, " ".join(req[0]["_ws.expert.message"]))
                self.assertEqual(req[0]["appmsg.content_length"], [])
                self.assertTrue(req[0]["_ws.col.Info"][0].startswith("Malformed: "))
                rep = self.frames(rows, port, "reply")
                self.assertEqual([f["appmsg.error"] for f in rep], [error])

    def test_content_that_is_not_json_is_flagged_and_the_stream_goes_on(self):
        rows = self.main_view()
        port = self.conns["bad_content"]
        req = self.frames(rows, port, "request")
        self.assertEqual(len(req), 2)
        self.assertEqual(len(req[0]["appmsg.content.invalid"]), 1)
        self.assertIn("at content byte 30", " ".join(req[0]["_ws.expert.message"]))
        self.assertEqual(req[1]["appmsg.action"], ["search"])     # in the second frame only
        rep = self.frames(rows, port, "reply")
        self.assertEqual(rep[0]["appmsg.error"], ["CONTENT_JSON"])
        self.assertEqual(rep[1]["appmsg.result"], "In the caves beneath the Misty Mountains. 💍")

    # ---- registration

    def test_the_heuristic_finds_appmsg_on_a_port_not_configured(self):
        rows = self.tshark("tcp.try_heuristic_first:TRUE")     # only 65432 is configured
        tools = self.tool_streams(rows)
        found = [len(self.frames(rows, p, "request")) for p in tools]
        self.assertEqual(found, [1, 1, 1, 2])
        self.assertEqual(len(self.frames(rows, self.conns["pipelined"], "request")), 3)

    def test_the_heuristic_preference_turns_it_off(self):
        rows = self.tshark("tcp.try_heuristic_first:TRUE", "appmsg.heuristic:FALSE")
        self.assertEqual([r for r in rows if r["_ws.col.Protocol"] == ["appmsg"]], [])

    def test_the_port_preference_alone_decodes_the_stream(self):
        rows = self.tshark(f"appmsg.tcp_ports:{self.port}", "appmsg.heuristic:FALSE")
        for name in ("one_byte", "pipelined", "big"):
            with self.subTest(name):
                self.assertGreater(len(self.frames(rows, self.conns[name], "request")), 0)
                self.assertGreater(len(self.frames(rows, self.conns[name], "reply")), 0)


if __name__ == "__main__":
    unittest.main()


def write_pcap(path: Path, streams):
    """A classic pcap of TCP segments (Ethernet, IPv4, TCP; checksums left 0, which Wireshark does
    not verify by default): each stream is (client port, [payload segments]) to 127.0.0.1:65432."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    t = 0
    for port, segments in streams:
        seq = 1000
        for seg in segments:
            tcp = struct.pack(">HHIIBBHHH", port, 65432, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(seg), 0, 0x4000, 64, 6,
                             0, socket.inet_aton(HOST), socket.inet_aton(HOST))
            frame_bytes = b"\0" * 12 + b"\x08\x00" + ip + tcp + seg
            t += 1
            out += struct.pack("<IIII", t, 0, len(frame_bytes), len(frame_bytes)) + frame_bytes
            seq += len(seg)
    path.write_bytes(bytes(out))


class DissectorOnVectors(unittest.TestCase):
    """Every vector of proto/vectors, as one TCP stream each, through the dissector: never a Lua
    error; valid streams give exactly their messages and no expert info of a malformed frame;
    every content error of proto/vectors/content is flagged and no passing content is."""

    def test_every_vector_is_dissected_without_an_error_and_valid_ones_exactly(self):
        vectors = []
        for p in sorted((SRC_DIR / "proto" / "vectors").rglob("*.vec")):
            v = appmsg_ref.load_vector(str(p))
            if v.stream:
                vectors.append((p, v))
        streams = []
        for i, (p, v) in enumerate(vectors):
            segments = [v.stream[k:k + 60000] for k in range(0, len(v.stream), 60000)]
            streams.append((20000 + i, segments))
        with tempfile.TemporaryDirectory(prefix="appmsg-vec-") as tmp:
            pcap = Path(tmp) / "vectors.pcap"
            write_pcap(pcap, streams)
            r = subprocess.run(["tshark", "-n", "-r", str(pcap), "-X", f"lua_script:{LUA}",
                                "-o", "appmsg.heuristic:FALSE", "-T", "fields", "-E",
                                f"aggregator={SEP}", "-E", "occurrence=a", "-e", "tcp.srcport",
                                "-e", "appmsg.header_length", "-e", "appmsg.content_length",
                                "-e", "appmsg.malformed", "-e", "appmsg.content.invalid",
                                "-e", "_ws.expert.message", "-e", "_ws.col.Info"],
                               capture_output=True, timeout=TSHARK_TIMEOUT, env=TSHARK_ENV)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, err)
        per = {}
        for line in r.stdout.decode("utf-8").splitlines():
            port, hl, cl, bad, cbad, expert, info = (line.split("\t") + [""] * 7)[:7]
            self.assertNotIn("Lua Error", expert + info, line)
            self.assertNotIn("dissector failure", expert, line)
            d = per.setdefault(int(port), {"messages": 0, "malformed": 0, "content": 0})
            d["messages"] += len(cl.split(SEP)) if cl else 0
            d["malformed"] += len(bad.split(SEP)) if bad else 0
            d["content"] += len(cbad.split(SEP)) if cbad else 0
        checked = 0
        for i, (p, v) in enumerate(vectors):
            d = per.get(20000 + i, {"messages": 0, "malformed": 0, "content": 0})
            msgs = [m for m in v.expected if isinstance(m, appmsg_ref.ExpectedMessage)]
            if all(isinstance(m, appmsg_ref.ExpectedMessage) for m in v.expected):
                with self.subTest(str(p.relative_to(SRC_DIR))):
                    self.assertEqual(d["messages"], len(msgs))
                    self.assertEqual(d["malformed"], 0)
                    bad_content = sum(1 for m in msgs if m.check not in (None, "ok"))
                    # (The dissector checks content with the default depth, 64.)
                    if any(m.check is not None for m in msgs) and v.content_depth == 64:
                        self.assertEqual(d["content"], bad_content)
                    checked += 1
            elif (v.expected[-1].name in self.FRAMING_ERRORS
                  and v.max_header_length == appmsg_ref.DEFAULT_MAX_HEADER_LENGTH):
                with self.subTest(str(p.relative_to(SRC_DIR))):
                    self.assertEqual((d["messages"], d["malformed"]), (len(msgs), 1))
                    checked += 1
        self.assertGreater(checked, 200)

    # Errors the dissector finds as a receiver would (not limits, which are the receiver's, and
    # not the end of the stream, which a capture cannot tell from a capture cut short).
    FRAMING_ERRORS = {"HEADER_EMPTY", "HEADER_NOT_OBJECT", "HEADER_UTF8", "HEADER_JSON",
                      "HEADER_DEPTH", "HEADER_TRAILING", "HEADER_DUPLICATE", "FIELD_MISSING",
                      "FIELD_TYPE", "BYTEORDER", "CONTENT_LENGTH"}
