#!/usr/bin/env python3
"""appmsg reference decoder and vector checker (Python 3.11, standard library only).

Written from proto/PROTOCOL.md alone, as an independent second implementation of the wire format.

Library use (an interop peer or a test imports this file):

    from appmsg_ref import Decoder, Message, Error, encode
    d = Decoder(max_content_length=1 << 20, max_header_length=65535)
    for outcome in d.feed(chunk):      # any chunking; a list of Message / Error
        ...
    outcomes = d.finish()              # [] or [Error('TRUNCATED', offset)]
    frame = encode({"content-type": "text/json", "content-encoding": "utf-8"}, b"{}")

Command line:

    appmsg_ref.py check DIR...           run every *.vec whole, byte by byte and split in two
    appmsg_ref.py hex2bin FILE.vec OUT   write a vector's byte stream to OUT
    appmsg_ref.py decode FILE [--limit-content N] [--limit-header N]
                                         decode a binary stream, print outcomes as .vec lines
    appmsg_ref.py conformance-decoder    the decoder side of proto/tools/conformance: commands
                                         on stdin, outcomes on stdout (proto/vectors/README.md)
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "Decoder", "Message", "Error", "encode", "check_header", "check_header_raw", "check_content",
    "is_checked_content", "load_vector", "Vector", "DEFAULT_CONTENT_DEPTH", "object_members",
    "expected_extras_raw", "check_limits",
    "DEFAULT_MAX_CONTENT_LENGTH", "DEFAULT_MAX_HEADER_LENGTH", "CONTENT_LENGTH_MAX",
    "HEADER_DEPTH_MAX", "REQUIRED_KEYS",
]

DEFAULT_MAX_CONTENT_LENGTH = 1 << 20      # PROTOCOL.md section 4
DEFAULT_MAX_HEADER_LENGTH = 65535
CONTENT_LENGTH_MAX = (1 << 53) - 1
HEADER_DEPTH_MAX = 32
REQUIRED_KEYS = ("byteorder", "content-type", "content-encoding", "content-length")


# --------------------------------------------------------------------------------------------------
# Outcomes


@dataclass
class Error:
    """A framing error: NAME (as appmsg_errname()) and the stream offset it points at."""
    name: str
    offset: int
    reason: str = ""

    def __str__(self):
        return f"error {self.name} {self.offset}" + (f" ({self.reason})" if self.reason else "")


@dataclass
class Message:
    """One complete frame. header holds every top-level key in the order received."""
    offset: int                      # stream offset of the frame's first (prefix) byte
    header: dict
    content: bytes = b""
    raw: dict = field(default_factory=dict)    # key -> the value's JSON text as received (bytes)

    @property
    def byteorder(self) -> str:
        return self.header["byteorder"]

    @property
    def content_type(self) -> str:
        return self.header["content-type"]

    @property
    def content_encoding(self) -> str:
        return self.header["content-encoding"]

    @property
    def content_length(self) -> int:
        return self.header["content-length"]

    @property
    def extras(self) -> dict:
        return {k: v for k, v in self.header.items() if k not in REQUIRED_KEYS}


def json_value(text: str):
    """A JSON text as a value to compare (proto/vectors/README.md): numbers exact, so 1, 1.0 and
    1e0 are equal and 1e400 is itself; objects as dicts, the last of a repeated key winning."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def object_members(text: bytes) -> list:
    """The members of a JSON object text as [(key after unescaping, the value's text as written)], in
    order; ValueError when text is not one strict JSON object (the kit reads a decoder's EXTRAS so)."""
    try:
        text.decode("utf-8")
        return [(k, r) for k, _, r in _Parser(text).parse()]
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 at byte {e.start}") from None
    except _Fail as f:
        raise ValueError(f"not a JSON object: {f.reason} at byte {f.pos}") from None


