--- The Lua smallcaps codec: Lua values to `{ body = '#...', slots = {...} }`
--- and back. `ocap.marshal` runs the C codec (core/lsmallcaps.c) first and
--- loads this module only when it needs it: for the error messages (with
--- their paths), for the rare inputs the C codec leaves, and as the whole
--- codec where the C module is missing. spec/smallcaps_spec.lua compares
--- the two on many values.
--
-- Bodies are byte for byte what @endo/marshal's smallcaps format produces
-- for the corresponding JavaScript value; `ocap.pass` says which Lua value
-- is which pass style.
--
-- Conventions:
-- 1. Encoding writes string pieces into one buffer joined by
--    `table.concat`. Strings are escaped by cjson (C speed), whose output
--    differs from JSON.stringify only in `\/` and `\u007f`, which are undone.
--    Decoding uses a private cjson instance, then one walk that rewrites its
--    result in place.
-- 2. Errors are raised at level 0 with a message meant for the sender of the
--    value: `cannot pass function (at [2].cb)`. Paths use `[i]` for array
--    indexes and `.name` (or `["odd name"]`) for record keys.
-- 3. Record keys are sorted as JavaScript sorts them (UTF-16 code units) and
--    emitted as JSON.stringify emits a JS object: array-index-like keys
--    ("0", "1", ... "4294967294") first, in numeric order. Lua compares
--    strings with `strcoll`, which is byte order in the C locale; a program
--    that calls `os.setlocale` for collation breaks the order.
-- 4. Strings are bytes and are written verbatim apart from JSON escapes, so
--    a string that is not UTF-8 gives a body that Lua reads back but
--    JavaScript cannot.
-- 5. Lua has no bigint: `"+N"`/`"-N"` decode to Lua integers, so a small
--    bigint from JavaScript (`"+1"`) comes back as the number 1 and
--    re-encodes as `1`. Beyond the int64 range they decode to `pass.bigint`
--    boxes, which encode back to the same digits.
-- 7. Symbols are `"%name"` (a name starting with `@@` is escaped as
--    `"%@@@@..."`, as Endo escapes registered symbols; well-known symbols,
--    `"%@@iterator"`, have no Lua value), byte arrays `"*<hex>"` (lower case
--    hex; either case is read), tagged values
--    `{"#tag":<tag>,"payload":<payload>}`. Endo has not released a
--    byteArray encoding: `*` and hex are those of its open proposal
--    (endojs/endo pull requests 2871 and 3226).
-- 6. cjson reads `[]` and `{}` alike; see `markEmptyRecords`, which also
--    finds an empty object written with white space inside (`{ }`, never
--    produced by JSON.stringify, read as a record by the C codec too).

local M = {}

local pass = require 'ocap.pass'
local hex = require 'ocap.hex'
local cjson = require('cjson').new()
cjson.decode_invalid_numbers(false) -- no NaN, Infinity or hex literals in JSON

local type = type
local next = next
local error = error
local pcall = pcall
local rawequal = rawequal
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local math_type = math.type
local tointeger = math.tointeger
local byte = string.byte
local sub = string.sub
local find = string.find
local gsub = string.gsub
local match = string.match
local format = string.format
local rep = string.rep
local concat = table.concat
local utf8_len = utf8.len
local sort = table.sort
local cjson_encode = cjson.encode
local cjson_decode = cjson.decode
local JSON_NULL = cjson.null

local NULL = pass.null
local ARRAY_MT = pass.ARRAY_MT
local classify = pass.classify
local contents = pass.contents
local remotableIface = pass.remotableIface
local isRemotable = pass.isRemotable
local isPromise = pass.isPromise

local MAX_SAFE = 9007199254740992 -- 2^53
local HUGE = math.huge
local MIN_NORMAL = 2.2250738585072014e-308
-- Below this nesting depth cycles are not looked for: a cycle is found once
-- it has taken the encoder this deep, at the cost of one set per table
-- beyond it.
local CYCLE_CHECK_DEPTH = 32
-- The nesting limit of arrays and records, the same both ways.
local MAX_DEPTH = 1000
local TOO_DEEP = 'cannot pass structure nested deeper than ' .. MAX_DEPTH .. ' levels'
cjson.decode_max_depth(MAX_DEPTH)
-- Buffers up to this many pieces are kept for the next serialize.
local SPARE_MAX = 4096

-- JSON strings ---------------------------------------------------------------

-- cjson escapes `/` and DEL, JSON.stringify does not. In cjson's output every
-- backslash starts an escape, so escapes are read left to right as a
-- backslash, one character and up to four hex digits.
local FIX_PAT = '\\(.)(%x?%x?%x?%x?)'
local function fixEscape(c, digits)
  if c == '/' then return '/' .. digits end
  if c == 'u' and digits == '007f' then return '\127' end
  return nil -- keep the escape as it is
end

--- JSON.stringify of a string (without the smallcaps `!` escape).
---@param s string
---@return string
function M.jsonString(s)
  s = cjson_encode(s)
  if find(s, '\\', 1, true) then s = gsub(s, FIX_PAT, fixEscape) end
  return s
