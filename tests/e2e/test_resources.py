"""What the programs cost while they wait, and what they hold under a long stream.

- app-client and kv-client waiting on a server that accepts and never answers, and app-server
  with one connected idle client: under 2% of one core over 2 s (utime + stime from
  /proc/PID/stat), counted from the moment the connection exists, so that start-up (slow under
  ASan or valgrind) is not counted.  A client that spins on a connected socket takes 100%.
- `app-client HOST PORT -` fed by a pipe: each line's answer is printed while app-client waits
  for the next line (a producer may wait for it), and it idles meanwhile; 200,000 lines of
  "search ring": every answer, in order, exit 0, and a peak RSS (VmHWM, read while app-client
  waits for more input) within 2 MB of its peak with 20,000 lines - bounded by its own limits, not
  by its input or the kernel's socket buffers.
- A peer that pipelines 100,000 requests and does not read its replies for a while: app-server
  pauses reading (it idles meanwhile, and its memory stays where it was), and every answer arrives
  once the peer reads.

The CPU bounds are about waiting: ASan makes work slower, not waiting busier, so they hold in
every build.  Every wait for an event is bounded and ends as soon as the event comes; the 2 s
windows are measurements, not waits.

Run:  python3 -m unittest -v test_resources      (from tests/e2e; APPMSG_BIN_DIR as for
test_programs)
"""

import os
import socket
import subprocess
import sys
import threading
import time
import unittest

from test_programs import (E2E, EVENT_TIMEOUT, HOST, IO_TIMEOUT, START_TIMEOUT, WRAPPER,
                           assert_no_sanitizer, guide_peer, reply_for, tcp_queues, wait_for)

CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_S = 2.0          # how long a waiting program is watched
CPU_MAX_MS = 40.0       # what it may spend meanwhile: 2% of one core
STREAM_TIMEOUT = 300.0  # 200,000 pipelined lines: about 1 s plain, 10 s under ASan
RSS_SLACK_KB = 2048     # what a 10 times longer input may add to app-client's peak (see below)
SERVER_GROWTH_KB = 8192  # what 100,000 unread replies may add to app-server (see below)
STILL_S = 1.0           # how long nothing may move before a program counts as waiting

# ASan keeps freed blocks in a quarantine of 256 MB before it reuses their memory, so a
# program's resident size under ASan grows with how much it has freed until the quarantine is
# full - with the length of its input, whatever the program does.  The memory comparisons run
# the programs with a small quarantine (ignored by other builds), and under valgrind (see
# APPMSG_WRAPPER in test_programs.py) with a small queue of freed blocks, which is memcheck's
# quarantine (20 MB by default); use after free within them is still caught.
SMALL_QUARANTINE = "quarantine_size_mb=1"


def small_freelist_wrapper():
    w = list(WRAPPER)
    if w and os.path.basename(w[0]) == "valgrind":
        w.insert(1, "--freelist-vol=1000000")
    return w


def cpu_ms(pid) -> float:
    """utime + stime of a process (all its threads), in ms, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()     # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK


def status_kb(pid, key) -> int:
    """A size line of /proc/PID/status ("VmRSS", "VmHWM"), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def env_with_asan(option: str):
    env = dict(os.environ)
    old = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = f"{old}:{option}" if old else option
    return env


def note(text: str):
    """A measurement, for the log of the run."""
    sys.stderr.write(f"\n    {text} ")
    sys.stderr.flush()


def cpu_window(test, pid, alive):
    """CPU ms process pid spends over WINDOW_S, and the wall time the window took; alive() says
    whether it still runs (a process that ended has spent nothing, and that proves nothing)."""
    c0, t0 = cpu_ms(pid), time.monotonic()
    time.sleep(WINDOW_S)          # the window itself, not a wait for an event
    c1, t1 = cpu_ms(pid), time.monotonic()
    test.assertTrue(alive(), f"process {pid} ended during the window")
    return c1 - c0, t1 - t0