def compact_json(value) -> str:
    """The compact JSON text of a value (how `extra` lines in vectors are written)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# The header check (PROTOCOL.md section 5, rules 2 to 5, on a complete header)


class _Fail(Exception):
    def __init__(self, name: str, pos: int, reason: str):
        super().__init__(name, pos, reason)
        self.name, self.pos, self.reason = name, pos, reason


_WS = b" \t\n\r"
_WS_RE = re.compile(rb"[ \t\n\r]*")
_NON_WS_RE = re.compile(rb"[^ \t\n\r]")
_PLAIN_RE = re.compile(rb'[^"\\\x00-\x1f]*')      # string bytes needing no attention
_DIGITS_RE = re.compile(rb"[0-9]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
                   ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}


class _Parser:
    """Strict RFC 8259 + PROTOCOL.md 2.3 parser over bytes already known to be valid UTF-8.

    Every failure raises _Fail at the first byte where the text stops being the beginning of a
    valid header (or at len(h) when the text ends early)."""

    def __init__(self, h: bytes, max_depth: int = HEADER_DEPTH_MAX):
        self.h = h
        self.n = len(h)
        self.max_depth = max_depth
        self.members = []            # top-level (key, value, raw value bytes)

    def parse_value(self):
        """One JSON value of any kind, with only whitespace around it (text/json content)."""
        pos = self.ws(0)
        if pos >= self.n:
            raise _Fail("CONTENT_JSON", pos, "no JSON value: the content is empty or whitespace")
        val, pos = self.value(pos, 0)
        pos = self.ws(pos)
        if pos < self.n:
            raise _Fail("CONTENT_JSON", pos, "bytes after the JSON value")
        return val

    def ws(self, pos: int) -> int:
        return _WS_RE.match(self.h, pos).end()

    def eof(self):
        raise _Fail("HEADER_JSON", self.n, "the text ends inside the object")

    def byte(self, pos: int) -> int:
        if pos >= self.n:
            self.eof()
        return self.h[pos]

    def parse(self):
        pos = self.ws(0)
        if pos >= self.n or self.h[pos] != 0x7B:       # rule 2 (normally caught incrementally)
            raise _Fail("HEADER_NOT_OBJECT", pos, "the header does not start with '{'")
        _, pos = self.obj(pos, 1, top=True)
        pos = self.ws(pos)
        if pos < self.n:
            raise _Fail("HEADER_TRAILING", pos, "bytes after the header's closing '}'")
        return self.members

    def value(self, pos: int, depth: int):
        """A value starting at pos inside a container of depth `depth`."""
        c = self.byte(pos)
        if c == 0x7B:
            return self.obj(pos, depth + 1)
        if c == 0x5B:
            return self.arr(pos, depth + 1)
        if c == 0x22:
            return self.string(pos)
        if c == 0x2D or 0x30 <= c <= 0x39:
            return self.number(pos)
        for word, val in ((b"true", True), (b"false", False), (b"null", None)):
            if c == word[0]:
                for i in range(1, len(word)):
                    if self.byte(pos + i) != word[i]:
                        raise _Fail("HEADER_JSON", pos + i, f"bad literal, expected '{word.decode()}'")
                return val, pos + len(word)
        raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(c)}, expected a value")

    def obj(self, pos: int, depth: int, top: bool = False):
        if depth > self.max_depth:
            raise _Fail("HEADER_DEPTH", pos, f"'{{' opens depth {depth}, above {self.max_depth}")
        out = {}
        pos = self.ws(pos + 1)
        if self.byte(pos) == 0x7D:
            return out, pos + 1
        while True:
            if self.byte(pos) != 0x22:
                raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(self.h[pos])}, "
                            "expected a string key")
            key, pos = self.string(pos)
            pos = self.ws(pos)
            if self.byte(pos) != 0x3A:
                raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(self.h[pos])}, "
                            "expected ':'")
            pos = self.ws(pos + 1)
            vstart = pos
            val, pos = self.value(pos, depth)
            if top:
                self.members.append((key, val, self.h[vstart:pos]))
            out[key] = val
            pos = self.ws(pos)
            c = self.byte(pos)
            if c == 0x7D:
                return out, pos + 1
            if c != 0x2C:
                raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(c)}, "
                            "expected ',' or '}'")
            pos = self.ws(pos + 1)

    def arr(self, pos: int, depth: int):
        if depth > self.max_depth:
            raise _Fail("HEADER_DEPTH", pos, f"'[' opens depth {depth}, above {self.max_depth}")
        out = []
        pos = self.ws(pos + 1)
        if self.byte(pos) == 0x5D:
            return out, pos + 1
        while True:
            val, pos = self.value(pos, depth)
            out.append(val)
            pos = self.ws(pos)
            c = self.byte(pos)
            if c == 0x5D:
                return out, pos + 1
            if c != 0x2C:
                raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(c)}, "
                            "expected ',' or ']'")
            pos = self.ws(pos + 1)

    def hex4(self, pos: int) -> int:
        for i in range(4):
            if self.byte(pos + i) not in _HEX:
                raise _Fail("HEADER_JSON", pos + i, f"bad hex digit {_show(self.h[pos + i])}")
        return int(self.h[pos:pos + 4], 16)

    def string(self, pos: int):
        h = self.h
        pos += 1                                   # the opening quote
        parts = []
        while True:
            end = _PLAIN_RE.match(h, pos).end()
            if end > pos:
                # Chunks end only at ASCII bytes, so they hold whole UTF-8 sequences.
                parts.append(h[pos:end].decode("utf-8"))
                pos = end
            c = self.byte(pos)
            if c == 0x22:
                return "".join(parts), pos + 1
            if c != 0x5C:
                raise _Fail("HEADER_JSON", pos, f"raw control character {_show(c)} in a string")
            e = self.byte(pos + 1)
            if e in _SIMPLE_ESCAPES:
                parts.append(_SIMPLE_ESCAPES[e])
                pos += 2
                continue
            if e != 0x75:
                raise _Fail("HEADER_JSON", pos + 1, f"bad escape '\\{chr(e) if 32 < e < 127 else '?'}'")
            # "\\udc".."\\udf" can only be a lone low surrogate: refused at its
            # second hex digit, the first byte that no valid text can have there.
            if self.byte(pos + 2) in b"dD" and self.byte(pos + 3) in b"cdefCDEF":
                raise _Fail("HEADER_JSON", pos + 3, "lone low surrogate escape")
            cp = self.hex4(pos + 2)
            last = pos + 5
            pos += 6
            if cp == 0:
                raise _Fail("HEADER_JSON", last, "\\u0000 is not allowed")
            if 0xD800 <= cp <= 0xDBFF:
                # Must be followed by \u, then dc00..dfff: each byte checked from the left.
                checks = (b"\\", b"u", b"dD", b"cdefCDEF", b"0123456789abcdefABCDEF",
                          b"0123456789abcdefABCDEF")
                for i, allowed in enumerate(checks):
                    if self.byte(pos + i) not in allowed:
                        raise _Fail("HEADER_JSON", pos + i,
                                    "high surrogate escape not followed by a low surrogate escape")
                lo = int(h[pos + 2:pos + 6], 16)
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                pos += 6
            parts.append(chr(cp))

    def number(self, pos: int):
        h = self.h
        start = pos
        if h[pos] == 0x2D:
            pos += 1
        c = self.byte(pos)
        if c == 0x30:
            pos += 1
            if pos < self.n and 0x30 <= h[pos] <= 0x39:
                raise _Fail("HEADER_JSON", pos, "digit after a leading zero")
        elif 0x31 <= c <= 0x39:
            pos = _DIGITS_RE.match(h, pos).end()
        else:
            raise _Fail("HEADER_JSON", pos, f"unexpected character {_show(c)}, expected a digit")
        is_int = True
        if pos < self.n and h[pos] == 0x2E:
            is_int = False
            pos += 1
            if not 0x30 <= self.byte(pos) <= 0x39:
                raise _Fail("HEADER_JSON", pos, "expected a digit after '.'")
            pos = _DIGITS_RE.match(h, pos).end()
        if pos < self.n and h[pos] in b"eE":
            is_int = False
            pos += 1
            if self.byte(pos) in b"+-":
                pos += 1
            if not 0x30 <= self.byte(pos) <= 0x39:
                raise _Fail("HEADER_JSON", pos, "expected a digit in the exponent")
            pos = _DIGITS_RE.match(h, pos).end()
        text = h[start:pos]
        if is_int and len(text) <= 4000:           # Python's int() refuses > 4300 digits
            return int(text), pos
        return float(text), pos


def _show(c: int) -> str:
    return repr(chr(c)) if 32 <= c < 127 else f"0x{c:02x}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_header(h: bytes, max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH):
    """Checks a complete header (rules 2-5). Returns (header dict, None) or (None, Error) with the
    error's offset relative to the header's first byte."""
    fields, _, err = check_header_raw(h, max_content_length)
    return fields, err


def check_header_raw(h: bytes, max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH):
    """check_header() that also returns every member's value as its JSON text, byte for byte:
    (fields, {key: bytes}, None) or (None, None, Error)."""
    first = _NON_WS_RE.search(h)
    if first is None:
        return None, None, Error("HEADER_NOT_OBJECT", len(h), "the header is only whitespace")
    if h[first.start()] != 0x7B:
        return None, None, Error("HEADER_NOT_OBJECT", first.start(), "the header does not start with '{'")
    try:
        h.decode("utf-8")                          # strict: no overlongs, surrogates, > U+10FFFF
    except UnicodeDecodeError as e:
        return None, None, Error("HEADER_UTF8", e.start, f"ill-formed UTF-8 ({e.reason})")
    try:
        members = _Parser(h).parse()
    except _Fail as f:
        return None, None, Error(f.name, f.pos, f.reason)
    seen = set()
    for key, _, _ in members:
        if key in seen:
            return None, None, Error("HEADER_DUPLICATE", 0, f"key {key!r} appears more than once")
        seen.add(key)
    fields = {k: v for k, v, _ in members}
    raw = {k: r for k, _, r in members}
    for key in REQUIRED_KEYS:
        if key not in fields:
            return None, None, Error("FIELD_MISSING", 0, f"required key {key!r} is missing")
        v = fields[key]
        if key == "content-length":
            if not _is_number(v):
                return None, None, Error("FIELD_TYPE", 0, "content-length is not a number")
            if not re.fullmatch(rb"[0-9]+", raw[key]):
                return None, None, Error("CONTENT_LENGTH", 0,
                                   f"content-length {raw[key].decode()} is not written as digits only")
            digits = raw[key]
            if len(digits) > 30 or int(digits) > max_content_length:
                return None, None, Error("CONTENT_TOO_LARGE", 0,
                                   f"content-length {digits[:30].decode()} is above the limit "
                                   f"{max_content_length}")
            fields[key] = int(digits)
        else:
            if not isinstance(v, str):
                return None, None, Error("FIELD_TYPE", 0, f"{key} is not a string")
            if key == "byteorder" and v not in ("little", "big"):
                return None, None, Error("BYTEORDER", 0, f"byteorder {v!r} is neither 'little' nor 'big'")
    return fields, raw, None


# --------------------------------------------------------------------------------------------------
# The content check (section 3.2)

DEFAULT_CONTENT_DEPTH = 64


def is_checked_content(content_type: str, content_encoding: str) -> bool:
    """Whether section 3.2 applies: content-type exactly "text/json", content-encoding "utf-8"
    or "utf8" in any ASCII case."""
    return content_type == "text/json" and content_encoding.lower() in ("utf-8", "utf8")


def check_content(data: bytes, max_depth: int = DEFAULT_CONTENT_DEPTH):
    """Checks text/json content: None, or Error(CONTENT_UTF8 | CONTENT_JSON, offset into the
    content). max_depth is the receiver's content depth limit D, 1 or more (PROTOCOL.md 3.2 and 4;
    ValueError otherwise)."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError("the content depth must be 1 or more")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Error("CONTENT_UTF8", e.start, f"ill-formed UTF-8 ({e.reason})")
    p = _Parser(data, max_depth)
    try:
        p.parse_value()
    except _Fail as f:
        return Error("CONTENT_JSON", f.pos, f.reason)
    return None


