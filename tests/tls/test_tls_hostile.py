"""Hostile peers on app-server's TLS port.  Each case is followed by two checks: a fresh TLS client
is still answered, and the server's descriptors (/proc/PID/fd) come back to their baseline.
Standard library (and the openssl command for renegotiation).  python3 -m unittest.
"""

import os
import resource
import socket
import ssl
import struct
import subprocess
import time
import unittest

from tls_common import (IO, SLOW, Certs, Server, client_hello, frame, read_frames, search_frame,
                        tls_connect, wait_for)

MORPHEUS = "Follow the white rabbit. \U0001f430".encode()
HANDSHAKE_S = 1  # the server's --handshake-timeout here
SETTLE = 10.0 * SLOW  # handshake timeout + linger + slack, for the descriptors to come back


def raw_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=IO)
    return s


def read_to_end(s, limit=1 << 20):
    """Reads until the server closes (or resets); returns what came."""
    got = b""
    try:
        while len(got) < limit:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except (ConnectionResetError, socket.timeout, ssl.SSLError):
        pass
    return got


class TestHostileTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()
        cls.srv = Server("app-server", "--tls-cert", cls.certs["server.pem"], "--tls-key",
                         cls.certs["server.key"], "--handshake-timeout", str(HANDSHAKE_S),
                         "--idle-timeout", "5", "--frame-timeout", "2")
        # The baseline: once a request is answered the server is fully up (its signal pipe is
        # made after "listening on"); our connection is the one connection it has then.
        with tls_connect(cls.certs, cls.srv.port) as t:
            t.sendall(search_frame("morpheus"))
            read_frames(t, 1)
            cls.base_fds = cls.srv.fds() - 1

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        cls.certs.cleanup()
        assert rc == 0, f"app-server exited {rc}"

    def tearDown(self):
        # (b) a fresh client is served; (c) descriptors back to baseline.
        with tls_connect(self.certs, self.srv.port) as t:
            t.sendall(search_frame("morpheus"))
            self.assertIn(MORPHEUS, read_frames(t, 1)[0])
        back = wait_for(lambda: self.srv.fds() <= self.base_fds, SETTLE)
        self.assertTrue(back, f"descriptors {self.srv.fds()}, baseline {self.base_fds}")
        self.assertEqual(self.srv.p.poll(), None, self.srv.text())

    def log_after(self, mark, needle):
        """Waits until needle appears in the log after byte mark."""
        return wait_for(lambda: needle in self.srv.text()[mark:], IO)

    def test_garbage_instead_of_a_client_hello(self):
        mark = len(self.srv.text())
        with raw_connect(self.srv.port) as s:
            s.sendall(b"\x80\x01garbage that is not TLS at all\r\n" * 3)
            read_to_end(s)
        self.assertTrue(self.log_after(mark, "did not start a TLS handshake"), self.srv.text())

    def test_a_stalled_handshake_times_out(self):
        mark = len(self.srv.text())
        hello = client_hello()
        t0 = time.monotonic()
        with raw_connect(self.srv.port) as a, raw_connect(self.srv.port) as b:
            b.sendall(hello[:len(hello) // 2])  # half a ClientHello, then nothing
            self.assertEqual(read_to_end(a), b"")  # closed by the server, in time
            read_to_end(b)
        self.assertLess(time.monotonic() - t0, HANDSHAKE_S + 5 * SLOW)
        self.assertTrue(self.log_after(mark, "TLS handshake did not finish within 1000 ms"))

    def test_a_plaintext_frame(self):
        mark = len(self.srv.text())
        with raw_connect(self.srv.port) as s:
            s.sendall(search_frame("morpheus"))
            reply = read_to_end(s)
        self.assertEqual(reply, b"")  # refused without a reply, which could only be plaintext
        self.assertTrue(self.log_after(mark, "the client sent a plaintext appmsg frame; is it "
                                             "using TLS?"))

    def test_client_hello_then_close(self):
        mark = len(self.srv.text())
        with raw_connect(self.srv.port) as s:
            s.sendall(client_hello())
            s.shutdown(socket.SHUT_WR)
            read_to_end(s)
        self.assertTrue(self.log_after(mark, "closed the connection during the TLS handshake"),
                        self.srv.text()[mark:])

    def test_records_larger_than_allowed(self):
        # Before the handshake: a handshake record claiming 65535 bytes.
        with raw_connect(self.srv.port) as s:
            s.sendall(b"\x16\x03\x01\xff\xff" + b"\x00" * 4096)
            read_to_end(s)
        # After it: an application-data record of 2^14 + 2^11 + 1 bytes, under the session.
        mark = len(self.srv.text())
        t = tls_connect(self.certs, self.srv.port)
        raw = socket.socket(fileno=os.dup(t.fileno()))
        try:
            n = (1 << 14) + (1 << 11) + 1
            raw.sendall(b"\x17\x03\x03" + struct.pack(">H", n) + b"\x00" * n)
            read_to_end(raw)
        except OSError:
            pass  # closed while we were still sending: as good
        finally:
            raw.close()
            t.close()
        self.assertTrue(self.log_after(mark, "TLS: "), self.srv.text()[mark:])

    def test_renegotiation_is_refused(self):
        mark = len(self.srv.text())
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.srv.port}",
                            "-tls1_2", "-CAfile", self.certs["ca.pem"], "-servername",
                            "localhost"], input=b"R\n", capture_output=True, timeout=IO * 3)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        self.assertIn("RENEGOTIATING", out)
        self.assertIn("no renegotiation", out)  # the server's answer
        self.assertNotIn("AddressSanitizer", self.srv.text()[mark:])

    def test_close_notify_in_the_middle_of_a_frame(self):
        mark = len(self.srv.text())
        t = tls_connect(self.certs, self.srv.port)
        f = search_frame("morpheus")
        t.sendall(f[:len(f) - 5])
        try:
            plain = t.unwrap()  # close_notify; the server answers TRUNCATED and closes
            plain.close()
        except (ssl.SSLError, OSError):
            t.close()
        self.assertTrue(self.log_after(mark, "TRUNCATED"), self.srv.text()[mark:])

    def test_a_thousand_handshakes_that_stop(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        hello = client_hello()
        socks = []
        try:
            for _ in range(1000):
                s = raw_connect(self.srv.port)
                s.sendall(hello)
                socks.append(s)
            # Every one is closed by the server within its handshake timeout.
            deadline = time.monotonic() + HANDSHAKE_S + 20 * SLOW
            closed = 0
            for s in socks:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    while s.recv(65536):
                        pass
                    closed += 1
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            self.assertEqual(closed, 1000)
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    unittest.main()