def wait_still(read, what, hold=STILL_S, timeout=EVENT_TIMEOUT):
    """Waits until read() returns the same value, not None, for `hold` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while value is None or time.monotonic() - since < hold:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what} (last seen: {value})")
        time.sleep(0.01)
        now = read()
        if now != value or now is None:
            value, since = now, time.monotonic()
    return value


def proc_window(test, proc):
    return cpu_window(test, proc.pid, lambda: proc.poll() is None)


class TestWaiting(E2E):
    def silent_server(self):
        """A listening socket whose connection will be accepted and never answered."""
        lsock = socket.socket()
        self._socks.append(lsock)
        lsock.bind((HOST, 0))
        lsock.listen(4)
        lsock.settimeout(START_TIMEOUT)
        return lsock

    def client_waits_quietly(self, prog, *args):
        lsock = self.silent_server()
        client = self.start(prog, "--timeout", "60", HOST, str(lsock.getsockname()[1]), *args)
        try:
            conn, _ = lsock.accept()        # the connection exists: the window starts here
        except socket.timeout:
            self.fail(f"{prog} did not connect within {START_TIMEOUT} s; stderr:\n"
                      f"{client.stderr()}")
        self._socks.append(conn)
        used, took = proc_window(self, client)
        note(f"{prog} waiting on a silent server: {used:.0f} ms CPU in {took:.2f} s")
        # The request had been sent: the client was waiting for the reply, not to write.
        conn.settimeout(IO_TIMEOUT)
        reader = guide_peer.FrameReader()
        frames = []
        while not frames:
            data = conn.recv(65536)
            self.assertTrue(data, f"{prog} closed the connection without a request")
            frames = reader.feed(data)
        self.assertLess(used, CPU_MAX_MS,
                        f"{prog} spent {used:.0f} ms of CPU in {took:.2f} s waiting for a reply")
        # The server goes away without a word: the client says so and exits 1.
        conn.close()
        rc = client.wait(EVENT_TIMEOUT)
        self.assertEqual(rc, 1, client.exit_report(rc))
        assert_no_sanitizer(self, client.stderr(), prog)

    def test_app_client_waiting_for_a_reply_uses_no_cpu(self):
        self.client_waits_quietly("app-client", "search", "morpheus")

    def test_kv_client_waiting_for_a_reply_uses_no_cpu(self):
        self.client_waits_quietly("kv-client", "get", "greeting")

    def test_idle_app_server_with_an_idle_client_uses_no_cpu(self):
        srv = self.app_server()
        c = self.client(srv.port)
        # One round trip: the connection is accepted and served, then both sides idle.
        c.send(guide_peer.build_request("search", "morpheus"))
        self.assertEqual(c.read_bytes(len(reply_for("search", "morpheus"))),
                         reply_for("search", "morpheus"))
        used, took = proc_window(self, srv)
        note(f"idle app-server: {used:.0f} ms CPU in {took:.2f} s")
        self.assertLess(used, CPU_MAX_MS,
                        f"app-server spent {used:.0f} ms of CPU in {took:.2f} s with an idle client")
        self.assert_served(srv.port)


class AppClientPipe:
    """`app-client HOST PORT -` with its stdin a pipe this test writes to (as from a program that
    produces requests), its stdout and stderr in files."""

    def __init__(self, test, port, name):
        self.test = test
        argv = [*small_freelist_wrapper(), str(test.bin("app-client")), HOST, str(port), "-"]
        self.out_path = os.path.join(test._tmp, f"{name}.out")
        self.err_path = os.path.join(test._tmp, f"{name}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                      env=env_with_asan(SMALL_QUARANTINE))
        test.addCleanup(self.kill)

    @property
    def pid(self):
        return self.p.pid

    def write(self, data: bytes):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def out_size(self) -> int:
        return os.path.getsize(self.out_path)

    def stdout(self) -> str:
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self) -> str:
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_output(self, size, what, timeout=EVENT_TIMEOUT):
        """Waits until stdout holds size bytes (the answers expected so far)."""
        wait_for(lambda: self.out_size() >= size or self.p.poll() is not None,
                 f"{what}; stdout has {self.out_size()} of {size} bytes; stderr:\n"
                 f"{self.stderr()[-3000:]}", timeout)
        self.test.assertIsNone(self.p.poll(), f"app-client exited with {self.p.returncode}; "
                               f"stderr:\n{self.stderr()[-3000:]}")
        self.test.assertEqual(self.out_size(), size, "more output than answers")

    def finish(self):
        """Ends stdin; app-client must then exit 0."""
        self.p.stdin.close()
        try:
            rc = self.p.wait(EVENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        self.test.assertEqual(rc, 0, f"app-client - after the end of its input: exit {rc}; "
                              f"stderr:\n{self.stderr()[-3000:]}")
        assert_no_sanitizer(self.test, self.stderr(), "app-client -")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        for f in (self.p.stdin,):
            try:
                f.close()
            except OSError:
                pass


def answer_line(action, value) -> bytes:
    """The line app-client prints for the answer to ACTION VALUE, as bytes."""
    frames = guide_peer.FrameReader().feed(reply_for(action, value))
    return (guide_peer.result_text(*frames[0]) + "\n").encode("utf-8")


class TestStreams(E2E):
    def test_app_client_answers_each_line_while_its_input_waits(self):
        # A producer that writes a line and waits for its answer before the next (a coprocess):
        # the request goes, and its answer is printed, while app-client waits for more input.
        srv = self.app_server()
        ac = AppClientPipe(self, srv.port, "one-by-one")
        first, second = answer_line("search", "ring"), answer_line("search", "morpheus")
        ac.write(b"search ring\n")
        ac.wait_output(len(first), "the answer to the first line, before a second is written")
        # Waiting for its input, with nothing owed: it idles.
        used, took = cpu_window(self, ac.pid, lambda: ac.p.poll() is None)
        note(f"app-client - waiting for its next line: {used:.0f} ms CPU in {took:.2f} s")
        self.assertLess(used, CPU_MAX_MS,
                        f"app-client spent {used:.0f} ms of CPU in {took:.2f} s waiting on stdin")
        ac.write(b"search morpheus\n")
        ac.wait_output(len(first) + len(second), "the answer to the second line")
        ac.finish()
        self.assertEqual(ac.stdout().encode("utf-8"), first + second)

    def stream(self, port, lines):
        """Writes `lines` lines of "search ring" to app-client -, waits for every answer, and
        returns app-client's peak RSS (VmHWM, read while it waits for more input) in kB and the
        seconds the answers took."""
        ac = AppClientPipe(self, port, f"stream-{lines}")
        line = answer_line("search", "ring")
        chunk = b"search ring\n" * 1000
        t0 = time.monotonic()

        def feed():
            try:
                for _ in range(lines // 1000):
                    ac.p.stdin.write(chunk)
                ac.p.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        ac.wait_output(len(line) * lines, f"{lines} answers", timeout=STREAM_TIMEOUT)
        took = time.monotonic() - t0
        feeder.join(EVENT_TIMEOUT)
        peak = status_kb(ac.pid, "VmHWM")
        ac.finish()
        with open(ac.out_path, "rb") as f:
            out = f.read()
        if out != line * lines:
            got = out.split(b"\n")
            wrong = next(i for i, x in enumerate(got) if x + b"\n" != line)
            self.fail(f"answer {wrong} of {lines} is {got[wrong][:200]!r}")
        note(f"app-client - with {lines} lines: every answer, in order, in {took:.1f} s; "
             f"peak RSS {peak} kB")
        return peak

    def test_200000_lines_through_app_client_stdin(self):
        srv = self.app_server()
        small = self.stream(srv.port, 20000)
        large = self.stream(srv.port, 200000)
        # Not proportional to the input: what app-client holds is bounded by its own limits -
        # the calls in flight and the queue - and 180,000 more lines held would cost 40 MB or
        # more (a 142-byte frame and a call's bookkeeping each).  The slack is for pages malloc
        # keeps or returns, and under ASan its small quarantine.
        self.assertLessEqual(large, small + RSS_SLACK_KB,
                             f"app-client's peak RSS grew from {small} kB with 20,000 lines to "
                             f"{large} kB with 200,000")

    def test_a_peer_that_stops_reading_pauses_the_server(self):
        # --frame-timeout 60: the peer's silence must not end the connection meanwhile (the
        # server closes a connection whose replies stop moving for that long).
        srv = self.start([*small_freelist_wrapper(), self.bin("app-server")], "--frame-timeout",
                         "60", HOST, "0", env=env_with_asan(SMALL_QUARANTINE))
        srv.name = "app-server"
        srv.wait_listening()
        self.assert_served(srv.port)
        base = status_kb(srv.pid, "VmRSS")
        n = 100000
        req = guide_peer.build_request("search", "ring")
        reply = reply_for("search", "ring")
        c = self.client(srv.port, timeout=120)
        sock = c.sock
        mine, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
        sent = [0]
        data = req * n

        def send_all():
            view = memoryview(data)
            try:
                while sent[0] < len(data):
                    sent[0] += sock.send(view[sent[0]:sent[0] + 65536])
            except OSError:
                pass
        self.thread(send_all)

        # The server stops reading: requests wait unread in its receive queue, its replies
        # unread in ours, and the sender is blocked - and nothing moves any more.  A server still
        # at work changes its receive queue (it reads) or ours (it writes) within milliseconds;
        # a second without a change is a server that waits.
        def state():
            srv_q, our_q = tcp_queues(theirs, mine), tcp_queues(mine, theirs)
            if srv_q is None or our_q is None or srv_q[1] == 0 or our_q[1] == 0:
                return None
            return (sent[0], srv_q[1], our_q[1])
        wait_still(state, "app-server stops reading a peer that does not read its replies")
        used, took = proc_window(self, srv)
        during = status_kb(srv.pid, "VmRSS")
        srv_q = tcp_queues(theirs, mine)
        note(f"app-server paused: {used:.0f} ms CPU in {took:.2f} s, {sent[0] // len(req)} of "
             f"{n} requests sent, {srv_q[1]} bytes unread at the server; VmRSS {base} kB before,"
             f" {during} kB while paused")
        self.assertLess(used, CPU_MAX_MS,
                        f"app-server spent {used:.0f} ms of CPU in {took:.2f} s waiting for a "
                        f"peer to read")
        self.assertLess(sent[0], len(data), "every request went in: the server did not pause")
        # Now the peer reads everything.
        want = reply * n
        got = c.read_bytes(len(want), timeout=120)
        self.assertEqual(len(got), len(want), f"{len(got) // len(reply)} of {n} answers came")
        self.assertTrue(got == want, "the answers differ from the requests'")
        peak = status_kb(srv.pid, "VmHWM")
        note(f"app-server: {n} answers; peak VmRSS {peak} kB")
        # Reading paused: the server held at most read_pause (256 KiB) of output and the
        # replies to one read of requests (64 KiB), not the 16 MB of replies the requests ask
        # for (which would also pass its 16 MiB output cap and end the connection).
        self.assertLessEqual(peak - base, SERVER_GROWTH_KB,
                             f"app-server grew from {base} kB to a peak of {peak} kB")
        self.assert_served(srv.port)


if __name__ == "__main__":
    unittest.main()
