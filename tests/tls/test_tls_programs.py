"""The programs over TLS, end to end: app-client and kv-client against app-server and kv-server,
openssl s_client and a Python ssl peer sending the guide's frames, mutual TLS accepted and
refused, the client's refusals (wrong name, untrusted CA, expired certificate), plaintext on one
side and TLS on the other, ALPN, and a SIGHUP reload.  Standard library only (python3 -m unittest).
"""

import datetime
import glob
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import unittest

from tls_common import (IO, SRC, Certs, Server, read_frames, run, search_frame, tls_connect,
                        vec_bytes, wait_for)

MORPHEUS = "Follow the white rabbit. \U0001f430"


class TLSCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.cleanup()

    def server(self, prog="app-server", *args, cert="server.pem", key="server.key"):
        s = Server(prog, "--tls-cert", self.certs[cert], "--tls-key", self.certs[key], *args)
        self.addCleanup(lambda: self.assertEqual(s.stop(), 0, s.text()))
        return s

    def client(self, port, *operands, opts=(), prog="app-client", ca="ca.pem", input=None):
        """prog --tls --tls-ca CA OPTS 127.0.0.1 PORT OPERANDS..."""
        ca_args = ("--tls-ca", self.certs[ca]) if ca else ()
        return run(prog, "--tls", *ca_args, *opts, "127.0.0.1", str(port), *operands, input=input)


class TestAnswers(TLSCase):
    def test_search_binary_and_pipelined(self):
        s = self.server()
        r = self.client(s.port, "search", "morpheus")
        self.assertEqual((r.returncode, r.stdout.decode()), (0, MORPHEUS + "\n"), r.stderr)
        r = self.client(s.port, "double", "42")
        self.assertEqual(r.stdout, b"First 10 bytes of request: double42\n", r.stderr)
        lines = "".join(f"search {k}\n" if i % 2 else f"binary{i} x\n"
                        for i, k in enumerate(["morpheus", "ring", "\U0001f436"] * 20))
        r = self.client(s.port, "-", input=lines.encode())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode().splitlines()
        self.assertEqual(len(out), 60)
        self.assertEqual(out[1], "In the caves beneath the Misty Mountains. \U0001f48d")
        self.assertEqual(out[0], "First 10 bytes of request: binary0x")

    def test_metrics_tell_when_the_certificate_expires(self):
        import urllib.request
        s = self.server("app-server", "--metrics", "127.0.0.1:0")
        self.assertTrue(s.wait_log(re.compile(r"on http://127\.0\.0\.1:(\d+)/")), s.text())
        mport = re.search(r"on http://127\.0\.0\.1:(\d+)/", s.text()).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(r"^appmsg_tls_certificate_expiry_timestamp_seconds (\d+)$", text, re.M)
        self.assertIsNotNone(m, text[-1500:])
        # The same instant openssl reads from the certificate.
        end = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-dateopt", "iso_8601",
                              "-in", self.certs["server.pem"]],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(end.returncode, 0, end.stderr)
        when = datetime.datetime.strptime(end.stdout.strip().split("=", 1)[1],
                                          "%Y-%m-%d %H:%M:%SZ")
        self.assertEqual(int(m.group(1)),
                         int(when.replace(tzinfo=datetime.timezone.utc).timestamp()))

    def test_large_content_crosses_many_records(self):
        data = os.path.join(self.certs.dir, "big.json")
        big = "".join(chr(0x41 + i % 26) for i in range(600000))
        with open(data, "w") as f:
            json.dump({"big": big}, f)
        s = self.server("app-server", "--data", data)
        r = self.client(s.port, "search", "big")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), big + "\n")
        # A 700 KB request the other way, from a Python peer.
        with tls_connect(self.certs, s.port) as t:
            t.sendall(search_frame("x" * 700000))
            reply = read_frames(t, 1)[0]
        self.assertIn(b"No match for 'xxxx", reply)

    def test_guide_frames_from_a_python_ssl_peer(self):
        s = self.server()
        vecs = sorted(glob.glob(os.path.join(SRC, "proto", "vectors", "guide", "*.request.vec")))
        self.assertGreaterEqual(len(vecs), 5)
        with tls_connect(self.certs, s.port) as t:
            self.assertEqual(t.selected_alpn_protocol(), "appmsg")
            self.assertIn(t.version(), ("TLSv1.3", "TLSv1.2"))
            for v in vecs:  # one at a time
                t.sendall(vec_bytes(v))
                got = read_frames(t, 1)[0]
                self.assertEqual(got, vec_bytes(v.replace(".request.", ".response.")), v)
            t.sendall(b"".join(vec_bytes(v) for v in vecs))  # pipelined
            got = b"".join(read_frames(t, len(vecs)))
            want = b"".join(vec_bytes(v.replace(".request.", ".response.")) for v in vecs)
            self.assertEqual(got, want)

    def test_openssl_s_client_sends_the_guides_bytes(self):
        s = self.server("app-server", "--idle-timeout", "1")
        req = os.path.join(SRC, "proto", "vectors", "guide", "search-morpheus.request.vec")
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{s.port}", "-CAfile",
                            self.certs["ca.pem"], "-verify_return_error", "-servername",
                            "localhost", "-alpn", "appmsg", "-quiet"],
                           input=vec_bytes(req), capture_output=True, timeout=IO * 3)
        self.assertEqual(r.stdout, vec_bytes(req.replace(".request.", ".response.")),
                         r.stderr.decode(errors="replace"))

    def test_kv_over_tls(self):
        s = self.server("kv-server")
        r = self.client(s.port, "set", "colour", "green", prog="kv-client")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.client(s.port, "get", "colour", prog="kv-client")
        self.assertEqual((r.returncode, r.stdout), (0, b"green\n"), r.stderr)
        r = self.client(s.port, "get", "colour", prog="kv-client", ca="other-ca.pem")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unable to get local issuer certificate", r.stderr)


