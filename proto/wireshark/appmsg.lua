-- Wireshark dissector for appmsg, the "application message" of proto/PROTOCOL.md:
--
--   frame = u16 header length, big-endian
--         + that many bytes of a UTF-8 JSON object header
--           {"byteorder": ..., "content-type": ..., "content-encoding": ..., "content-length": N}
--         + exactly N bytes of content
--
-- Install: copy this file into the personal plugins folder (~/.local/lib/wireshark/plugins/),
-- or load it for one run: tshark -X lua_script:appmsg.lua -r capture.pcapng
--
-- Written for the Lua API of Wireshark 4.0 (Lua 5.2) and later.  The dissector never raises an
-- error to Wireshark: anything it cannot read becomes expert info on the frame.

local appmsg = Proto("appmsg", "appmsg Application Message")

local DEFAULT_PORTS = "65432"
local DEFAULT_MAX_FRAME = 16 * 1024 * 1024
local HEADER_DEPTH_MAX = 32
local CONTENT_DEPTH_MAX = 64
local CONTENT_LENGTH_MAX = 9007199254740991 -- 2^53 - 1
local INFO_VALUE_MAX = 80 -- bytes of a value shown in the Info column

-- ---------------------------------------------------------------------------------------------
-- Fields, expert info, preferences

local f = {
  header_length = ProtoField.uint16("appmsg.header_length", "Header length", base.DEC),
  header = ProtoField.string("appmsg.header", "Header", base.UNICODE),
  byteorder = ProtoField.string("appmsg.byteorder", "Byte order", base.UNICODE),
  content_type = ProtoField.string("appmsg.content_type", "Content type", base.UNICODE),
  content_encoding = ProtoField.string("appmsg.content_encoding", "Content encoding", base.UNICODE),
  content_length = ProtoField.uint64("appmsg.content_length", "Content length", base.DEC),
  request_id = ProtoField.string("appmsg.request_id", "Request id (JSON)", base.UNICODE),
  content = ProtoField.bytes("appmsg.content", "Content"),
  action = ProtoField.string("appmsg.action", "Action", base.UNICODE),
  result = ProtoField.string("appmsg.result", "Result", base.UNICODE),
  error = ProtoField.string("appmsg.error", "Error name", base.UNICODE),
  continuation = ProtoField.bytes("appmsg.continuation", "Content of an earlier frame (not reassembled)"),
  unframed = ProtoField.bytes("appmsg.unframed", "Bytes after a framing error"),
}
appmsg.fields = {
  f.header_length, f.header, f.byteorder, f.content_type, f.content_encoding, f.content_length,
  f.request_id, f.content, f.action, f.result, f.error, f.continuation, f.unframed,
}