# --------------------------------------------------------------------------------------------------
# The incremental decoder (section 5, rules 1-6)

_PREFIX, _HEADER, _CONTENT = 0, 1, 2


def check_limits(max_content_length: int, max_header_length: int,
                 content_depth: int = DEFAULT_CONTENT_DEPTH) -> None:
    """Raises ValueError for a configuration section 4 says a receiver must refuse."""
    if not 1 <= max_header_length <= 65535:
        raise ValueError("max_header_length must be 1..65535")
    if not 0 <= max_content_length <= CONTENT_LENGTH_MAX:
        raise ValueError("max_content_length must be 0..2^53-1")
    if content_depth < 1:
        raise ValueError("the content depth must be 1 or more")


class Decoder:
    """Incremental decoder. feed() takes any chunk and returns the outcomes it completed (Message
    objects, then possibly one Error); errors are sticky. finish() marks the end of the stream."""

    def __init__(self, max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
                 max_header_length: int = DEFAULT_MAX_HEADER_LENGTH):
        check_limits(max_content_length, max_header_length)
        self.max_content_length = max_content_length
        self.max_header_length = max_header_length
        self.offset = 0              # stream bytes consumed
        self.error = None            # the sticky Error
        self._state = _PREFIX
        self._frame_start = 0
        self._buf = bytearray()
        self._hlen = 0
        self._prefix = b""
        self._seen_open = False
        self._header = None
        self._raw = {}
        self._clen = 0

    @property
    def in_frame(self) -> bool:
        return self._state != _PREFIX or len(self._buf) > 0

    def _fail(self, name: str, offset: int, reason: str) -> Error:
        self.error = Error(name, offset, reason)
        return self.error

    def feed(self, data) -> list:
        out = []
        if self.error is not None:
            return out
        data = bytes(data)
        i, n = 0, len(data)
        while i < n:
            if self._state == _PREFIX:
                take = min(2 - len(self._buf), n - i)
                self._buf += data[i:i + take]
                i += take
                self.offset += take
                if len(self._buf) < 2:
                    break
                self._hlen = (self._buf[0] << 8) | self._buf[1]
                self._prefix = bytes(self._buf)
                self._buf.clear()
                if self._hlen == 0:
                    out.append(self._fail("HEADER_EMPTY", self._frame_start, "header length is 0"))
                    return out
                if self._hlen > self.max_header_length:
                    out.append(self._fail("HEADER_TOO_LARGE", self._frame_start,
                                          f"header length {self._hlen} is above the limit "
                                          f"{self.max_header_length}"))
                    return out
                self._state = _HEADER
                self._seen_open = False
            elif self._state == _HEADER:
                take = min(self._hlen - len(self._buf), n - i)
                chunk = data[i:i + take]
                if not self._seen_open:            # rule 2, as soon as the byte arrives
                    m = _NON_WS_RE.search(chunk)
                    if m is not None:
                        if chunk[m.start()] != 0x7B:
                            self.offset += m.start() + 1
                            out.append(self._fail("HEADER_NOT_OBJECT", self.offset - 1,
                                                  _not_object_reason(
                                                  self._prefix + self._buf + chunk[:m.start() + 1])))
                            return out
                        self._seen_open = True
                self._buf += chunk
                i += take
                self.offset += take
                if len(self._buf) < self._hlen:
                    break
                hstart = self._frame_start + 2
                fields, raw, err = check_header_raw(bytes(self._buf), self.max_content_length)
                self._buf.clear()
                if err is not None:
                    out.append(self._fail(err.name, hstart + err.offset, err.reason))
                    return out
                self._header = fields
                self._raw = raw
                self._clen = fields["content-length"]
                self._state = _CONTENT
                if self._clen == 0:
                    out.append(self._complete())
            else:
                take = min(self._clen - len(self._buf), n - i)
                self._buf += data[i:i + take]
                i += take
                self.offset += take
                if len(self._buf) == self._clen:
                    out.append(self._complete())
        return out

    def _complete(self) -> Message:
        msg = Message(self._frame_start, self._header, bytes(self._buf), self._raw)
        self._buf.clear()
        self._header = None
        self._state = _PREFIX
        self._frame_start = self.offset
        return msg

    def finish(self) -> list:
        """End of stream: [] when it ended between frames (or an error was already reported),
        else [Error('TRUNCATED', total bytes)]."""
        if self.error is not None or not self.in_frame:
            return []
        return [self._fail("TRUNCATED", self.offset, "the stream ended inside a frame")]