end
local jsonString = M.jsonString

-- Encoded short strings and record keys, kept while there are few of them:
-- method names and record keys repeat from message to message.
local QUOTE_CACHE_MAX = 2048
local QUOTE_CACHE_LEN = 48
local quoteCache, keyCache = {}, {}
local quoteCount, keyCount = 0, 0

-- A passable string as JSON: `!`-escaped when it starts with one of the
-- special characters ASCII 33..45 (`!"#$%&'()*+,-`).
local function quoteSlow(s)
  local b = byte(s, 1)
  local e = cjson_encode((b and b <= 45 and b >= 33) and '!' .. s or s)
  if find(e, '\\', 1, true) then e = gsub(e, FIX_PAT, fixEscape) end
  return e
end

local function quote(s)
  local e = quoteCache[s]
  if e then return e end
  e = quoteSlow(s)
  if #s <= QUOTE_CACHE_LEN then
    if quoteCount >= QUOTE_CACHE_MAX then
      quoteCache, quoteCount = {}, 0
    end
    quoteCache[s] = e
    quoteCount = quoteCount + 1
  end
  return e
end

-- A record key as JSON, with the colon.
local function quoteKey(k)
  local e = keyCache[k]
  if e then return e end
  e = quoteSlow(k) .. ':'
  if #k <= QUOTE_CACHE_LEN then
    if keyCount >= QUOTE_CACHE_MAX then
      keyCache, keyCount = {}, 0
    end
    keyCache[k] = e
    keyCount = keyCount + 1
  end
  return e
end

-- Numbers ----------------------------------------------------------------

-- For a positive power of two the interval of values that read back as it is
-- lopsided, so the 16-digit value nearest to it may not read back while its
-- neighbour on the far side does. `s` is the nearest, as '%.15e' gives it.
local function farNeighbour16(s, x)
  local d1, rest, e = match(s, '^(%d)%.(%d+)e([-+]%d+)$')
  local m = tonumber(d1 .. rest)
  m = tonumber(s) < x and m + 1 or m - 1
  if m >= 10000000000000000 or m < 1000000000000000 then return nil end
  local ds = tostring(m)
  local cand = sub(ds, 1, 1) .. '.' .. sub(ds, 2) .. 'e' .. e
  if tonumber(cand) == x then return cand end
  return nil
end

local SCI = {}
for p = 0, 16 do SCI[p] = '%.' .. p .. 'e' end

-- The shortest decimal that reads back as x > 0 (the nearest one when there
-- are several): its digits without trailing zeros, and its exponent in
-- scientific notation.
local function shortest(x)
  local s
  if x >= MIN_NORMAL then
    -- Any decimal of at most 15 digits that reads back as x is the nearest
    -- 15-digit decimal, so one try covers all lengths up to 15.
    s = format('%.14e', x)
    if tonumber(s) ~= x then
      s = format('%.15e', x)
      if tonumber(s) ~= x then
        s = (find(format('%a', x), '^0x1p') and farNeighbour16(s, x)) or format('%.16e', x)
      end
    end
  else
    for p = 0, 16 do
      s = format(SCI[p], x)
      if tonumber(s) == x then break end
    end
  end
  local d1, rest, e = match(s, '^(%d)%.?(%d*)e([-+]%d+)$')
  local digits = gsub(d1 .. rest, '0+$', '')
  return digits, tonumber(e)
end

--- Formats a number as JavaScript's `Number.prototype.toString` does
--- (`1e+21`, `1.5e-7`, `0.000001`, `-0` is `0`, `NaN`, `Infinity`).
---@param x number
---@return string
function M.formatNumber(x)
  if math_type(x) == 'integer' then return tostring(x) end
  if x ~= x then return 'NaN' end
  if x == HUGE then return 'Infinity' end
  if x == -HUGE then return '-Infinity' end
  local i = tointeger(x)
  if i and i <= MAX_SAFE and i >= -MAX_SAFE then return tostring(i) end
  local neg = x < 0
  local digits, e = shortest(neg and -x or x)
  local k = #digits
  local n = e + 1 -- the value is 0.<digits> * 10^n
  local r
  if k <= n and n <= 21 then
    r = digits .. rep('0', n - k)
  elseif 0 < n and n <= 21 then
    r = sub(digits, 1, n) .. '.' .. sub(digits, n + 1)
  elseif -6 < n and n <= 0 then
    r = '0.' .. rep('0', -n) .. digits
  else
    local es = e >= 0 and ('e+' .. e) or ('e' .. e)
    if k == 1 then
      r = digits .. es
    else
      r = sub(digits, 1, 1) .. '.' .. sub(digits, 2) .. es
    end
  end
  if neg then r = '-' .. r end
  return r
end
local formatNumber = M.formatNumber

-- Paths and failures ---------------------------------------------------------

local function keyPath(k)
  if type(k) == 'string' then
    if match(k, '^[%a_][%w_]*$') then return '.' .. k end
    return format('[%q]', k)
  end
  return '[' .. tostring(k) .. ']'