local ef = {
  malformed = ProtoExpert.new("appmsg.malformed", "Malformed appmsg frame",
                              expert.group.MALFORMED, expert.severity.ERROR),
  content = ProtoExpert.new("appmsg.content.invalid", "text/json content is not valid JSON",
                            expert.group.MALFORMED, expert.severity.WARN),
  too_large = ProtoExpert.new("appmsg.not_reassembled", "Frame larger than the reassembly maximum",
                              expert.group.REASSEMBLE, expert.severity.WARN),
  error_reply = ProtoExpert.new("appmsg.error_reply", "Error reply",
                                expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
appmsg.experts = { ef.malformed, ef.content, ef.too_large, ef.error_reply }

appmsg.prefs.tcp_ports = Pref.range("TCP ports", DEFAULT_PORTS,
                                    "TCP ports on which appmsg servers listen", 65535)
appmsg.prefs.heuristic = Pref.bool("Heuristic on TCP", true,
                                   "Also recognise appmsg on any TCP port: a 2-byte length, then '{'")
appmsg.prefs.max_frame = Pref.uint("Maximum frame to reassemble", DEFAULT_MAX_FRAME,
                                   "Frames longer than this (in bytes) are shown without their "
                                   .. "content instead of being reassembled")

local json_dissector = Dissector.get("json")

-- ---------------------------------------------------------------------------------------------
-- A strict JSON reader over a Lua string (bytes).  Values come back as Lua values: strings
-- (unescaped, UTF-8), numbers as their JSON text wrapped in {num = TEXT}, true/false, a
-- sentinel for null, and tables for objects ({keys = {...}, map = {...}}) and arrays.
-- Failures are returned, never thrown: nil, message, 1-based position.

local NULL = {}

local Reader = {}
Reader.__index = Reader

local function fail(pos, msg)
  error({ appmsg_json = true, pos = pos, msg = msg }, 0)
end

local function is_ws(b)
  return b == 0x20 or b == 0x09 or b == 0x0A or b == 0x0D
end

function Reader:ws(pos)
  local s = self.s
  while true do
    local b = s:byte(pos)
    if b == nil or not is_ws(b) then
      return pos
    end
    pos = pos + 1
  end
end

local function utf8_char(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
                       0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
                     0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local function hex4(s, pos)
  local h = s:sub(pos, pos + 3)
  if #h < 4 or not h:match("^%x%x%x%x$") then
    fail(pos, "bad \\u escape")
  end
  return tonumber(h, 16)
end

local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r",
              t = "\t" }

function Reader:string(pos)
  local s = self.s
  local parts = {}
  pos = pos + 1
  while true do
    local stop = s:find('["\\%z\1-\31]', pos)
    if stop == nil then
      fail(#s + 1, "the text ends inside a string")
    end
    parts[#parts + 1] = s:sub(pos, stop - 1)
    local c = s:sub(stop, stop)
    if c == '"' then
      return table.concat(parts), stop + 1
    elseif c ~= "\\" then
      fail(stop, "raw control character in a string")
    end
    local e = s:sub(stop + 1, stop + 1)
    if ESC[e] then
      parts[#parts + 1] = ESC[e]
      pos = stop + 2
    elseif e == "u" then
      local cp = hex4(s, stop + 2)
      pos = stop + 6
      if cp == 0 then
        fail(stop, "\\u0000 is not allowed")
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        fail(stop, "lone low surrogate")
      elseif cp >= 0xD800 and cp <= 0xDBFF then
        if s:sub(pos, pos + 1) ~= "\\u" then
          fail(pos, "high surrogate without a low surrogate")
        end
        local lo = hex4(s, pos + 2)
        if lo < 0xDC00 or lo > 0xDFFF then
          fail(pos, "high surrogate without a low surrogate")
        end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        pos = pos + 6
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      fail(stop + 1, "bad escape")
    end
  end
end

function Reader:number(pos)
  local s = self.s
  local text = s:match("^-?%d+%.?%d*[eE]?[+-]?%d*", pos)
  -- Check the exact RFC 8259 grammar on what was taken.
  if text == nil or not (text:match("^-?0$") or text:match("^-?[1-9]%d*$")
                         or text:match("^-?0[.eE]") or text:match("^-?[1-9]%d*[.eE]")) then
    fail(pos, "bad number")
  end
  local int, rest = text:match("^(-?%d+)(.*)$")
  local frac, exp = rest:match("^(%.%d+)(.*)$")
  if frac == nil then
    frac, exp = "", rest
  end
  if not (exp == "" or exp:match("^[eE][+-]?%d+$")) then
    fail(pos, "bad number")
  end
  text = int .. frac .. exp
  return { num = text }, pos + #text
end

function Reader:value(pos, depth)
  local s = self.s
  local c = s:sub(pos, pos)
  if c == "{" or c == "[" then
    if depth + 1 > self.max_depth then
      fail(pos, "nested too deeply")
    end
    if c == "{" then
      return self:object(pos, depth + 1)
    end
    return self:array(pos, depth + 1)
  elseif c == '"' then
    return self:string(pos)
  elseif c == "-" or c:match("^%d$") then
    return self:number(pos)
  end
  for word, v in pairs({ ["true"] = true, ["false"] = false, ["null"] = NULL }) do
    if s:sub(pos, pos + #word - 1) == word then
      return v, pos + #word
    end
  end
  if c == "" then
    fail(pos, "the text ends where a value should be")
  end
  fail(pos, "unexpected character, expected a value")
end

function Reader:object(pos, depth)
  local s = self.s
  local obj = { keys = {}, map = {}, raw = {}, dup = nil }
  pos = self:ws(pos + 1)
  if s:sub(pos, pos) == "}" then
    return obj, pos + 1
  end
  while true do
    if s:sub(pos, pos) ~= '"' then
      fail(pos, "expected a string key")
    end
    local key
    key, pos = self:string(pos)
    pos = self:ws(pos)
    if s:sub(pos, pos) ~= ":" then
      fail(pos, "expected ':'")
    end
    pos = self:ws(pos + 1)
    local vstart = pos
    local v
    v, pos = self:value(pos, depth)
    if obj.map[key] ~= nil then
      obj.dup = obj.dup or key
    else
      obj.keys[#obj.keys + 1] = key
    end
    obj.map[key] = v
    obj.raw[key] = { vstart, pos - vstart } -- 1-based start, length: the value's bytes
    pos = self:ws(pos)
    local c = s:sub(pos, pos)
    if c == "}" then
      return obj, pos + 1
    elseif c ~= "," then
      fail(pos, "expected ',' or '}'")
    end
    pos = self:ws(pos + 1)
  end
end

function Reader:array(pos, depth)
  local s = self.s
  local arr = { items = {} }
  pos = self:ws(pos + 1)
  if s:sub(pos, pos) == "]" then
    return arr, pos + 1
  end
  while true do
    local v
    v, pos = self:value(pos, depth)
    arr.items[#arr.items + 1] = v
    pos = self:ws(pos)
    local c = s:sub(pos, pos)
    if c == "]" then
      return arr, pos + 1
    elseif c ~= "," then
      fail(pos, "expected ',' or ']'")
    end
    pos = self:ws(pos + 1)
  end
end

-- Returns the position (1-based) of the first byte of the first ill-formed UTF-8 sequence, or nil.
local function utf8_error(s)
  local i, n = 1, #s
  while i <= n do
    local b = s:byte(i)
    if b < 0x80 then
      i = i + 1
    else
      local len, lo, hi
      if b >= 0xC2 and b <= 0xDF then
        len, lo, hi = 2, 0x80, 0xBF
      elseif b == 0xE0 then
        len, lo, hi = 3, 0xA0, 0xBF
      elseif b == 0xED then
        len, lo, hi = 3, 0x80, 0x9F
      elseif b >= 0xE1 and b <= 0xEF then
        len, lo, hi = 3, 0x80, 0xBF
      elseif b == 0xF0 then
        len, lo, hi = 4, 0x90, 0xBF
      elseif b >= 0xF1 and b <= 0xF3 then
        len, lo, hi = 4, 0x80, 0xBF
      elseif b == 0xF4 then
        len, lo, hi = 4, 0x80, 0x8F
      else
        return i
      end
      local b2 = s:byte(i + 1)
      if b2 == nil or b2 < lo or b2 > hi then
        return i
      end
      for k = 2, len - 1 do
        local bk = s:byte(i + k)
        if bk == nil or bk < 0x80 or bk > 0xBF then
          return i
        end
      end
      i = i + len
    end
  end
  return nil
end

-- Parses s as one JSON text.  Returns value or nil, message, 1-based position of the fault.
local function json_parse(s, max_depth, top_object_only)
  local bad = utf8_error(s)
  if bad then
    return nil, "not valid UTF-8", bad
  end
  local r = setmetatable({ s = s, max_depth = max_depth }, Reader)
  local ok, v, pos = pcall(function()
    local p = r:ws(1)
    if top_object_only and s:sub(p, p) ~= "{" then
      fail(p, "does not start with '{'")
    end
    local val, after = r:value(p, 0)
    after = r:ws(after)
    if after <= #s then
      fail(after, "bytes after the JSON value")
    end
    return val, after
  end)
  if ok then
    return v
  end
  if type(v) == "table" and v.appmsg_json then
    return nil, v.msg, v.pos
  end
  return nil, tostring(v), 1
end

-- A Lua string as a short quoted text for the Info column.
local function quote(str)
  local cut = false
  if #str > INFO_VALUE_MAX then
    local n = INFO_VALUE_MAX
    while n > 0 and str:byte(n + 1) and str:byte(n + 1) >= 0x80 and str:byte(n + 1) < 0xC0 do
      n = n - 1
    end
    str, cut = str:sub(1, n), true
  end
  str = str:gsub('[%z\1-\31"\\]', function(c)
    if c == '"' or c == "\\" then
      return "\\" .. c
    end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. str .. '"' .. (cut and "..." or "")
end

-- The raw JSON text of a member's value, shortened for the Info column.
local function short(text)
  if #text > INFO_VALUE_MAX then
    return text:sub(1, INFO_VALUE_MAX) .. "..."
  end
  return text
end

-- ---------------------------------------------------------------------------------------------
-- Per-direction state across TCP segments.  Computed on the first pass in stream order and kept
-- per call, so that a second dissection of a packet (tshark -2, clicking in Wireshark) shows the
-- same thing.

local dir_state = {} -- "stream:src:srcport" -> { skip = content bytes still to pass, dead = bool }
local call_memo = {} -- "packet:stream:src:srcport:len" -> { skip = n, dead = bool }
local server_port = {} -- tcp stream -> the port of the side that answers requests

local f_tcp_stream = Field.new("tcp.stream")

local function direction_key(pinfo)
  local stream = f_tcp_stream()
  return (stream and tostring(stream.value) or "?") .. ":" .. tostring(pinfo.src) .. ":"
    .. tostring(pinfo.src_port), stream and stream.value
end

local function port_in_prefs(port)
  for part in tostring(appmsg.prefs.tcp_ports):gmatch("[^,]+") do
    local a, b = part:match("^%s*(%d+)%s*%-%s*(%d+)%s*$")
    if a then
      if port >= tonumber(a) and port <= tonumber(b) then
        return true
      end
    elseif tonumber(part) == port then
      return true
    end
  end
  return false
end

-- Whether the frame travels from client to server.
local function is_request(pinfo, stream)
  if port_in_prefs(pinfo.dst_port) then
    return true
  elseif port_in_prefs(pinfo.src_port) then
    return false
  end
  if stream ~= nil then
    if server_port[stream] == nil and not pinfo.visited then
      server_port[stream] = pinfo.dst_port -- the client speaks first
    end
    return server_port[stream] == pinfo.dst_port
  end
  return true
end

-- ---------------------------------------------------------------------------------------------
-- One frame

local function add_info(pinfo, text)
  local prev = pinfo.private.appmsg_info
  if prev == nil or prev == "" then
    pinfo.private.appmsg_info = text
  else
    pinfo.private.appmsg_info = prev .. " | " .. text
  end
end

local function malformed(item, pinfo, text)
  item:add_proto_expert_info(ef.malformed, text)
  add_info(pinfo, "Malformed: " .. text)
end

local function call_json(tvbr, pinfo, tree)
  if json_dissector ~= nil and tvbr:len() > 0 then
    pcall(function() json_dissector:call(tvbr:tvb(), pinfo, tree) end)
  end
end

local WS_ONLY = "^[ \t\r\n]*$"

-- What the content says, for text/json: the action of a request, the result or error of a reply.
local function dissect_json_content(tvb, pinfo, tree, item, off, n, request)
  local text = tvb:raw(off, n)
  local v, why, pos = json_parse(text, CONTENT_DEPTH_MAX, false)
  if v == nil then
    item:add_proto_expert_info(ef.content, string.format("content: %s at content byte %d",
                                                          why, pos - 1))
    return string.format("%s text/json %d bytes (invalid JSON)", request and "Request"
                         or "Response", n)
  end
  call_json(tvb(off, n), pinfo, tree)
  if type(v) ~= "table" or v.keys == nil then
    return string.format("%s %s", request and "Request" or "Response", short(text:match(
      "^[ \t\r\n]*(.-)[ \t\r\n]*$")))
  end
  local function member_range(key)
    local r = v.raw[key]
    return tvb(off + r[1] - 1, r[2])
  end
  local function show(key)
    local x = v.map[key]
    if type(x) == "string" then
      return quote(x), x
    end
    local r = v.raw[key]
    local raw = text:sub(r[1], r[1] + r[2] - 1)
    return short(raw), raw
  end
  if type(v.map.error) == "string" then
    local name = v.map.error
    tree:add(f.error, member_range("error"), name)
    local info = "Error " .. name
    if v.map.result ~= nil then
      local shown, full = show("result")
      tree:add(f.result, member_range("result"), full)
      info = info .. " " .. shown
    end
    item:add_proto_expert_info(ef.error_reply, "Error reply: " .. name)
    return info
  end
  if v.map.action ~= nil then
    local shown, full = show("action")
    tree:add(f.action, member_range("action"), full)
    local info = "Request " .. (type(v.map.action) == "string" and v.map.action or shown)
    if v.map.value ~= nil then
      info = info .. " " .. show("value")
    end
    return info
  end
  if v.map.result ~= nil then
    local shown, full = show("result")
    tree:add(f.result, member_range("result"), full)
    return "Response " .. shown
  end
  return string.format("%s %s", request and "Request" or "Response", short(text))
end

-- The header's checks (PROTOCOL.md section 5, rules 2 to 5).  Returns the header object or nil,
-- the reason.
local function check_header(h)
  local obj, why, pos = json_parse(h, HEADER_DEPTH_MAX, true)
  if obj == nil then
    return nil, string.format("header is not a strict JSON object: %s at header byte %d", why,
                              pos - 1)
  end
  if obj.dup then
    return nil, string.format("header key %s appears more than once", quote(obj.dup))
  end
  for _, key in ipairs({ "byteorder", "content-type", "content-encoding", "content-length" }) do
    local v = obj.map[key]
    if v == nil then
      return nil, string.format("required header key %s is missing", quote(key))
    end
    if key == "content-length" then
      if type(v) ~= "table" or v.num == nil then
        return nil, "content-length is not a number"
      elseif not v.num:match("^%d+$") then
        return nil, string.format("content-length %s is not written as digits only", v.num)
      elseif #v.num > 16 or tonumber(v.num) > CONTENT_LENGTH_MAX then
        return nil, string.format("content-length %s is above 2^53-1", short(v.num))
      end
    elseif type(v) ~= "string" then
      return nil, key .. " is not a string"
    elseif key == "byteorder" and v ~= "little" and v ~= "big" then
      return nil, string.format("byteorder %s is neither \"little\" nor \"big\"", quote(v))
    end
  end
  return obj
end

-- Dissects the frame at off.  Returns the bytes it used (> 0), or -(bytes still needed) when the
-- frame is not all here yet (DESEGMENT_ONE_MORE_SEGMENT when that is not known), or
-- "dead" with the bytes used when the stream cannot be framed after this point.
local function dissect_frame(tvb, pinfo, tree, off, stream, state)
  local avail = tvb:len() - off
  if avail < 2 then
    return -DESEGMENT_ONE_MORE_SEGMENT
  end
  local hlen = tvb(off, 2):uint()
  if hlen == 0 then
    local item = tree:add(appmsg, tvb(off, 2))
    item:add(f.header_length, tvb(off, 2))
    malformed(item, pinfo, "header length 0 (HEADER_EMPTY)")
    return 2, "dead"
  end
  -- Rule 2 as soon as the byte is here: a stream of another protocol is told apart at once.
  local seen = tvb:raw(off + 2, math.min(hlen, avail - 2))
  local first = seen:find("[^ \t\r\n]")
  if first ~= nil and seen:sub(first, first) ~= "{" then
    local item = tree:add(appmsg, tvb(off, math.min(avail, 2 + hlen)))
    item:add(f.header_length, tvb(off, 2))
    malformed(item, pinfo, "the header does not start with '{' (HEADER_NOT_OBJECT): not appmsg")
    return avail, "dead"
  end
  if avail < 2 + hlen then
    return -(2 + hlen - avail)
  end
  local htext = tvb:raw(off + 2, hlen)
  local obj, why = check_header(htext)
  local clen = 0
  if obj ~= nil then
    clen = tonumber(obj.map["content-length"].num)
  end
  local total = 2 + hlen + clen
  local max_frame = appmsg.prefs.max_frame
  local too_large = total > max_frame and total > avail
  if obj ~= nil and not too_large and avail < total then
    return -(total - avail)
  end
  local shown = obj ~= nil and math.min(total, avail) or 2 + hlen
  local item = tree:add(appmsg, tvb(off, shown))
  item:add(f.header_length, tvb(off, 2))
  local hrange = tvb(off + 2, hlen)
  local htree = item:add(f.header, hrange, htext)
  if obj == nil then
    malformed(item, pinfo, why)
    return 2 + hlen, "dead"
  end
  call_json(hrange, pinfo, htree)
  local function at(key)
    local r = obj.raw[key]
    return tvb(off + 2 + r[1] - 1, r[2])
  end
  item:add(f.byteorder, at("byteorder"), obj.map.byteorder)
  item:add(f.content_type, at("content-type"), obj.map["content-type"])
  item:add(f.content_encoding, at("content-encoding"), obj.map["content-encoding"])
  item:add(f.content_length, at("content-length"), UInt64.new(clen))
  if obj.map["request-id"] ~= nil then
    local r = obj.raw["request-id"]
    item:add(f.request_id, at("request-id"), htext:sub(r[1], r[1] + r[2] - 1))
  end
  local request = is_request(pinfo, stream)
  local ctype = obj.map["content-type"]
  local here = math.min(clen, avail - 2 - hlen)
  local info
  if too_large then
    if here > 0 then
      item:add(f.content, tvb(off + 2 + hlen, here))
    end
    item:add_proto_expert_info(ef.too_large, string.format(
      "frame of %d bytes is above the reassembly maximum %d (appmsg.max_frame): content not "
      .. "reassembled", total, max_frame))
    if not pinfo.visited then
      state.skip = total - (2 + hlen + here)
    end
    info = string.format("%s %s %d bytes (not reassembled)", request and "Request" or "Response",
                         ctype, clen)
    add_info(pinfo, info)
    return 2 + hlen + here
  end
  local crange = clen > 0 and tvb(off + 2 + hlen, clen) or nil
  local ctree = crange and item:add(f.content, crange) or nil
  local lower = obj.map["content-encoding"]:lower()
  if ctype == "text/json" and (lower == "utf-8" or lower == "utf8") then
    if crange then
      info = dissect_json_content(tvb, pinfo, ctree, item, off + 2 + hlen, clen, request)
    else
      info = string.format("%s text/json 0 bytes (empty, not JSON)", request and "Request"
                           or "Response")
      item:add_proto_expert_info(ef.content, "content: empty text/json content is not JSON")
    end
  else
    info = string.format("%s %s %d bytes", request and "Request" or "Response", ctype, clen)
  end
  item:append_text(", " .. info)
  add_info(pinfo, info)
  return total
end

-- ---------------------------------------------------------------------------------------------
-- The TCP payload: any number of frames, and pieces of frames at either end

local function dissect(tvb, pinfo, tree)
  local len = tvb:len()
  local dkey, stream = direction_key(pinfo)
  local ckey = tostring(pinfo.number) .. ":" .. dkey .. ":" .. tostring(len)
  local state = dir_state[dkey]
  if state == nil then
    state = { skip = 0, dead = false }
    dir_state[dkey] = state
  end
  -- What went before this call in the stream: content of a frame too large to reassemble, or
  -- a framing error after which nothing can be framed.
  local memo = call_memo[ckey]
  if memo == nil or not pinfo.visited then
    local take = math.min(state.skip, len)
    memo = { skip = take, dead = state.dead }
    if not pinfo.visited then
      state.skip = state.skip - take
      call_memo[ckey] = memo
    end
  end
  pinfo.cols.protocol = "appmsg"
  local off = 0
  if memo.dead then
    local item = tree:add(appmsg, tvb())
    item:add(f.unframed, tvb())
    item:append_text(", bytes after a framing error")
    add_info(pinfo, string.format("%d bytes after a framing error", len))
    return len
  end
  if memo.skip > 0 then
    local item = tree:add(appmsg, tvb(0, memo.skip))
    item:add(f.continuation, tvb(0, memo.skip))
    item:append_text(", content of a frame too large to reassemble")
    add_info(pinfo, string.format("Continuation, %d bytes of content", memo.skip))
    off = memo.skip
  end
  while off < len do
    local used, dead = dissect_frame(tvb, pinfo, tree, off, stream, state)
    if used < 0 then
      pinfo.desegment_offset = off
      pinfo.desegment_len = -used
      return len
    end
    off = off + used
    if dead then
      if not pinfo.visited then
        state.dead = true
      end
      if off < len then
        local item = tree:add(appmsg, tvb(off))
        item:add(f.unframed, tvb(off))
      end
      return len
    end
  end
  return off
end

function appmsg.dissector(tvb, pinfo, tree)
  local ok, res = pcall(dissect, tvb, pinfo, tree)
  -- The Info column holds every frame of the packet, whatever the TCP dissector fenced between
  -- our calls and whatever the JSON dissector wrote into it.
  pinfo.cols.protocol = "appmsg"
  local info = pinfo.private.appmsg_info
  if info ~= nil and info ~= "" then
    pinfo.cols.info:clear_fence()
    pinfo.cols.info = info
    pinfo.cols.info:fence()
  end
  if not ok then
    local item = tree:add(appmsg, tvb())
    item:add_proto_expert_info(ef.malformed, "dissector failure: " .. tostring(res))
    return tvb:len()
  end
  return res
end

-- ---------------------------------------------------------------------------------------------
-- Registration

local tcp_port_table = DissectorTable.get("tcp.port")
local registered_ports = DEFAULT_PORTS
tcp_port_table:add(registered_ports, appmsg)

function appmsg.prefs_changed()
  local ports = tostring(appmsg.prefs.tcp_ports)
  if ports ~= registered_ports then
    if registered_ports ~= "" then
      tcp_port_table:remove(registered_ports, appmsg)
    end
    if ports ~= "" then
      tcp_port_table:add(ports, appmsg)
    end
    registered_ports = ports
  end
end

-- A 2-byte length, optional whitespace, '{', optional whitespace, then '"' or '}'.
local function heuristic(tvb, pinfo, tree)
  if not appmsg.prefs.heuristic or tvb:len() < 4 then
    return false
  end
  local hlen = tvb(0, 2):uint()
  if hlen < 2 then
    return false
  end
  local s = tvb:raw(2, math.min(hlen, tvb:len() - 2))
  local brace = s:find("[^ \t\r\n]")
  if brace == nil or s:sub(brace, brace) ~= "{" then
    return false
  end
  local next_at = s:find("[^ \t\r\n]", brace + 1)
  if next_at == nil then
    return false
  end
  local c = s:sub(next_at, next_at)
  if c ~= '"' and c ~= "}" then
    return false
  end
  pinfo.conversation = appmsg
  appmsg.dissector(tvb, pinfo, tree)
  return true
end

appmsg:register_heuristic("tcp", heuristic)

function appmsg.init()
  dir_state = {}
  call_memo = {}
  server_port = {}
end