def _not_object_reason(frame: bytes) -> str:
    """Rule 2 failed; frame holds the prefix and the header bytes up to the offending one."""
    methods = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
               b"CONNECT ", b"TRACE ", b"PRI ")
    if len(frame) >= 3 and any(m.startswith(frame) or frame.startswith(m) for m in methods):
        return "this looks like an HTTP request; appmsg frames start with a 2-byte header length"
    if frame[:1] == b"\x16" and frame[1:2] == b"\x03":
        return "this looks like a TLS handshake; appmsg is not encrypted"
    if frame[:1] in (b"{", b"["):
        return "this looks like JSON sent without the 2-byte header length prefix"
    return "the header does not start with '{'"


def decode(data: bytes, **limits) -> list:
    """Decodes a whole stream; returns every outcome."""
    d = Decoder(**limits)
    return d.feed(data) + d.finish()


# --------------------------------------------------------------------------------------------------
# The encoder (section 2.4)


def encode(header_fields: dict, content: bytes = b"", extras: dict | None = None,
           strict: bool = True) -> bytes:
    """One frame, written like the guide's json.dumps(obj, ensure_ascii=False): byteorder,
    content-type, content-encoding, content-length first, then the other keys of header_fields,
    then extras. byteorder defaults to this machine's; content-length is len(content) (a
    different value given raises ValueError). Raises ValueError for anything a receiver would
    refuse (strict=False allows extra keys starting with 'content-' or named 'byteorder')."""
    content = bytes(content)
    fields = dict(header_fields)
    for key in ("content-type", "content-encoding"):
        if not isinstance(fields.get(key), str):
            raise ValueError(f"{key} must be given as a string")
    obj = {
        "byteorder": fields.pop("byteorder", sys.byteorder),
        "content-type": fields.pop("content-type", None),
        "content-encoding": fields.pop("content-encoding", None),
        "content-length": fields.pop("content-length", len(content)),
    }
    if obj["content-length"] != len(content) or isinstance(obj["content-length"], bool):
        raise ValueError("content-length differs from len(content)")
    rest = list(fields.items()) + list((extras or {}).items())
    for key, value in rest:
        if key in obj:
            raise ValueError(f"key {key!r} given twice")
        if strict and (key.startswith("content-") or key == "byteorder"):
            raise ValueError(f"extra key {key!r} is reserved")
        obj[key] = value
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, UnicodeEncodeError) as e:
        raise ValueError(str(e)) from None
    if len(text) > 65535:
        raise ValueError(f"header of {len(text)} bytes is above 65535")
    _, err = check_header(text, CONTENT_LENGTH_MAX)
    if err is not None:
        raise ValueError(f"the header would be refused: {err.name} ({err.reason})")
    return len(text).to_bytes(2, "big") + text + content


