--- Symbols, byte arrays, integers beyond 64 bits and tagged values: the
--- OCapN (and JavaScript) values Lua has no type for. `ocap.pass` loads
--- this module on first need and calls it with its private table of box
--- contents; the functions it returns become `pass.symbol`, `pass.bytes`,
--- `pass.bigint`, `pass.makeTagged` and `pass.box`.
--
-- Conventions:
-- 1. A box is an empty table whose contents (`{ style = ..., fields }`)
--    live in pass's table, so neither `rawset` on it nor its metatable
--    changes what the codecs read; the metatable answers the fields and
--    refuses assignments.
-- 2. Symbols, byte arrays and big integers are interned: one table per
--    value in a Lua state, so that `==` compares them by value and they can
--    be table keys. Tagged values are copy data, compared by identity like
--    records.
-- 3. Integers that fit in 64 bits are Lua integers, never boxes: one value,
--    one representation.

local type = type
local error = error
local format = string.format
local match = string.match
local setmetatable = setmetatable
local tonumber = tonumber
local pcall = pcall
local require = require
local math_type = math.type
local mininteger = math.mininteger

local INT64_MAX = '9223372036854775807'
local INT64_MIN = '9223372036854775808' -- the magnitude of math.mininteger

return function(boxes, pass)
  local K = {}

  local function boxIndex(b, k)
    local c = boxes[b]
    return c and c[k]
  end

  local function boxLen(b)
    local c = boxes[b]
    return c and c.bytes and #c.bytes or 0
  end

  local function boxString(b)
    local c = boxes[b]
    local style = c.style
    if style == 'bigint' then return c.digits end
    if style == 'symbol' then return 'symbol(' .. c.name .. ')' end
    if style == 'byteArray' then return format('byteArray(%d bytes)', #c.bytes) end
    return 'tagged(' .. c.tag .. ')'
  end

  local BOX_MT = {
    __name = 'ocap.box',
    __index = boxIndex,
    __newindex = function() error('cannot modify a passable box', 2) end,
    __len = boxLen,
    __tostring = boxString,
    __metatable = 'box',
  }

  -- One table per value, by style: entries go when their box is collected.
  local interned = {
    symbol = setmetatable({}, { __mode = 'v' }),
    bigint = setmetatable({}, { __mode = 'v' }),
    byteArray = setmetatable({}, { __mode = 'v' }),
  }

  local function intern(style, key, field)
    local cache = interned[style]
    local b = cache[key]
    if b then return b end
    b = setmetatable({}, BOX_MT)
    boxes[b] = { style = style, [field] = key }
    cache[key] = b
    return b
  end

  --- The symbol named `name` (a registered symbol, `Symbol.for(name)` in
  --- JavaScript; OCapN's Symbol). The same name gives the same value:
  --- symbols compare with `==`. Its `name` field reads the name back.
  ---@param name string
  ---@return table
  function K.symbol(name)
    if type(name) ~= 'string' then error('symbol: the name must be a string, got ' .. type(name), 2) end
    return intern('symbol', name, 'name')
  end

  --- The byte array holding the bytes of `s` (OCapN's ByteArray): a Lua
  --- string is a passable string, this is binary data. The same bytes give
  --- the same value (`==`); `b.bytes` is the Lua string, `#b` its length.
  ---@param s string
  ---@return table
  function K.bytes(s)
    if type(s) ~= 'string' then error('bytes: expected a string, got ' .. type(s), 2) end
    return intern('byteArray', s, 'bytes')
  end

  --- The integer written in decimal by `digits` (`'123'`, `'-123'`,
  --- `'+123'`; leading zeros allowed), or a Lua integer as it is. An
  --- integer that fits in 64 bits is a Lua integer (so `bigint('5')` is
  --- `5`); a bigger one is a box whose `digits` field is its canonical
  --- decimal form (a `-` sign, no `+`, no leading zeros), with `tostring`
  --- giving the same. Equal integers are the same value (`==`). There is
  --- no arithmetic on boxes: they carry integers exactly.
  ---@param digits string|integer
  ---@return integer|table
  function K.bigint(digits)
    if math_type(digits) == 'integer' then return digits end
    if type(digits) ~= 'string' then
      error('bigint: expected a decimal string or an integer, got ' .. (math_type(digits) or type(digits)), 2)
    end
    local sign, body = match(digits, '^([+-]?)(%d+)$')
    if not sign then error(format('bigint: %q is not a decimal integer', digits), 2) end
    body = match(body, '^0*(%d.*)$')
    local neg = sign == '-' and body ~= '0'
    local limit = neg and INT64_MIN or INT64_MAX
    if #body < #limit or (#body == #limit and body <= limit) then
      if neg and body == INT64_MIN then return mininteger end
      local v = tonumber(body)
      return neg and -v or v
    end
    return intern('bigint', neg and '-' .. body or body, 'digits')
  end

  --- Makes a tagged value (OCapN's Tagged, passStyle `'tagged'`): `tag`, a
  --- string, names how to read `payload`, any passable, which is hardened.
  --- `t.tag` and `t.payload` read them back. Compared by identity, as
  --- records are.
  ---@param tag string
  ---@param payload any
  ---@return table
  function K.makeTagged(tag, payload)
    if type(tag) ~= 'string' then error('makeTagged: the tag must be a string, got ' .. type(tag), 2) end
    local b = setmetatable({}, BOX_MT)
    boxes[b] = { style = 'tagged', tag = tag, payload = pass.harden(payload) }
    return b
  end

  --- The style and contents of a symbol, byte array, big integer or
  --- tagged value (`'symbol', { name }`, ...), or nil for anything else.
  ---@param v any
  ---@return string|nil style
  ---@return table|nil contents
  function K.box(v)
    local c = boxes[v]
    if c then return c.style, c end
    return nil
  end

  -- ocap.syrup's kind, where the Lua state has the module (hosts; vats do
  -- not), looked up on first need; false where there is none.
  local syrupKind

  --- What pass.classify answers for a table with a metatable that is not
  --- pass's own: the style and contents of one of ocap.syrup's boxes, or
  --- nil and why it cannot pass. A host holds OCapN values as syrup's boxes
  --- (remote comms decode Syrup into them), and they pass as the equivalent
  --- ocap values. Records and sets are Syrup's, not OCapN passables.
  function K.foreign(t)
    if syrupKind == nil then
      local ok, syrup = pcall(require, 'ocap.syrup')
      syrupKind = ok and type(syrup) == 'table' and syrup.kind or false
    end
    local k = syrupKind and syrupKind(t)
    if not k then return nil, 'cannot pass table with a foreign metatable' end
    if k == 'symbol' then return 'symbol', boxes[K.symbol(t.name)] end
    if k == 'bytes' then return 'byteArray', boxes[K.bytes(t.bytes)] end
    if k == 'bigint' then return 'bigint', { style = 'bigint', digits = t.digits } end
    if k == 'tagged' then return 'tagged', { style = 'tagged', tag = t.tag, payload = t.value } end
    return nil, 'cannot pass an OCapN ' .. k .. ' (Syrup has it, OCapN passables do not)'
  end

  return K
end