end

-- Depth-first search from `root` for `target`, or (when `target` is nil) for
-- a reference back to a table on the current path. Returns the path.
local function findPath(root, target)
  local onPath, seen, keys = {}, {}, {}
  local function visit(t, depth)
    if isRemotable(t) or isPromise(t) then return false end
    onPath[t], seen[t] = true, true
    for k, v in next, contents(t) do
      keys[depth] = keyPath(k)
      if target ~= nil and rawequal(v, target) then return depth end
      if type(v) == 'table' then
        if target == nil and onPath[v] then return depth end
        if not seen[v] then
          local d = visit(v, depth + 1)
          if d then return d end
        end
      end
    end
    onPath[t] = nil
    return false
  end
  if type(root) ~= 'table' or rawequal(root, target) then return nil end
  local d = visit(root, 1)
  return d and concat(keys, '', 1, d) or nil
end

-- Raises `msg`, with the path to `v` when it is inside the root; a nil `v`
-- asks for the path to a reference that closes a cycle.
local function fail(cx, v, msg)
  local path = findPath(cx.root, v)
  if path then
    if #path > 160 then path = sub(path, 1, 60) .. '...' .. sub(path, -90) end
    msg = msg .. ' (at ' .. path .. ')'
  end
  error(msg, 0)
end

-- Encoding -------------------------------------------------------------------

local encode

local function encodeSlot(t, style, cx)
  local slotMap = cx.slotMap
  if slotMap == nil then
    if cx.valToSlot == nil then fail(cx, t, 'cannot pass ' .. style .. ' as plain data') end
    slotMap = {}
    cx.slotMap = slotMap
  end
  local index = slotMap[t]
  if index ~= nil then
    return (style == 'promise' and '"&' or '"$') .. index .. '"'
  end
  local slot = cx.valToSlot(t, style)
  if type(slot) ~= 'string' then
    fail(cx, t, 'valToSlot returned ' .. type(slot) .. ' for a ' .. style)
  end
  local slots = cx.slots
  index = #slots
  slots[index + 1] = slot
  slotMap[t] = index
  if style == 'promise' then return '"&' .. index .. '"' end
  local iface = remotableIface(t)
  if iface == nil then return '"$' .. index .. '"' end
  return jsonString('$' .. index .. '.' .. iface)
end

-- Keys that JavaScript objects enumerate first, in numeric order.
local function isIndexKey(k)
  local b = byte(k, 1)
  if b == 48 then return k == '0' end
  return b ~= nil and b > 48 and b <= 57 and #k <= 10 and not find(k, '%D')
    and tonumber(k) <= 4294967294
end

-- UTF-16 code unit order differs from UTF-8 byte order only between
-- U+E000..U+FFFF (lead bytes EE, EF) and supplementary characters (lead
-- bytes F0..F4): moving EE and EF above F4 makes byte order agree.
local UTF16_LEAD = { ['\238'] = '\246', ['\239'] = '\247' }
local function utf16Less(a, b)
  return gsub(a, '[\238\239]', UTF16_LEAD) < gsub(b, '[\238\239]', UTF16_LEAD)
end

local function indexLess(a, b)
  return tonumber(a) < tonumber(b)
end

-- Sorts record keys in place; returns them in emission order when that
-- differs from the sorted order (index-like keys present), else nil.
local function sortKeys(keys, nk)
  local utf16, indexes = false, false
  for i = 1, nk do
    local k = keys[i]
    local b = byte(k, 1)
    if b and b >= 48 and b <= 57 and not indexes and isIndexKey(k) then indexes = true end
    if not utf16 and utf8_len(k) ~= #k and find(k, '[\238-\244]') then utf16 = true end
  end
  if utf16 then sort(keys, utf16Less) else sort(keys) end
  if not indexes then return nil end
  local order, rest, no, nr = {}, {}, 0, 0
  for i = 1, nk do
    local k = keys[i]
    if isIndexKey(k) then
      no = no + 1
      order[no] = k
    else
      nr = nr + 1
      rest[nr] = k
    end
  end
  sort(order, indexLess)
  for i = 1, nr do order[no + i] = rest[i] end
  return order
end

local function encodeRecord(keys, c, cx, n, depth)
  local nk = #keys
  local order = nk > 1 and sortKeys(keys, nk)
  if not order then
    local open = '{'
    for i = 1, nk do
      local k = keys[i]
      n = n + 1
      cx[n] = open
      n = n + 1
      cx[n] = quoteKey(k)
      n = encode(c[k], cx, n, depth)
      open = ','
    end
    n = n + 1
    cx[n] = '}'
    return n
  end
  -- Values are encoded in sorted key order, which decides slot numbers, and
  -- emitted in JavaScript's enumeration order.
  local parts = {}
  local base = n
  for i = 1, nk do
    local k = keys[i]
    local m = encode(c[k], cx, base, depth)
    parts[k] = quoteKey(k) .. concat(cx, '', base + 1, m)
  end
  for i = 1, nk do
    n = n + 1
    cx[n] = (i == 1 and '{' or ',') .. parts[order[i]]
  end
  n = n + 1
  cx[n] = '}'
  return n
