#!/usr/bin/env python3
"""Inputs of fuzz/fuzz_client.c as text, one operation a line, and back.

  fuzz_client_ops.py asm FILE.ops OUT     text -> the bytes fuzz_client reads
  fuzz_client_ops.py disasm INPUT         bytes (a crash, a corpus file) -> text

The text (see fuzz/corpus-seeds/fuzz_client/*.ops):

    setup S             first byte: bit 0 the poll backend, bits 1-2 both set: not listening
                      at first, bits 3-4 both set: allocations fail (then "fail" comes next)
                      and the contract is checked, not the model; then bit 5: the client's
                      sockets get the smallest send buffer
  fail HOW N          (allocation failures) 0: the (N+1)-th allocation from now fails,
                      1: every (2 + N % 16)-th, 2: none
  client A B C D      the client's options (fuzz_client.c op_new_client()); 0 0 0 0: defaults
  call KIND RID TIMEOUT SIZE ACTION
                      a call; KIND % 8: 0-1 appmsg_client_call(), 2-3 text/json, 4 text/json
                      with its encoding given, 5-6 binary, 7 a value that is no UTF-8;
                      RID % 16: 0-6 none, 7 "7", 8 " 8 ", 9 "\\"a\\"", 10 "[1, 2]", 11 "1",
                      12 a quoted UUID, 13 "\\"dup\\"", 14 invalid, 15 72 bytes; TIMEOUT % 8:
                      0 (the client's) 1 5 30 31 100 1000 10000 ms; SIZE: the content's size;
                      ACTION % 16: 0-8 nothing, 9-11 a call, 12 free the client, 13 a call
                      then free, 14 free then a call, 15 two calls (from its callback)
  run                 one loop iteration
  reply KIND HOW BIG  the server answers its oldest request; KIND % 16: 0 plain, 1 escapes,
                      2 result no string, 3 no result, 4 error reply, 5 "error" no string,
                      6 binary, 7 error reply with an object, 8 no JSON, 9 large, 10 no
                      space, 11-15 plain; HOW % 8 >= 5: only a first piece; BIG % 4: size
  pick KIND HOW WHICH BIG   the same for its WHICH-th unanswered request
  piece HOW           the next piece of a reply in progress (0: a byte, 1: half, 2-3: rest)
  advance T           the clock moves (T % 20 indexes 1, 2, 5, 10, 29 ... 10001 ms)
  unsolicited KIND RID   a reply nobody asked for (with allocation failures: "fail" instead)
  garbage KIND        bytes that are no frame (KIND % 8)
  close               the server closes its newest connection
  unlisten / listen   the server stops (accepting what waits first) / starts listening
  free                appmsg_client_free() from outside the loop
  new A B C D         a new client (when there is none)
  advrun T            advance T, then run
  abort               the server closes its listener with what waits in its backlog
    accepting           the server stops / resumes accepting (allocation failures: reading)
"""
import sys

OPS = [  # name, first op value (the op byte is taken % 32), parameter bytes
    ("call", 0, 5), ("run", 5, 0), ("reply", 11, 3), ("pick", 14, 4), ("piece", 15, 1),
    ("advance", 17, 1), ("unsolicited", 20, 2), ("garbage", 21, 1), ("close", 22, 0),
    ("unlisten", 23, 0), ("listen", 24, 0), ("free", 25, 0), ("new", 26, 4), ("advrun", 27, 1),
    ("abort", 30, 0), ("accepting", 31, 0),
]
BOUNDS = [0, 5, 11, 14, 15, 17, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31, 32]


def asm(text):
    out = bytearray()
    by_name = {name: (value, n) for name, value, n in OPS}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        name, args = words[0], [int(w, 0) for w in words[1:]]
        if name in ("setup", "fail", "client"):
            out += bytes(args)
            continue
        if name not in by_name:
            sys.exit(f"line {lineno}: unknown operation {name!r}")
        value, n = by_name[name]
        if len(args) > n:
            sys.exit(f"line {lineno}: {name} takes {n} numbers")
        out += bytes([value] + args + [0] * (n - len(args)))
    return bytes(out)


def disasm(data):
    pos = 0

    def take(n):
        nonlocal pos
        got = list(data[pos:pos + n])
        pos += n
        return got + [0] * (n - len(got))

    setup = take(1)[0]
    lines = [f"setup {setup}"]
    if setup & 0x18 == 0x18:
        lines.append("fail " + " ".join(map(str, take(2))))
    lines.append("client " + " ".join(map(str, take(4))))
    while pos < len(data):
        op = take(1)[0] % 32
        i = max(k for k in range(len(OPS)) if BOUNDS[k] <= op)
        name, _, n = OPS[i]
        lines.append(" ".join([name] + [str(b) for b in take(n)]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "asm":
        with open(sys.argv[2]) as f, open(sys.argv[3], "wb") as o:
            o.write(asm(f.read()))
    elif len(sys.argv) == 3 and sys.argv[1] == "disasm":
        with open(sys.argv[2], "rb") as f:
            sys.stdout.write(disasm(f.read()))
    else:
        sys.exit(__doc__)