class TestMutualTLS(TLSCase):
    def test_accepted_and_refused(self):
        s = self.server("app-server", "--tls-client-ca", self.certs["ca.pem"])
        r = self.client(s.port, "search", "morpheus", opts=(
            "--tls-cert", self.certs["client.pem"], "--tls-key", self.certs["client.key"]))
        self.assertEqual((r.returncode, r.stdout.decode()), (0, MORPHEUS + "\n"), r.stderr)
        cases = [(None, "the client sent no certificate"),
                 ("other", "unable to get local issuer certificate (subject CN=localhost"),
                 ("expired", "certificate has expired (subject CN=localhost")]
        for who, server_says in cases:
            args = ("--tls-cert", self.certs[who + ".pem"], "--tls-key",
                    self.certs[who + ".key"]) if who else ()
            r = self.client(s.port, "search", "morpheus", opts=args)
            self.assertEqual(r.returncode, 1, (who, r.stdout, r.stderr))
            self.assertEqual(r.stdout, b"")
            self.assertRegex(r.stderr, r"TLS with 127\.0\.0\.1:\d+ failed: the server refused our "
                             r"certificate")
            self.assertTrue(s.wait_log(server_says), (who, s.text()))
        # Who: the peer's address is in each of those lines.
        self.assertRegex(s.text(), r"127\.0\.0\.1:\d+: TLS_VERIFY: the client sent no certificate")


