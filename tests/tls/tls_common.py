"""What the TLS end-to-end tests share: certificates, programs, peers.  Standard library only.

Programs come from $APPMSG_BIN_DIR (default build/examples) and run under $APPMSG_WRAPPER (e.g.
valgrind) when it is set.  Certificates are made by make_certs.sh into a temporary directory.
Every socket operation has a timeout; every wait is bounded and waits for an event (a log line,
a port, a reply), never a fixed time.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("APPMSG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("APPMSG_BIN_DIR") or os.path.join(SRC, "build", "examples")
WRAPPER = shlex.split(os.environ.get("APPMSG_WRAPPER", ""))
SLOW = 4.0 if WRAPPER else 1.0     # valgrind: everything takes longer
IO = 10.0 * SLOW                   # one socket operation
START_TIMEOUT = 30.0 * SLOW        # until "listening on"
LISTENING_RE = re.compile(r"listening on (\S+):(\d+)")
SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer", "ERROR SUMMARY: [1-9]")


class Certs:
    """A directory of certificates from make_certs.sh; removed by cleanup()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="appmsg-tls-")
        subprocess.run(["sh", os.path.join(HERE, "make_certs.sh"), self.dir], check=True,
                       timeout=60)

    def __getitem__(self, name):
        return os.path.join(self.dir, name)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(cond, timeout, step=0.02):
    """Polls cond() until it is true or timeout passes; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


class Server:
    """A program that listens on 127.0.0.1 port 0 and says where, with its log in a file."""

    def __init__(self, prog, *args, host="127.0.0.1"):
        self.log = tempfile.TemporaryFile()
        self.argv = WRAPPER + [os.path.join(BIN, prog), *args, host, "0"]
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.log)
        m = wait_for(lambda: LISTENING_RE.search(self.text()) or self.p.poll() is not None,
                     START_TIMEOUT)
        if not isinstance(m, re.Match):
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{prog} did not start: {self.text()}")
        self.port = int(m.group(2))

    def text(self):
        if self.log.closed:
            return self.final
        # pread, never seek: the server writes through the same open file description, so a
        # seek(0) here would make a line it writes meanwhile overwrite the top of the log.
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def wait_log(self, needle, timeout=None):
        """Waits until the log contains needle (text or compiled regex); returns whether it did."""
        def seen():
            t = self.text()
            return needle.search(t) if hasattr(needle, "search") else needle in t
        return bool(wait_for(seen, timeout or IO))

    def fds(self):
        return len(os.listdir(f"/proc/{self.p.pid}/fd"))

    def signal(self, sig):
        self.p.send_signal(sig)

    def stop(self):
        """SIGTERM; returns the exit status.  The log must hold no sanitizer report."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        text = self.final = self.text()
        self.log.close()
        for mark in SANITIZER_MARKS:
            if re.search(mark, text):
                raise AssertionError(f"sanitizer or valgrind report in the server's log:\n{text}")
        return self.p.returncode


def run(prog, *args, input=None, timeout=None):
    """Runs a program to its end: CompletedProcess with bytes stdout and text stderr."""
    r = subprocess.run(WRAPPER + [os.path.join(BIN, prog), *args], input=input,
                       capture_output=True, timeout=timeout or 60 * SLOW)
    r.stderr = r.stderr.decode("utf-8", "replace")
    for mark in SANITIZER_MARKS:
        if re.search(mark, r.stderr):
            raise AssertionError(f"sanitizer or valgrind report from {prog}:\n{r.stderr}")
    return r


def frame(content: bytes, ctype="text/json", enc="utf-8") -> bytes:
    """A frame as the guide's client writes it."""
    h = ('{"byteorder": "little", "content-type": "%s", "content-encoding": "%s", '
         '"content-length": %d}' % (ctype, enc, len(content))).encode()
    return struct.pack(">H", len(h)) + h + content


def search_frame(key: str) -> bytes:
    return frame(('{"action": "search", "value": "%s"}' % key).encode())


def read_frames(sock, n, timeout=None):
    """Reads until n whole frames arrived; returns their bytes (raises on an early end)."""
    sock.settimeout(timeout or IO)
    buf = b""
    frames = []
    while len(frames) < n:
        while True:  # a complete frame in buf?
            if len(buf) < 2:
                break
            hl = struct.unpack(">H", buf[:2])[0]
            if len(buf) < 2 + hl:
                break
            cl = int(re.search(rb'"content-length": *(\d+)', buf[2:2 + hl]).group(1))
            if len(buf) < 2 + hl + cl:
                break
            frames.append(buf[:2 + hl + cl])
            buf = buf[2 + hl + cl:]
        if len(frames) >= n:
            break
        d = sock.recv(65536)
        if not d:
            raise AssertionError(f"the stream ended after {len(frames)} of {n} frames")
        buf += d
    return frames


def vec_bytes(path):
    """The stream bytes of a proto/vectors .vec file (its leading "hex" lines)."""
    b = bytearray()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("hex "):
                b += bytes.fromhex(line[4:])
            elif line:
                break
    return bytes(b)


def client_context(certs, ca="ca.pem", cert=None, key=None, alpn=("appmsg",)):
    ctx = ssl.create_default_context(cafile=certs[ca])
    if cert:
        ctx.load_cert_chain(certs[cert], certs[key])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(certs, port, name="localhost", **kw):
    s = socket.create_connection(("127.0.0.1", port), timeout=IO)
    try:
        return client_context(certs, **kw).wrap_socket(s, server_hostname=name)
    except BaseException:
        s.close()
        raise


def client_hello() -> bytes:
    """The bytes of a real TLS ClientHello (Python's ssl, through memory BIOs)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