end

local function encodeTable(t, cx, n, depth)
  local style, a, c = classify(t)
  if style == 'copyArray' then
    depth = depth + 1
    if a == 0 then
      if depth > MAX_DEPTH then fail(cx, t, TOO_DEEP) end
      n = n + 1
      cx[n] = '[]'
      return n
    end
    local deep = depth > CYCLE_CHECK_DEPTH and (cx.deep or {})
    if deep then
      if deep[t] then fail(cx, nil, 'cannot pass cyclic structure') end
      if depth > MAX_DEPTH then fail(cx, t, TOO_DEEP) end
      deep[t] = true
      cx.deep = deep
    end
    n = n + 1
    cx[n] = '['
    for i = 1, a do
      if i > 1 then
        n = n + 1
        cx[n] = ','
      end
      local x = c[i]
      local tx = type(x)
      if tx == 'string' then
        n = n + 1
        cx[n] = quoteCache[x] or quote(x)
      elseif tx == 'number' and math_type(x) == 'integer' and x <= MAX_SAFE and x >= -MAX_SAFE then
        n = n + 1
        cx[n] = tostring(x)
      else
        n = encode(x, cx, n, depth)
      end
    end
    n = n + 1
    cx[n] = ']'
    if deep then deep[t] = nil end
    return n
  elseif style == 'copyRecord' then
    depth = depth + 1
    if a == nil then
      if depth > MAX_DEPTH then fail(cx, t, TOO_DEEP) end
      n = n + 1
      cx[n] = '{}'
      return n
    end
    local deep = depth > CYCLE_CHECK_DEPTH and (cx.deep or {})
    if deep then
      if deep[t] then fail(cx, nil, 'cannot pass cyclic structure') end
      if depth > MAX_DEPTH then fail(cx, t, TOO_DEEP) end
      deep[t] = true
      cx.deep = deep
    end
    n = encodeRecord(a, c, cx, n, depth)
    if deep then deep[t] = nil end
    return n
  elseif style == 'remotable' or style == 'promise' then
    n = n + 1
    cx[n] = encodeSlot(t, style, cx)
    return n
  elseif style == 'null' then
    n = n + 1
    cx[n] = 'null'
    return n
  elseif style == 'error' then
    local message, name = t.message, t.name
    if type(message) ~= 'string' or type(name) ~= 'string' then
      fail(cx, t, 'cannot pass error whose message or name is not a string')
    end
    n = n + 1
    cx[n] = '{"#error":' .. quote(message) .. ',"name":' .. quote(name) .. '}'
    return n
  elseif style == 'symbol' then
    local name = a.name
    if sub(name, 1, 2) == '@@' then name = '@@' .. name end
    n = n + 1
    cx[n] = jsonString('%' .. name)
    return n
  elseif style == 'bigint' then
    local digits = a.digits
    n = n + 1
    cx[n] = byte(digits, 1) == 45 and '"' .. digits .. '"' or '"+' .. digits .. '"'
    return n
  elseif style == 'byteArray' then
    n = n + 1
    cx[n] = '"*' .. hex.encode(a.bytes) .. '"'
    return n
  elseif style == 'tagged' then
    depth = depth + 1
    if depth > MAX_DEPTH then fail(cx, t, TOO_DEEP) end
    n = n + 1
    cx[n] = '{"#tag":' .. quote(a.tag) .. ',"payload":'
    n = encode(a.payload, cx, n, depth)
    n = n + 1
    cx[n] = '}'
    return n
  end
  if a == 'cannot pass userdata' then a = 'cannot pass userdata (' .. tostring(t) .. ')' end
  fail(cx, t, a)
end

-- Appends the encoding of v to cx[n+1..] and returns the new n; `depth` is
-- the number of enclosing tables.
encode = function(v, cx, n, depth)
  local tv = type(v)
  if tv == 'string' then
    n = n + 1
    cx[n] = quoteCache[v] or quote(v)
  elseif tv == 'number' then
    n = n + 1
    if math_type(v) == 'integer' then
      if v <= MAX_SAFE and v >= -MAX_SAFE then
        cx[n] = tostring(v)
      elseif v > 0 then
        cx[n] = '"+' .. tostring(v) .. '"'
      else
        cx[n] = '"' .. tostring(v) .. '"'
      end
    elseif v ~= v then
      cx[n] = '"#NaN"'
    elseif v == HUGE then
      cx[n] = '"#Infinity"'
    elseif v == -HUGE then
      cx[n] = '"#-Infinity"'
    else
      cx[n] = formatNumber(v)
    end
  elseif tv == 'table' or tv == 'userdata' then
    return encodeTable(v, cx, n, depth)
  elseif tv == 'boolean' then
    n = n + 1
    cx[n] = v and 'true' or 'false'
  elseif tv == 'nil' then
    n = n + 1
    cx[n] = '"#undefined"'
  elseif tv == 'thread' then
    fail(cx, v, 'cannot pass thread (coroutine)')
  else
    fail(cx, v, 'cannot pass ' .. tv)
  end
  return n
