#!/usr/bin/env python3
"""An independent re-implementation of the guide's programs, for interoperability tests.

Written from proto/PROTOCOL.md (standard library only, Python 3.8+); it imports nothing from the
project, so it is a second opinion on the wire format, not a copy of appmsg.

    guide_peer.py server HOST PORT                  the app server: one request per connection
    guide_peer.py client HOST PORT ACTION VALUE     the app client: one request, prints the answer
    guide_peer.py mc-server HOST PORT               the multiconn server: echoes raw bytes
    guide_peer.py mc-client HOST PORT NUM_CONNS     the multiconn client

Servers accept port 0, print "listening on HOST:PORT" to stderr (flushed) once they listen, and exit
0 on SIGINT/SIGTERM.  Clients exit 0 on success, 1 on a failure, 2 on a usage error.

Frames are written the way the guide's Python writes them: json.dumps(..., ensure_ascii=False),
the header keys byteorder, content-type, content-encoding, content-length in that order, byteorder
= sys.byteorder, a 2-byte big-endian header length in front.

Library use (the e2e tests import it):

    encode_frame(content_type, content_encoding, content) -> bytes
    build_request(action, value) -> bytes          the guide's client request
    build_json_request(obj) -> bytes               a text/json request of any object
    answer(header, content) -> bytes               the guide's server reply to one request
    FrameReader().feed(data) -> [(header, content), ...]   a guide-like decoder (json.loads)
"""

import json
import selectors
import signal
import socket
import struct
import sys
import time

REQUEST_SEARCH = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}

MC_MESSAGES = (b"Message 1 from client.", b"Message 2 from client.")
IO_TIMEOUT = 10.0


class ProtocolError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# Frames


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def encode_frame(content_type: str, content_encoding: str, content: bytes) -> bytes:
    header = _json_bytes({
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content),
    })
    if len(header) > 0xFFFF:
        raise ValueError("header too long")
    return struct.pack(">H", len(header)) + header + content


def build_json_request(obj) -> bytes:
    return encode_frame("text/json", "utf-8", _json_bytes(obj))


def build_request(action: str, value: str) -> bytes:
    """The guide's client: search is text/json, any other action is binary ACTION + VALUE."""
    if action == "search":
        return build_json_request({"action": action, "value": value})
    return encode_frame("binary/custom-client-binary-type", "binary",
                        (action + value).encode("utf-8"))


def answer(header: dict, content: bytes) -> bytes:
    """The guide's server reply to one request."""
    if header["content-type"] == "text/json":
        request = json.loads(content.decode(header["content-encoding"]))
        action = request.get("action")
        if action == "search":
            query = request.get("value")
            result = REQUEST_SEARCH.get(query) or f"No match for '{query}'."
        else:
            result = f"Error: invalid action '{action}'."
        return encode_frame("text/json", "utf-8", _json_bytes({"result": result}))
    return encode_frame("binary/custom-server-binary-type", "binary",
                        b"First 10 bytes of request: " + content[:10])