# --------------------------------------------------------------------------------------------------
# Vector files (proto/vectors/README.md)


class VectorFormatError(Exception):
    pass


@dataclass
class ExpectedMessage:
    fields: dict = field(default_factory=dict)      # byteorder, content-type ... as given
    extras: dict = field(default_factory=dict)      # key -> compact JSON text
    content: bytearray = field(default_factory=bytearray)
    check: object = None                            # None, "ok" or Error: the content check


@dataclass
class Vector:
    path: str
    stream: bytes
    max_content_length: int
    max_header_length: int
    expected: list                                   # ExpectedMessage... then maybe Error
    content_depth: int = DEFAULT_CONTENT_DEPTH
    extras_raw: list | None = None                   # expected_extras_raw(), once computed


def unescape(text: str) -> bytes:
    """The `str` escapes: \\\\ \\n \\r \\t \\xNN; anything else after a backslash is an error."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            j = text.find("\\", i)
            j = n if j < 0 else j
            out += text[i:j].encode("utf-8")
            i = j
            continue
        e = text[i + 1:i + 2]
        if e in ("\\", "n", "r", "t"):
            out += {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}[e]
            i += 2
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise VectorFormatError(f"unknown escape {text[i:i + 4]!r}")
    return bytes(out)


def _hex(text: str) -> bytes:
    t = text.replace(" ", "")
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", t):
        raise VectorFormatError(f"bad hex {text[:40]!r}")
    return bytes.fromhex(t)


def _int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise VectorFormatError(f"bad number {text!r}")
    return int(text)


_MESSAGE_KEYS = ("byteorder", "content-type", "content-encoding", "content-length")


def load_vector(path: str) -> Vector:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise VectorFormatError(f"not UTF-8 at byte {e.start}") from None
    stream = bytearray()
    limits = {"limit-content": DEFAULT_MAX_CONTENT_LENGTH, "limit-header": DEFAULT_MAX_HEADER_LENGTH,
              "limit-content-depth": DEFAULT_CONTENT_DEPTH}
    expected = []
    cur = None
    done = False
    for lineno, line in enumerate(lines, 1):
        if line.strip() == "" or line.startswith("#"):
            continue
        kw, _, rest = line.partition(" ")
        where = f"line {lineno}"
        try:
            if done:
                raise VectorFormatError(f"'{kw}' after error/end")
            if kw == "hex":
                stream += _hex(rest)
            elif kw == "str":
                stream += unescape(rest)
            elif kw == "hdr":
                b = unescape(rest)
                if len(b) > 65535:
                    raise VectorFormatError("hdr text longer than 65535 bytes")
                stream += len(b).to_bytes(2, "big") + b
            elif kw == "fill":
                m = re.fullmatch(r"([0-9]+) ([0-9a-fA-F]{2})", rest)
                if not m:
                    raise VectorFormatError(f"bad fill {rest!r}")
                stream += bytes([int(m.group(2), 16)]) * int(m.group(1))
            elif kw in limits:
                if expected:
                    raise VectorFormatError(f"{kw} after an outcome")
                limits[kw] = _int(rest)
            elif kw == "message":
                if rest:
                    raise VectorFormatError("text after 'message'")
                cur = ExpectedMessage()
                expected.append(cur)
            elif kw in _MESSAGE_KEYS or kw in ("extra", "content-hex", "content-str",
                                                "content-check"):
                if cur is None:
                    raise VectorFormatError(f"'{kw}' outside a message")
                if kw == "byteorder":
                    if rest not in ("little", "big"):
                        raise VectorFormatError(f"bad byteorder {rest!r}")
                    val = rest
                elif kw == "content-length":
                    val = _int(rest)
                elif kw in ("content-type", "content-encoding"):
                    val = unescape(rest)
                elif kw == "extra":
                    key, sp, js = rest.partition(" ")
                    if not key or not sp:
                        raise VectorFormatError("extra needs KEY JSON")
                    if key in cur.extras:
                        raise VectorFormatError(f"extra {key!r} listed twice")
                    cur.extras[key] = js
                    continue
                elif kw == "content-hex":
                    cur.content += _hex(rest)
                    continue
                elif kw == "content-check":
                    if cur.check is not None:
                        raise VectorFormatError("'content-check' given twice")
                    m = re.fullmatch(r"(CONTENT_UTF8|CONTENT_JSON) ([0-9]+)", rest)
                    if rest == "ok":
                        cur.check = "ok"
                    elif m:
                        cur.check = Error(m.group(1), int(m.group(2)))
                    else:
                        raise VectorFormatError(f"bad content-check {rest!r}")
                    continue
                else:
                    cur.content += unescape(rest)
                    continue
                if kw in cur.fields:
                    raise VectorFormatError(f"'{kw}' given twice")
                cur.fields[kw] = val
            elif kw == "error":
                m = re.fullmatch(r"([A-Z0-9_]+) ([0-9]+)", rest)
                if not m:
                    raise VectorFormatError(f"bad error line {rest!r}")
                expected.append(Error(m.group(1), int(m.group(2))))
                done = True
                cur = None
            elif kw == "end":
                if rest:
                    raise VectorFormatError("text after 'end'")
                done = True
                cur = None
            else:
                raise VectorFormatError(f"unknown directive {kw!r}")
        except VectorFormatError as e:
            raise VectorFormatError(f"{where}: {e}") from None
    try:
        check_limits(limits["limit-content"], limits["limit-header"],
                     limits["limit-content-depth"])
    except ValueError as e:
        raise VectorFormatError(f"limits a decoder must refuse ({e}): the kit's --config checks "
                                "those") from None
    for m in expected:
        if isinstance(m, ExpectedMessage):
            missing = [k for k in _MESSAGE_KEYS if k not in m.fields]
            if missing:     # stricter than README: our golden vectors list every field
                raise VectorFormatError(f"a message does not list {', '.join(missing)}")
            if m.fields["content-length"] != len(m.content):
                raise VectorFormatError("content-length differs from the listed content")
            if m.check is not None and not is_checked_content(
                    m.fields["content-type"].decode("utf-8", "replace"),
                    m.fields["content-encoding"].decode("utf-8", "replace")):
                raise VectorFormatError("content-check on content that is not text/json utf-8")
    return Vector(path, bytes(stream), limits["limit-content"], limits["limit-header"], expected,
                  limits["limit-content-depth"])


def expected_extras_raw(vec: Vector) -> list:
    """For each message the vector expects, [(key, the value's text)] of its extras in the order
    the stream holds them: the bytes from the value's first byte to its last (PROTOCOL.md 2.2),
    found in the vector's own stream. A decoder must deliver exactly these."""
    out, pos, s = [], 0, vec.stream
    for exp in vec.expected:
        if not isinstance(exp, ExpectedMessage):
            break
        if pos + 2 > len(s):
            raise VectorFormatError("fewer frames in the stream than expected messages")
        hlen = (s[pos] << 8) | s[pos + 1]
        _, raw, err = check_header_raw(s[pos + 2:pos + 2 + hlen], CONTENT_LENGTH_MAX)
        if err is not None:
            raise VectorFormatError(f"an expected message's header is refused: {err}")
        out.append([(k, r) for k, r in raw.items() if k not in REQUIRED_KEYS])
        pos += 2 + hlen + exp.fields["content-length"]
    return out


def _compare(vec: Vector, got: list) -> str | None:
    """None when the outcomes match the vector, else a description of the first difference."""
    for i, exp in enumerate(vec.expected):
        if i >= len(got):
            return f"outcome {i}: expected {_describe(exp)}, got nothing (stream ended cleanly)"
        g = got[i]
        if isinstance(exp, Error):
            if not isinstance(g, Error):
                return f"outcome {i}: expected {_describe(exp)}, got a message"
            if (g.name, g.offset) != (exp.name, exp.offset):
                return f"outcome {i}: expected {_describe(exp)}, got {g}"
            continue
        if not isinstance(g, Message):
            return f"outcome {i}: expected a message, got {g}"
        for k, v in exp.fields.items():
            gv = g.header[k]
            if isinstance(gv, str) and isinstance(v, bytes):
                gv = gv.encode("utf-8")
            if gv != v:
                return f"outcome {i}: {k}: expected {v!r}, got {gv!r}"
        gx = {k: r.decode("utf-8") for k, r in g.raw.items() if k not in REQUIRED_KEYS}
        if {k: json_value(v) for k, v in gx.items()} != \
                {k: json_value(v) for k, v in exp.extras.items()}:
            return f"outcome {i}: extras: expected {exp.extras}, got {gx}"
        raw = [(k, r) for k, r in g.raw.items() if k not in REQUIRED_KEYS]
        if vec.extras_raw is None:
            vec.extras_raw = expected_extras_raw(vec)
        want_raw = vec.extras_raw[i]
        if raw != want_raw:
            return f"outcome {i}: extras not as received: expected {want_raw}, got {raw}"
        if g.content != bytes(exp.content):
            return f"outcome {i}: content differs: expected {bytes(exp.content)[:60]!r}..., " \
                   f"got {g.content[:60]!r}..."
        if exp.check is not None:
            err = check_content(g.content, vec.content_depth)
            got_check = "ok" if err is None else f"{err.name} {err.offset}"
            want = "ok" if exp.check == "ok" else f"{exp.check.name} {exp.check.offset}"
            if got_check != want:
                return f"outcome {i}: content-check: expected {want}, got {got_check}"
    if len(got) > len(vec.expected):
        return f"unexpected outcome {len(vec.expected)}: {_describe(got[len(vec.expected)])}"
    return None


def _describe(o) -> str:
    if isinstance(o, Error):
        return f"error {o.name} {o.offset}"
    return "a message"


def _run(vec: Vector, chunks) -> list:
    d = Decoder(vec.max_content_length, vec.max_header_length)
    out = []
    for c in chunks:
        out += d.feed(c)
    fin = d.finish()
    for e in fin:
        if e.name != "TRUNCATED":
            raise AssertionError("finish() reported a non-TRUNCATED error")
    return out + fin


_FULL_SPLIT_MAX = 4096


def _split_points(n: int):
    if n <= _FULL_SPLIT_MAX:
        return range(1, n)
    pts = set(range(1, min(300, n))) | set(range(max(1, n - 300), n)) | set(range(997, n, 997))
    return sorted(pts)


def check_vector(vec: Vector) -> str | None:
    s = vec.stream
    res = _compare(vec, _run(vec, [s]))
    if res:
        return f"whole: {res}"
    res = _compare(vec, _run(vec, [s[i:i + 1] for i in range(len(s))]))
    if res:
        return f"byte by byte: {res}"
    for k in _split_points(len(s)):
        res = _compare(vec, _run(vec, [s[:k], s[k:]]))
        if res:
            return f"split at {k}: {res}"
    return None


def _vec_files(dirs):
    for d in dirs:
        if os.path.isfile(d):
            yield d
            continue
        for root, subdirs, files in os.walk(d):
            subdirs.sort()
            for f in sorted(files):
                if f.endswith(".vec"):
                    yield os.path.join(root, f)


def cmd_check(dirs) -> int:
    passed = failed = 0
    for path in _vec_files(dirs):
        try:
            res = check_vector(load_vector(path))
        except VectorFormatError as e:
            res = f"bad vector file: {e}"
        if res is None:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {path}: {res}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


def _vec_escape(b: bytes) -> str:
    out = []
    for ch in b.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def cmd_decode(args) -> int:
    limits = {}
    path = None
    it = iter(args)
    for a in it:
        if a == "--limit-content":
            limits["max_content_length"] = int(next(it))
        elif a == "--limit-header":
            limits["max_header_length"] = int(next(it))
        else:
            path = a
    if path is None:
        return _usage()
    with open(path, "rb") as f:
        data = f.read()
    outcomes = decode(data, **limits)
    for o in outcomes:
        if isinstance(o, Error):
            print(f"error {o.name} {o.offset}\n# {o.reason}")
            return 1
        print("message")
        print(f"byteorder {o.byteorder}")
        print(f"content-type {_vec_escape(o.content_type.encode())}")
        print(f"content-encoding {_vec_escape(o.content_encoding.encode())}")
        print(f"content-length {o.content_length}")
        for k, v in o.extras.items():
            print(f"extra {k} {compact_json(v)}")
        for i in range(0, len(o.content), 32):
            print(f"content-hex {o.content[i:i + 32].hex(' ')}")
    print("end")
    return 0


def _hex_or_dash(b: bytes) -> str:
    return b.hex() if b else "-"


def conformance_line(o, content_depth: int, respell: bool = False) -> str:
    """One outcome in the conformance kit's protocol (proto/vectors/README.md). respell: every
    string extra re-spelled from its value, as a decoder that breaks 2.2 would ("\\u0041" as "A")."""
    if isinstance(o, Error):
        return f"error {o.name} {o.offset}"
    extras = [(k, r) for k, r in o.raw.items() if k not in REQUIRED_KEYS]
    if respell:
        extras = [(k, json.dumps(json.loads(r), ensure_ascii=False).encode() if r[:1] == b'"' else r)
                  for k, r in extras]
    ext = b"{" + b", ".join(json.dumps(k, ensure_ascii=False).encode() + b": " + r
                            for k, r in extras) + b"}"
    check = "-"
    if is_checked_content(o.content_type, o.content_encoding):
        err = check_content(o.content, content_depth)
        check = "ok" if err is None else f"{err.name}:{err.offset}"
    return " ".join(("message", o.byteorder, _hex_or_dash(o.content_type.encode()),
                     _hex_or_dash(o.content_encoding.encode()), str(o.content_length),
                     _hex_or_dash(o.content), ext.hex() if extras else "-", check))


def cmd_conformance_decoder(args) -> int:
    """The decoder side of the conformance kit: commands on stdin, outcomes on stdout.
    --mutate makes it report every error offset one byte too far, --respell-extras every string
    extra re-spelled (to test the kit itself)."""
    mutate = "--mutate" in args
    respell = "--respell-extras" in args
    dec, depth = None, DEFAULT_CONTENT_DEPTH
    out = sys.stdout
    for line in sys.stdin:
        cmd, _, arg = line.rstrip("\n").partition(" ")
        if cmd == "stream":
            c, h, d = (int(x) for x in arg.split())
            try:
                check_limits(c, h, d)
                dec, depth = Decoder(c, h), d
                out.write("ready\n")
            except ValueError:                 # PROTOCOL.md 4: refused, never clamped
                dec = None
                out.write("refused\n")
        elif cmd in ("feed", "end"):
            outcomes = dec.feed(bytes.fromhex(arg)) if cmd == "feed" else dec.finish()
            for o in outcomes:
                if mutate and isinstance(o, Error):
                    o = Error(o.name, o.offset + 1)
                out.write(conformance_line(o, depth, respell) + "\n")
            out.write("fed\n" if cmd == "feed" else "ended\n")
        elif cmd == "quit":
            break
        else:
            out.write(f"unknown command {cmd}\n")
            return 2
        out.flush()
    return 0


def _usage() -> int:
    print(__doc__.split("Command line:")[1].strip(), file=sys.stderr)
    return 2


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "check":
        return cmd_check(argv[1:])
    if len(argv) == 3 and argv[0] == "hex2bin":
        vec = load_vector(argv[1])
        with open(argv[2], "wb") as f:
            f.write(vec.stream)
        return 0
    if len(argv) >= 2 and argv[0] == "decode":
        return cmd_decode(argv[1:])
    if len(argv) >= 1 and argv[0] == "conformance-decoder":
        return cmd_conformance_decoder(argv[1:])
    return _usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