end

-- One buffer is kept between calls. It is also the encoder's context:
-- fields root, slots, valToSlot, slotMap (object -> slot index) and deep
-- (tables being encoded beyond CYCLE_CHECK_DEPTH). A nested serialize (from
-- valToSlot) or one after an error gets a fresh buffer.
local spare

local function luaSerialize(v, valToSlot)
  local cx = spare or {}
  spare = nil
  local slots = {}
  cx[1] = '#'
  cx.root, cx.slots, cx.valToSlot = v, slots, valToSlot
  local n = encode(v, cx, 1, 0)
  local body = concat(cx, '', 1, n)
  cx.root, cx.slots, cx.valToSlot, cx.slotMap, cx.deep = nil, nil, nil, nil, nil
  if n <= SPARE_MAX then spare = cx end
  return { body = body, slots = slots }
end

--- Serializes v, asking valToSlot for the slot of each remotable and
--- promise (none allowed when it is nil).
---@param v any
---@param valToSlot ocap.ValToSlot|nil
---@return { body: string, slots: string[] }
M.serialize = luaSerialize

--- Serializes slot-free data; a remotable or promise is an error.
---@param v any a passable without capabilities
---@return { body: string, slots: string[] }
function M.serializeData(v)
  return luaSerialize(v, nil)
end

-- Decoding ---------------------------------------------------------------

local RESERVED = "Special char %q reserved for future use: %s"

-- The end of the JSON string that opens at `q` (the position of its
-- closing quote), or nil.
local function stringEnd(json, q)
  local p = q + 1
  while true do
    local qe = find(json, '"', p, true)
    if qe == nil then return nil end
    local bs = qe - 1
    while byte(json, bs) == 92 do bs = bs - 1 end
    if (qe - 1 - bs) % 2 == 0 then return qe end
    p = qe + 1
  end
end

-- The ifaces written with slots (`"$<index>.<iface>"`) anywhere in the
-- text, by slot index, the first occurrence winning. The walk visits
-- record members in hash order, not text order, so a bare `"$<index>"` may
-- be met before the occurrence that names the iface; the text is searched
-- once, on first need, since searching it again for each slot would make
-- decoding quadratic in the number of slots.
local function ifacesInText(json)
  local ifaces = {}
  local pos = 1
  while true do
    local q = find(json, '"$', pos, true)
    if q == nil then return ifaces end
    local bs = q - 1
    while byte(json, bs) == 92 do bs = bs - 1 end
    local qe = (q - 1 - bs) % 2 == 0 and stringEnd(json, q) -- an opening quote
    if not qe then
      pos = q + 1
    else
      if find(json, '^"%$%d+%.', q) then
        local ok, str = pcall(cjson_decode, sub(json, q, qe))
        local index, iface
        if ok then index, iface = match(str, '^%$(%d+)%.(.*)$') end
        index = index and tointeger(tonumber(index))
        if index and ifaces[index] == nil then ifaces[index] = iface end
      end
      pos = qe + 1
    end
  end
end