class TestClientRefuses(TLSCase):
    def test_wrong_name_untrusted_ca_expired(self):
        s = self.server()
        r = self.client(s.port, "search", "morpheus", opts=("--tls-name", "wrong.example"))
        self.assertEqual((r.returncode, r.stdout), (1, b""))
        self.assertIn("the server's certificate is not valid for 'wrong.example': hostname "
                      "mismatch", r.stderr)
        r = self.client(s.port, "search", "morpheus", ca="other-ca.pem")
        self.assertEqual((r.returncode, r.stdout), (1, b""))
        self.assertIn("the server's certificate was refused: unable to get local issuer "
                      "certificate", r.stderr)
        expired = self.server(cert="expired.pem", key="expired.key")
        r = self.client(expired.port, "search", "morpheus")
        self.assertEqual((r.returncode, r.stdout), (1, b""))
        self.assertIn("the server's certificate was refused: certificate has expired", r.stderr)
        # The server heard the client's alerts, and says so.
        self.assertTrue(s.wait_log("the client refused our certificate"), s.text())
        # Verification off only by the option that says it is insecure.
        r = self.client(s.port, "search", "morpheus", opts=("--tls-insecure",), ca="other-ca.pem")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("INSECURE", run("app-client", "--help").stdout.decode())

    def test_options_that_do_not_go_together(self):
        r = run("app-client", "--tls-ca", self.certs["ca.pem"], "search", "x")
        self.assertEqual(r.returncode, 2)
        self.assertIn("need --tls", r.stderr)
        r = run("app-server", "--tls-cert", self.certs["server.pem"], "127.0.0.1", "0")
        self.assertEqual(r.returncode, 2)
        r = run("app-server", "--tls-cert", "/nonexistent.pem", "--tls-key",
                self.certs["server.key"], "127.0.0.1", "0")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read the certificate chain '/nonexistent.pem'", r.stderr)


class TestMismatch(TLSCase):
    def test_plaintext_client_on_a_tls_server(self):
        s = self.server()
        r = run("app-client", "127.0.0.1", str(s.port), "search", "morpheus")
        self.assertEqual((r.returncode, r.stdout), (1, b""), r.stderr)  # closed, no reply
        self.assertIn("closed the connection", r.stderr)
        self.assertTrue(s.wait_log("the client sent a plaintext appmsg frame; is it using TLS?"))

    def test_tls_client_on_a_plaintext_server(self):
        s = Server("app-server")
        self.addCleanup(s.stop)
        r = self.client(s.port, "search", "morpheus")
        self.assertEqual((r.returncode, r.stdout), (1, b""))
        self.assertIn("the server sent a plaintext appmsg frame; is it using TLS?", r.stderr)
        self.assertTrue(s.wait_log("TLS handshake"), s.text())

    def test_alpn(self):
        s = self.server()
        with tls_connect(self.certs, s.port, alpn=None) as t:  # none offered: served
            t.sendall(search_frame("morpheus"))
            self.assertIn(MORPHEUS.encode(), read_frames(t, 1)[0])
        with self.assertRaises((ssl.SSLError, OSError)):
            with tls_connect(self.certs, s.port, alpn=("h2",)) as t:
                t.sendall(search_frame("morpheus"))
                read_frames(t, 1)


class TestReload(TLSCase):
    def test_sighup_reloads_and_keeps_connections(self):
        d = tempfile.mkdtemp(dir=self.certs.dir)
        crt, key = os.path.join(d, "s.pem"), os.path.join(d, "s.key")
        shutil.copy(self.certs["server.pem"], crt)
        shutil.copy(self.certs["server.key"], key)
        s = Server("app-server", "--tls-cert", crt, "--tls-key", key)
        self.addCleanup(lambda: self.assertEqual(s.stop(), 0))

        def subject(t):
            return dict(x[0] for x in t.getpeercert()["subject"])["commonName"]

        before = tls_connect(self.certs, s.port)
        self.addCleanup(before.close)
        self.assertEqual(subject(before), "localhost")
        shutil.copy(self.certs["server2.pem"], crt)
        shutil.copy(self.certs["server2.key"], key)
        s.signal(signal.SIGHUP)
        self.assertTrue(s.wait_log("SIGHUP: reloaded the TLS certificate and key"), s.text())
        with tls_connect(self.certs, s.port) as after:
            self.assertEqual(subject(after), "localhost-2")
        with open(crt, "w") as f:
            f.write("not a certificate\n")
        s.signal(signal.SIGHUP)
        self.assertTrue(s.wait_log("still serving with the previous certificate"), s.text())
        with tls_connect(self.certs, s.port) as after:
            self.assertEqual(subject(after), "localhost-2")
        before.sendall(search_frame("morpheus"))  # the first connection goes on
        self.assertIn(MORPHEUS.encode(), read_frames(before, 1)[0])


if __name__ == "__main__":
    unittest.main()