class FrameReader:
    """Reads frames like the guide's libclient/libserver: a 2-byte length, a json.loads header with
    the four required keys, then content-length bytes."""

    REQUIRED = ("byteorder", "content-length", "content-type", "content-encoding")

    def __init__(self):
        self.buf = b""
        self.header = None

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while True:
            if self.header is None:
                if len(self.buf) < 2:
                    break
                (hlen,) = struct.unpack(">H", self.buf[:2])
                if len(self.buf) < 2 + hlen:
                    break
                try:
                    header = json.loads(self.buf[2:2 + hlen].decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    raise ProtocolError(f"bad header: {e}") from None
                if not isinstance(header, dict):
                    raise ProtocolError("the header is not an object")
                for key in self.REQUIRED:
                    if key not in header:
                        raise ProtocolError(f"missing required header {key!r}")
                n = header["content-length"]
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise ProtocolError(f"bad content-length {n!r}")
                self.header = header
                self.buf = self.buf[2 + hlen:]
            n = self.header["content-length"]
            if len(self.buf) < n:
                break
            out.append((self.header, self.buf[:n]))
            self.buf = self.buf[n:]
            self.header = None
        return out

    @property
    def in_frame(self) -> bool:
        return self.header is not None or len(self.buf) > 0


def result_text(header: dict, content: bytes) -> str:
    """What the client prints for a reply."""
    if header["content-type"] == "text/json":
        reply = json.loads(content.decode(header["content-encoding"]))
        if isinstance(reply, dict) and "result" in reply:
            return str(reply["result"])
        return content.decode("utf-8", errors="replace")
    return content.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------------
# Helpers


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _port(text: str) -> int:
    p = int(text)
    if not 0 <= p <= 65535:
        raise ValueError(text)
    return p


def _listen(host: str, port: int) -> socket.socket:
    lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(128)
    lsock.setblocking(False)
    h, p = lsock.getsockname()[:2]
    _log(f"listening on {h}:{p}" if ":" not in h else f"listening on [{h}]:{p}")
    return lsock


class _Stop(Exception):
    pass


def _install_signals():
    def handler(signum, frame):
        raise _Stop()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ------------------------------------------------------------------------------------------------
# The app server: one request per connection, then close (as the guide's libserver does)


class _AppConn:
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.reader = FrameReader()
        self.out = b""
        self.answered = False


def run_server(host: str, port: int) -> int:
    sel = selectors.DefaultSelector()
    lsock = _listen(host, port)
    sel.register(lsock, selectors.EVENT_READ, None)
    _install_signals()

    def close(conn):
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    try:
        while True:
            for key, mask in sel.select(timeout=None):
                if key.data is None:
                    try:
                        sock, addr = lsock.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    sock.setblocking(False)
                    sel.register(sock, selectors.EVENT_READ, _AppConn(sock, addr))
                    continue
                conn = key.data
                if mask & selectors.EVENT_READ and not conn.answered:
                    try:
                        data = conn.sock.recv(65536)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        close(conn)
                        continue
                    if data == b"":
                        close(conn)
                        continue
                    if data:
                        try:
                            frames = conn.reader.feed(data)
                            if frames:
                                conn.out = answer(*frames[0])
                        except (ProtocolError, ValueError, KeyError, AttributeError,
                                UnicodeDecodeError, LookupError) as e:
                            _log(f"{conn.addr}: error: {e}; closing")
                            close(conn)
                            continue
                        if frames:
                            conn.answered = True
                            sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                elif mask & selectors.EVENT_WRITE:
                    try:
                        n = conn.sock.send(conn.out)
                    except BlockingIOError:
                        continue
                    except OSError:
                        close(conn)
                        continue
                    conn.out = conn.out[n:]
                    if not conn.out:
                        close(conn)   # one reply, then close, like the guide
    except _Stop:
        pass
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return 0


# ------------------------------------------------------------------------------------------------
# The app client: one request


def run_client(host: str, port: int, action: str, value: str) -> int:
    request = build_request(action, value)
    try:
        sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    except OSError as e:
        _log(f"cannot connect to {host}:{port}: {e}")
        return 1
    reader = FrameReader()
    frames = []
    try:
        sock.sendall(request)
        while not frames:
            data = sock.recv(65536)
            if not data:
                _log("the server closed the connection before replying")
                return 1
            frames = reader.feed(data)
    except (OSError, ProtocolError) as e:
        _log(f"error: {e}")
        return 1
    finally:
        sock.close()
    try:
        text = result_text(*frames[0])
    except (ValueError, LookupError) as e:
        _log(f"bad reply: {e}")
        return 1
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


# ------------------------------------------------------------------------------------------------
# The multiconn server: echo raw bytes on any number of connections


def run_mc_server(host: str, port: int) -> int:
    sel = selectors.DefaultSelector()
    lsock = _listen(host, port)
    sel.register(lsock, selectors.EVENT_READ, None)
    _install_signals()
    pending = {}

    def close(sock):
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        pending.pop(sock, None)
        sock.close()

    try:
        while True:
            for key, mask in sel.select(timeout=None):
                if key.data is None:
                    try:
                        sock, addr = lsock.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    sock.setblocking(False)
                    pending[sock] = b""
                    sel.register(sock, selectors.EVENT_READ, addr)
                    continue
                sock = key.fileobj
                if mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        close(sock)
                        continue
                    if data == b"":
                        close(sock)
                        continue
                    if data:
                        pending[sock] += data
                        sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, key.data)
                if mask & selectors.EVENT_WRITE and pending.get(sock):
                    try:
                        n = sock.send(pending[sock])
                    except BlockingIOError:
                        continue
                    except OSError:
                        close(sock)
                        continue
                    pending[sock] = pending[sock][n:]
                    if not pending[sock]:
                        sel.modify(sock, selectors.EVENT_READ, key.data)
    except _Stop:
        pass
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return 0


# ------------------------------------------------------------------------------------------------
# The multiconn client


def run_mc_client(host: str, port: int, num_conns: int, timeout: float = IO_TIMEOUT) -> int:
    sel = selectors.DefaultSelector()
    total = sum(len(m) for m in MC_MESSAGES)
    state = {}
    for connid in range(1, num_conns + 1):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))
        state[sock] = {"id": connid, "out": list(MC_MESSAGES), "recv": 0}
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connid)
    ok = 0
    deadline = time.monotonic() + timeout
    while state and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.2):
            sock = key.fileobj
            st = state.get(sock)
            if st is None:
                continue
            done = False
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(1024)
                except BlockingIOError:
                    data = None
                except OSError as e:
                    _log(f"connection {st['id']} failed: {e}")
                    data = b""
                if data:
                    print(f"Received {data!r} from connection {st['id']}", flush=True)
                    st["recv"] += len(data)
                    if st["recv"] >= total:
                        ok += st["recv"] == total
                        done = True
                elif data == b"":
                    _log(f"connection {st['id']} closed after {st['recv']} of {total} bytes")
                    done = True
            if not done and mask & selectors.EVENT_WRITE:
                if st["out"]:
                    try:
                        sock.sendall(st["out"].pop(0))   # one message per write, as the guide
                    except OSError as e:
                        _log(f"connection {st['id']} failed: {e}")
                        done = True
                if not st["out"] and not done:
                    sel.modify(sock, selectors.EVENT_READ, key.data)
            if done:
                sel.unregister(sock)
                sock.close()
                del state[sock]
    for sock in state:
        sock.close()
    sel.close()
    if ok != num_conns:
        _log(f"{num_conns - ok} of {num_conns} connections failed")
        return 1
    return 0


# ------------------------------------------------------------------------------------------------


USAGE = ("usage: guide_peer.py server HOST PORT | client HOST PORT ACTION VALUE | "
         "mc-server HOST PORT | mc-client HOST PORT NUM_CONNS")


def main(argv) -> int:
    try:
        if len(argv) == 3 and argv[0] == "server":
            return run_server(argv[1], _port(argv[2]))
        if len(argv) == 5 and argv[0] == "client":
            return run_client(argv[1], _port(argv[2]), argv[3], argv[4])
        if len(argv) == 3 and argv[0] == "mc-server":
            return run_mc_server(argv[1], _port(argv[2]))
        if len(argv) == 4 and argv[0] == "mc-client":
            n = int(argv[3])
            if n < 1:
                raise ValueError(argv[3])
            return run_mc_client(argv[1], _port(argv[2]), n)
    except ValueError as e:
        _log(f"bad argument: {e}")
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