local function decodeSlot(s, cx, style)
  local index, iface
  if style == 'promise' then
    index = match(s, '^&(%d+)$')
  else
    index, iface = match(s, '^%$(%d+)%.(.*)$')
    if not index then index = match(s, '^%$(%d+)$') end
  end
  if not index then error(format('invalid %s encoding %q', style, s), 0) end
  index = tointeger(tonumber(index))
  if index == nil then error(format('%s %q refers to no slot', style, s), 0) end
  local cache = cx.cache
  if cache == nil then
    if cx.slotToVal == nil then
      error(format('cannot unserialize %s %q as plain data', style, s), 0)
    end
    cache = {}
    cx.cache, cx.styles, cx.named = cache, {}, {}
  end
  local slot = cx.slots[index + 1]
  if slot == nil then
    error(format('%s %q refers to slot %d, but there are %d slots', style, s, index, #cx.slots), 0)
  end
  if iface == nil and style == 'remotable' then
    local ifaces = cx.ifaces
    if ifaces == nil then
      ifaces = ifacesInText(cx.json)
      cx.ifaces = ifaces
    end
    iface = ifaces[index]
  end
  -- The walk meets record members in hash order, so every occurrence of a
  -- slot must say the same thing: otherwise the first one met would decide,
  -- and a vat and the host could read one body differently.
  local v = cache[index]
  if v ~= nil then
    if cx.styles[index] ~= style then
      error(format('slot %d is used both as a remotable and as a promise', index), 0)
    end
    if cx.named[index] ~= (iface or false) then
      error(format('slot %d is given two interface names', index), 0)
    end
    return v
  end
  v = cx.slotToVal(slot, iface, style)
  if v == nil then error(format('slotToVal returned nil for slot %q', slot), 0) end
  cache[index] = v
  cx.styles[index], cx.named[index] = style, iface or false
  return v
end

-- A Lua integer within int64, a pass.bigint box beyond.
local function decodeBigint(s)
  if not find(s, '^[+-]%d+$') then error(format('invalid bigint encoding %q', s), 0) end
  local v = tonumber(s) -- an integer when it is in range, else a float
  if math_type(v) == 'integer' then return v end
  return pass.bigint(s)
end

-- Quotes at most the first 40 bytes of s, for messages.
local function short(s)
  if #s > 40 then return format('%q...', sub(s, 1, 40)) end
  return format('%q', s)
end

local function decodeSymbol(s)
  local name = sub(s, 2)
  if sub(name, 1, 2) == '@@' then
    if sub(name, 3, 4) ~= '@@' then error(format('well-known symbol %s has no Lua value', short(s)), 0) end
    name = sub(name, 3)
  end
  return pass.symbol(name)
end

local function decodeBytes(s)
  if #s % 2 == 0 or find(s, '%X', 2) then
    error(format('invalid byteArray encoding %s (pairs of hex digits expected)', short(s)), 0)
  end
  return pass.bytes(hex.decode(sub(s, 2)))
end

-- A string that starts with a special character (ASCII 33..45).
local function decodeSpecial(s, cx)
  local c = byte(s, 1)
  if c == 33 then -- !
    return sub(s, 2)
  elseif c == 35 then -- #
    if s == '#undefined' then return nil end
    if s == '#NaN' then return 0.0 / 0.0 end
    if s == '#Infinity' then return HUGE end
    if s == '#-Infinity' then return -HUGE end
    error(format('unknown constant %q', s), 0)
  elseif c == 36 then -- $
    return decodeSlot(s, cx, 'remotable')
  elseif c == 38 then -- &
    return decodeSlot(s, cx, 'promise')
  elseif c == 43 or c == 45 then -- + -
    return decodeBigint(s)
  elseif c == 37 then -- %
    return decodeSymbol(s)
  elseif c == 42 then -- *
    return decodeBytes(s)
  elseif c == 39 and s == "'" and cx.emptyRecords then
    return {} -- an empty record, see markEmptyRecords
  end
  error(format(RESERVED, sub(s, 1, 1), s), 0)
end

local walk, decodeValue

local function decodeError(t, cx)
  local message, name = t['#error'], t.name
  if type(message) == 'string' then
    local b = byte(message, 1)
    if b and b <= 45 and b >= 33 then message = decodeSpecial(message, cx) end
  end
  if type(message) ~= 'string' then error('error message must decode to a string', 0) end
  if name == nil then
    name = 'Error'
  elseif type(name) == 'string' then
    local b = byte(name, 1)
    if b and b <= 45 and b >= 33 then name = decodeSpecial(name, cx) end
  end
  if type(name) ~= 'string' then error('error name must decode to a string', 0) end
  -- errorId, cause, errors and other properties have no Lua counterpart.
  return pass.makeError(message, name)
end

-- `{"#tag":<tag>,"payload":<payload>}` and nothing else; the tag must
-- decode to a string.
local function decodeTagged(t, cx)
  for k in next, t do
    if k ~= '#tag' and k ~= 'payload' then error(format('tagged value (#tag) with an unexpected key %q', k), 0) end
  end
  local tag = t['#tag']
  if type(tag) == 'string' then
    local b = byte(tag, 1)
    if b and b <= 45 and b >= 33 then tag = decodeSpecial(tag, cx) end
  end
  if type(tag) ~= 'string' then error('tagged value tag must decode to a string', 0) end
  local payload = t.payload
  if payload == nil then error(format('tagged value (#tag) %s without a payload', short(tag)), 0) end
  return pass.makeTagged(tag, decodeValue(payload, cx))
end

local function decodeKey(k)
  local c = byte(k, 1)
  if c == 35 then error(format('unrecognized record type %q', k), 0) end
  if c == 33 then return sub(k, 2) end
  if c == 34 or (c >= 39 and c <= 41) or c == 44 then
    error(format(RESERVED, sub(k, 1, 1), k), 0)
  end
  error(format('record key %q must decode to a string', k), 0)
end

-- Rewrites a table cjson made, in place: arrays get the array mark (and `n`
-- when they hold nils), records get their keys unescaped.
walk = function(t, cx)
  if t[1] ~= nil or next(t) == nil then
    local len = #t
    local holes = false
    for i = 1, len do
      local v = t[i]
      local tv = type(v)
      if tv == 'string' then
        local b = byte(v, 1)
        if b and b <= 45 and b >= 33 then
          v = decodeSpecial(v, cx)
          if v == nil then holes = true end
          t[i] = v
        end
      elseif tv == 'number' then
        local iv = tointeger(v)
        if iv and iv <= MAX_SAFE and iv >= -MAX_SAFE then t[i] = iv end
      elseif tv == 'table' then
        t[i] = walk(v, cx)
      elseif v == JSON_NULL then
        t[i] = NULL
      end
    end
    if holes then t.n = len end
    return setmetatable(t, ARRAY_MT)
  end
  if t['#tag'] ~= nil then return decodeTagged(t, cx) end
  if t['#error'] ~= nil then return decodeError(t, cx) end
  local escaped
  for k, v in next, t do
    local b = byte(k, 1)
    if b and b <= 45 and b >= 33 then
      if escaped then escaped[#escaped + 1] = k else escaped = { k } end
    end
    local tv = type(v)
    if tv == 'string' then
      b = byte(v, 1)
      if b and b <= 45 and b >= 33 then t[k] = decodeSpecial(v, cx) end
    elseif tv == 'number' then
      local iv = tointeger(v)
      if iv and iv <= MAX_SAFE and iv >= -MAX_SAFE then t[k] = iv end
    elseif tv == 'table' then
      t[k] = walk(v, cx)
    elseif v == JSON_NULL then
      t[k] = NULL
    end
  end
  if escaped then
    local moved = {}
    for i = 1, #escaped do
      local k = escaped[i]
      moved[i] = t[k]
      t[k] = nil
    end
    for i = 1, #escaped do
      local name = decodeKey(escaped[i])
      if t[name] ~= nil then error(format('duplicate record key %q', name), 0) end
      t[name] = moved[i]
    end
  end
  return t
end

decodeValue = function(v, cx)
  local tv = type(v)
  if tv == 'string' then
    local b = byte(v, 1)
    if b and b <= 45 and b >= 33 then return decodeSpecial(v, cx) end
    return v
  elseif tv == 'number' then
    local iv = tointeger(v)
    if iv and iv <= MAX_SAFE and iv >= -MAX_SAFE then return iv end
    return v
  elseif tv == 'table' then
    return walk(v, cx)
  elseif v == JSON_NULL then
    return NULL
  end
  return v
end

-- cjson reads `[]` and `{}` alike. Empty arrays are the common case, so an
-- empty table is read as an array, and each `{}` outside strings is replaced
-- by the string "'" (a reserved character, an error anywhere in a valid
-- body), which the walk turns back into an empty record. To keep a real
-- "'" an error, every string is checked here. Called only when the text
-- contains an empty object (EMPTY_RECORD, white space allowed inside);
-- returns the new text and whether anything was replaced.
local EMPTY_RECORD = '{[ \t\n\r]*}'
local function markEmptyRecords(json)
  local parts, np = {}, 0
  local pos, last = 1, 1
  local e, ee = find(json, EMPTY_RECORD)
  while true do
    local q = find(json, '"', pos, true)
    while e and (q == nil or e < q) do
      parts[np + 1] = sub(json, last, e - 1)
      parts[np + 2] = '"\'"'
      np = np + 2
      last = ee + 1
      e, ee = find(json, EMPTY_RECORD, last)
    end
    if q == nil then break end
    local b = byte(json, q + 1)
    if b == 39 or (b == 92 and sub(json, q + 2, q + 6) == 'u0027') then
      error(format(RESERVED, "'", sub(json, q, q + 20)), 0)
    end
    local qe = stringEnd(json, q)
    if qe == nil then return json, false end -- unterminated: cjson says so
    pos = qe + 1
    if e and e < pos then e, ee = find(json, EMPTY_RECORD, pos) end
  end
  if np == 0 then return json, false end
  parts[np + 1] = sub(json, last)
  return concat(parts), true
end

local function checkCapdata(capdata)
  if type(capdata) ~= 'table' then
    error('capdata must be a table, got ' .. type(capdata), 0)
  end
  local body, slots = capdata.body, capdata.slots
  if type(body) ~= 'string' then error('capdata body must be a string', 0) end
  if byte(body, 1) ~= 35 then error('capdata body must start with "#" (smallcaps)', 0) end
  if slots == nil then
    slots = {}
  elseif type(slots) ~= 'table' then
    error('capdata slots must be a table', 0)
  end
  return body, slots
end

local function luaUnserialize(capdata, slotToVal)
  local body, slots = checkCapdata(capdata)
  local json = sub(body, 2)
  local emptyRecords = false
  if find(json, EMPTY_RECORD) then json, emptyRecords = markEmptyRecords(json) end
  local ok, v = pcall(cjson_decode, json)
  if not ok then error('invalid capdata body: ' .. tostring(v), 0) end
  return decodeValue(v, { slots = slots, slotToVal = slotToVal, json = json, emptyRecords = emptyRecords })
end

--- Unserializes capdata, asking slotToVal for the value of each slot
--- (none allowed when it is nil).
---@param capdata { body: string, slots?: string[] }
---@param slotToVal ocap.SlotToVal|nil
---@return any
M.unserialize = luaUnserialize

--- Unserializes capdata that has no slot references.
---@param capdata { body: string, slots?: string[] }
---@return any
function M.unserializeData(capdata)
  return luaUnserialize(capdata, nil)
end

-- Marshal ------------------------------------------------------------------

---@alias ocap.ValToSlot fun(v: any, style: 'remotable'|'promise'): string
---@alias ocap.SlotToVal fun(slot: string, iface: string|nil, style: 'remotable'|'promise'): any

-- Fast paths ------------------------------------------------------------------

-- Most messages carry a method name and a few integers or plain strings, and
-- most results are one such value. These are encoded and decoded without the
-- general walk, byte for byte as the walk would (spec/marshal_spec.lua
-- compares the two on many values); anything else takes the general path.

--- JSON text of an integer within 2^53, a boolean, or a string that needs
--- no escaping, or nil.
local function simpleText(v)
  local tv = type(v)
  if tv == 'number' then
    if math_type(v) == 'integer' and v <= MAX_SAFE and v >= -MAX_SAFE then return format('%d', v) end
  elseif tv == 'string' then
    local b = byte(v, 1)
    if (b == nil or b > 45 or b < 33) and not find(v, '[%z\1-\31"\\]') then return '"' .. v .. '"' end
  elseif tv == 'boolean' then
    return v and 'true' or 'false'
  end
  return nil
end

--- The value of one simple JSON token (as simpleText writes), or nil.
local function simpleValue(tok)
  local b = byte(tok, 1)
  if b == 34 then
    -- Control characters are refused, as the general path refuses them.
    local s = match(tok, '^"([^"\\%z\1-\31]*)"$')
    local c = s and byte(s, 1)
    if s and (c == nil or c > 45 or c < 33) then return s end
  elseif b == 116 and tok == 'true' then
    return true
  elseif b == 102 and tok == 'false' then
    return false
  elseif #tok <= 16 and (match(tok, '^%-?[1-9]%d*$') or tok == '0' or tok == '-0') then
    -- JSON has no leading zeros: `01` is left to the general path, which
    -- refuses it.
    local n = tointeger(tonumber(tok))
    if n and n <= MAX_SAFE and n >= -MAX_SAFE then return n end
  end
  return nil
end

local NO = {} -- "not simple": simple values may be false

--- Decodes a body made of one simple value; NO when it is not one.
local function fastValue(body)
  local v = simpleValue(sub(body, 2))
  if v == nil then return NO end
  return v
end

--- Decodes `#["method",[simple,...]]`; nil when it is not of that shape.
local function fastCall(body)
  local method, rest = match(body, '^#%["([%a_][%w_]*)",%[([^%[%]{}\\]*)%]%]$')
  if not method then return nil end
  local args, n, pos, len = {}, 0, 1, #rest
  while pos <= len do
    local e
    if byte(rest, pos) == 34 then
      e = find(rest, '"', pos + 1, true)
      if not e then return nil end
    else
      e = (find(rest, ',', pos, true) or len + 1) - 1
    end
    local v = simpleValue(sub(rest, pos, e))
    if v == nil then return nil end
    n = n + 1
    args[n] = v
    pos = e + 1
    if pos <= len then
      if byte(rest, pos) ~= 44 or pos == len then return nil end
      pos = pos + 1
    end
  end
  return setmetatable({ method, setmetatable(args, ARRAY_MT) }, ARRAY_MT)
end

--- Serializes [method, args] (args packed, with n) as a message's methargs.
local function serializeCall(method, args, valToSlot)
  local ms = type(method) == 'string' and simpleText(method)
  if ms then
    local n = args.n or #args
    local parts = { '#[', ms, ',[' }
    for i = 1, n do
      local s = simpleText(args[i])
      if not s then
        parts = nil
        break
      end
      parts[i + 3] = i > 1 and ',' .. s or s
    end
    if parts then
      parts[n + 4] = ']]'
      return { body = concat(parts), slots = {} }
    end
  end
  return luaSerialize(setmetatable({ method, args }, ARRAY_MT), valToSlot)
end

--- serialize of [method, args] (args packed, with n), for sends.
M.serializeCall = serializeCall

--- Makes a marshaller of this codec alone, with its fast paths. Within one
--- `serialize` call, each remotable or promise gets one slot (`valToSlot`
--- is called once per object); within one `unserialize` call, `slotToVal`
--- is called once per slot index, with the iface of its first occurrence
--- (nil for promises).
---@param valToSlot ocap.ValToSlot
---@param slotToVal ocap.SlotToVal
function M.makeMarshal(valToSlot, slotToVal)
  if type(valToSlot) ~= 'function' or type(slotToVal) ~= 'function' then
    error('makeMarshal(valToSlot, slotToVal): both must be functions', 2)
  end
  return {
    serialize = function(v)
      local s = simpleText(v)
      if s then return { body = '#' .. s, slots = {} } end
      return luaSerialize(v, valToSlot)
    end,
    unserialize = function(capdata)
      local body, slots
      if type(capdata) == 'table' then body, slots = capdata.body, capdata.slots end
      if type(body) == 'string' and (slots == nil or next(slots) == nil) and byte(body, 1) == 35 then
        local b = byte(body, 2)
        if b == 91 then
          local call = fastCall(body)
          if call then return call end
        else
          local v = fastValue(body)
          if v ~= NO then return v end
        end
      end
      return luaUnserialize(capdata, slotToVal)
    end,
    serializeCall = function(method, args)
      return serializeCall(method, args, valToSlot)
    end,
  }
end

return M
