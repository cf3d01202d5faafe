--- Patterns, interface guards and exo classes, after Endo's @endo/patterns
--- and @endo/exo.
--
-- Conventions:
-- 1. A pattern, method guard or interface guard is an empty table whose
--    data lives in a private weak table, so none can be forged or changed.
--    Plain data used where a pattern is expected is a pattern too: a
--    scalar means `M.eq(value)`, a table matches element by element (an
--    array) or field by field (a record), so `{ name = M.string() }` works.
-- 2. A matcher returns nil when the value matches, or a message and a flag
--    telling whether the failure lies below the value (in an element or a
--    field, the message then starts with its path) or in the value itself.
-- 3. Messages read `must be <what>, got <value>`; `<value>` is the Lua type
--    or pass style followed by a short rendering (`number 42`,
--    `string "hi"`, `record {a = 1}`, `nil`).
-- 4. Misuse when defining (a bad pattern, a method missing from its
--    interface) raises a string error at the caller. A guard violation when
--    a method is called raises an error value (`pass.makeError`) whose
--    message starts with `In "<method>" method of (<interface>): `, as in
--    Endo; argument positions count from 0, as in Endo.
-- 5. Lua has no `undefined` distinct from `nil`: a nil argument is an
--    argument that was passed (it counts in `select('#', ...)`), a missing
--    one is not. Trailing nils beyond a method's declared arguments are
--    ignored, so that wrappers may pass their parameters through.
local pass = require 'ocap.pass'
local exo = require 'ocap.exo'

local type = type
local next = next
local pairs = pairs
local error = error
local select = select
local tostring = tostring
local setmetatable = setmetatable
local math_type = math.type
local huge = math.huge
local format = string.format
local concat = table.concat
local sort = table.sort
local pack = table.pack
local unpack = table.unpack

local classify = pass.classify
local isRemotable = pass.isRemotable
local isPromise = pass.isPromise
local isError = pass.isError
local remotableIface = pass.remotableIface
local makeError = pass.makeError
local NULL = pass.null

local guards = {}

local function weakKeys()
  return setmetatable({}, { __mode = 'k' })
end

local patternData = weakKeys()   -- pattern -> { kind, expect, text, match, ... }
local methodGuardData = weakKeys() -- method guard -> { args, nargs, optional, nopt, rest, returns }
local interfaceData = weakKeys() -- interface guard -> { name, methods, defaultGuards }

-- Rendering values --------------------------------------------------------

local MAX_STRING = 60
local MAX_ITEMS = 6

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function quote(s)
  local cut = #s > MAX_STRING
  if cut then s = s:sub(1, MAX_STRING) end
  s = s:gsub('[%c"\\]', function(c) return ESCAPES[c] or format('\\%d', c:byte()) end)
  return '"' .. s .. (cut and '..."' or '"')
end

local function formatNumber(n)
  if math_type(n) == 'integer' then return format('%d', n) end
  if n ~= n then return 'NaN' end
  if n == huge then return 'Infinity' end
  if n == -huge then return '-Infinity' end
  local s = format('%.14g', n)
  if not s:find('[%.e]') then s = s .. '.0' end -- keep a float visible as one
  return s
end

local function isIdentifier(k)
  return type(k) == 'string' and k:match('^[%a_][%w_]*$') ~= nil
end

local function sortedKeys(keys)
  local list = {}
  if keys then
    for i = 1, #keys do list[i] = keys[i] end
  end
  sort(list)
  return list
end

local render

local function renderTable(v, depth)
  local style, a, c = classify(v)
  if style == 'null' then return 'null' end
  if style == 'remotable' then return '<' .. (remotableIface(v) or 'remotable') .. '>' end
  if style == 'promise' then return '<promise>' end
  if style == 'error' then return '<' .. tostring(v) .. '>' end
  if style == 'symbol' or style == 'byteArray' or style == 'bigint' or style == 'tagged' then
    return '<' .. tostring(v) .. '>'
  end
  if style == 'copyArray' then
    if a == 0 then return '{}' end
    if depth > 2 then return '{...}' end
    local parts = {}
    for i = 1, a < MAX_ITEMS and a or MAX_ITEMS do parts[i] = render(c[i], depth + 1) end
    if a > MAX_ITEMS then parts[#parts + 1] = '...' end
    return '{' .. concat(parts, ', ') .. '}'
  end
  if style == 'copyRecord' then
    if a == nil then return '{}' end
    if depth > 2 then return '{...}' end
    local keys = sortedKeys(a)
    local parts = {}
    for i = 1, #keys < MAX_ITEMS and #keys or MAX_ITEMS do
      local k = keys[i]
      local name = isIdentifier(k) and k or '[' .. quote(k) .. ']'
      parts[i] = name .. ' = ' .. render(c[k], depth + 1)
    end
    if #keys > MAX_ITEMS then parts[#parts + 1] = '...' end
    return '{' .. concat(parts, ', ') .. '}'
  end
  return '<' .. type(v) .. '>'
end

-- A short rendering of a value, in Lua syntax where it has one.
function render(v, depth)
  local tv = type(v)
  if tv == 'nil' then return 'nil' end
  if tv == 'string' then return quote(v) end
  if tv == 'number' then return formatNumber(v) end
  if tv == 'boolean' then return tostring(v) end
  if tv == 'table' or tv == 'userdata' then
    local d = patternData[v]
    if d then return d.text end
    return renderTable(v, depth or 1)
  end
  return '<' .. tv .. '>'
end

-- What a value is, for the `got ...` part of a message.
local function describe(v)
  local tv = type(v)
  if tv == 'nil' then return 'nil' end
  if tv == 'string' or tv == 'number' or tv == 'boolean' then return tv .. ' ' .. render(v) end
  if tv == 'table' or tv == 'userdata' then
    local style = classify(v)
    if style == 'null' then return 'null' end
    if style == 'copyArray' then return 'array ' .. render(v) end
    if style == 'copyRecord' then return 'record ' .. render(v) end
    if style == 'remotable' then return 'remotable ' .. quote(remotableIface(v) or 'Remotable') end
    if style == 'promise' then return 'promise' end
    if style == 'error' then return 'error ' .. quote(tostring(v)) end
    if style then return render(v) end
    return 'non-passable ' .. tv
  end
  return tv
end

-- Plain data --------------------------------------------------------------

-- Why `v` is not passable (deeply), or nil. `stack` holds the tables being
-- visited, so that shared subtrees pass and cycles do not.
local function passableError(v, stack)
  local tv = type(v)
  if tv == 'function' then return 'cannot pass function' end
  if tv == 'thread' then return 'cannot pass thread (coroutine)' end
  if tv ~= 'table' and tv ~= 'userdata' then return nil end
  local style, a, c = classify(v)
  if style == nil then return a end
  if style == 'tagged' then return passableError(a.payload, stack) end
  if style ~= 'copyArray' and style ~= 'copyRecord' then return nil end
  stack = stack or {}
  if stack[c] then return 'cannot pass cyclic table' end
  stack[c] = true
  local err
  if style == 'copyArray' then
    for i = 1, a do
      err = passableError(c[i], stack)
      if err then break end
    end
  else
    for _, x in next, c do
      err = passableError(x, stack)
      if err then break end
    end
  end
  stack[c] = nil
  return err
end

-- The shape of a value as data: `'array', length, contents`,
-- `'record', keys, contents`, or the value's style.
local function shape(v)
  local tv = type(v)
  if tv ~= 'table' and tv ~= 'userdata' then return tv end
  local style, a, c = classify(v)
  if style == 'copyArray' then return 'array', a, c end
  if style == 'copyRecord' then return 'record', a, c end
  if style == 'tagged' then return style, a end
  return style or 'non-passable'
end

-- Deep equality of plain data; anything else compares by identity. An
-- unmarked empty table equals an empty array.
local function equal(a, b)
  if a == b then return true end
  local ta = type(a)
  if ta == 'number' then return type(b) == 'number' and a ~= a and b ~= b end
  if (ta ~= 'table' and ta ~= 'userdata') or (type(b) ~= 'table' and type(b) ~= 'userdata') then
    return false
  end
  local sa, na, ca = shape(a)
  local sb, nb, cb = shape(b)
  if sa == 'tagged' then return sb == 'tagged' and na.tag == nb.tag and equal(na.payload, nb.payload) end
  if sa ~= 'array' and sa ~= 'record' then return false end
  if sb ~= 'array' and sb ~= 'record' then return false end
  local emptyA = (sa == 'array' and na == 0) or (sa == 'record' and na == nil)
  local emptyB = (sb == 'array' and nb == 0) or (sb == 'record' and nb == nil)
  if emptyA or emptyB then return emptyA and emptyB end
  if sa ~= sb then return false end
  if sa == 'array' then
    if na ~= nb then return false end
    for i = 1, na do
      if not equal(ca[i], cb[i]) then return false end
    end
    return true
  end
  if #na ~= #nb then return false end
  for i = 1, #na do
    local k = na[i]
    if cb[k] == nil or not equal(ca[k], cb[k]) then return false end
  end
  return true
end

-- Matching ------------------------------------------------------------------

local function prefix(path)
  if path == '' then return '' end
  return path .. ': '
end

local function fail(path, expect, v)
  return prefix(path) .. 'must be ' .. expect .. ', got ' .. describe(v), false
end

local function fieldPath(path, k)
  if isIdentifier(k) then return path .. '.' .. k end
  return path .. '[' .. quote(k) .. ']'
end

local match

-- What a pattern expects, as a noun phrase ("a string").
local function expectOf(p)
  local d = patternData[p]
  if d then return d.expect end
  local s, n = shape(p)
  if s == 'array' then return format('an array of length %d', n) end
  if s == 'record' then return 'a record' end
  return render(p)
end

local function arrayLike(v)
  local s, n, c = shape(v)
  if s == 'array' then return n, c end
  if s == 'record' and n == nil then return 0, c end -- `{}` is an empty array too
  return nil
end

local function recordLike(v, orEmptyArray)
  local s, keys, c = shape(v)
  if s == 'record' then return keys or {}, c end
  if orEmptyArray and s == 'array' and keys == 0 then return {}, c end
  return nil
end

local function matchArrayLiteral(pc, plen, v, path)
  local n, c = arrayLike(v)
  if n == nil or n ~= plen then return fail(path, format('an array of length %d', plen), v) end
  for i = 1, n do
    local msg = match(pc[i], c[i], path .. '[' .. i .. ']')
    if msg then return msg, true end
  end
  return nil
end

local function matchRecordLiteral(pc, pkeys, v, path)
  local keys, c = recordLike(v, pkeys == nil)
  if keys == nil then return fail(path, 'a record', v) end
  local expected = sortedKeys(pkeys)
  for i = 1, #expected do
    local k = expected[i]
    local msg = match(pc[k], c[k], fieldPath(path, k))
    if msg then return msg, true end
  end
  local extra = sortedKeys(keys)
  for i = 1, #extra do
    if pc[extra[i]] == nil then
      return prefix(path) .. 'unexpected field ' .. quote(extra[i]) .. ' in ' .. describe(v), true
    end
  end
  return nil
end

--- Matches `v` against pattern `p`; nil on success, else a message and
--- whether the failure lies below `v`.
function match(p, v, path)
  local d = patternData[p]
  if d then return d.match(d, v, path) end
  local tp = type(p)
  if tp == 'table' or tp == 'userdata' then
    local s, a, c = shape(p)
    if s == 'array' then return matchArrayLiteral(c, a, v, path) end
    if s == 'record' then return matchRecordLiteral(c, a, v, path) end
  end
  if equal(p, v) then return nil end
  return fail(path, render(p), v)
end

-- Raises unless `p` can serve as a pattern: a pattern, or passable data
-- whose tables may hold patterns.
local function assertPattern(p, where, level, stack)
  if patternData[p] then return p end
  local tp = type(p)
  if methodGuardData[p] or interfaceData[p] then
    error(where .. ': a guard is not a pattern', level + 1)
  end
  if tp == 'function' or tp == 'thread' then
    error(where .. ': a ' .. tp .. ' is not a pattern', level + 1)
  end
  if tp ~= 'table' and tp ~= 'userdata' then return p end
  local style, a, c = classify(p)
  if style == nil then error(where .. ': not a pattern (' .. a .. ')', level + 1) end
  if style == 'copyArray' or style == 'copyRecord' then
    stack = stack or {}
    if stack[c] then error(where .. ': a cyclic table is not a pattern', level + 1) end
    stack[c] = true
    for _, x in next, c do assertPattern(x, where, level + 1, stack) end
    stack[c] = nil
  end
  return p
end

-- Patterns ------------------------------------------------------------------

local function refuse()
  error('cannot modify a pattern or guard', 2)
end

local PATTERN_MT = {
  __name = 'ocap.pattern',
  __tostring = function(p) return patternData[p].text end,
  __newindex = refuse,
  __metatable = 'pattern',
}

local function makePattern(d)
  local p = setmetatable({}, PATTERN_MT)
  patternData[p] = d
  return p
end

-- A pattern testing one predicate of the value.
local function matchPredicate(d, v, path)
  if d.test(v) then return nil end
  return fail(path, d.expect, v)
end

local function predicate(text, expect, test)
  return makePattern({ text = text, expect = expect, test = test, match = matchPredicate })
end

local M = {}

local ANY = makePattern({
  text = 'M.any()',
  expect = 'passable',
  match = function(_, v, path)
    local err = passableError(v)
    if err == nil then return nil end
    return prefix(path) .. 'must be passable, got ' .. describe(v) .. ' (' .. err .. ')', false
  end,
})

--- Any passable value (nil included).
function M.any() return ANY end

local STRING = predicate('M.string()', 'a string', function(v) return type(v) == 'string' end)
local NUMBER = predicate('M.number()', 'a number', function(v) return type(v) == 'number' end)
local INTEGER = predicate('M.integer()', 'an integer', function(v) return math_type(v) == 'integer' end)
local NAT = predicate('M.nat()', 'a non-negative integer',
  function(v) return math_type(v) == 'integer' and v >= 0 end)
local BOOLEAN = predicate('M.boolean()', 'a boolean', function(v) return type(v) == 'boolean' end)
local NIL = predicate('M.nil()', 'nil', function(v) return v == nil end)
local NULLP = predicate('M.null()', 'null', function(v) return v == NULL end)
local PROMISE = predicate('M.promise()', 'a promise', isPromise)
local ERROR = predicate('M.error()', 'an error', isError)

--- A Lua string.
function M.string() return STRING end
--- A Lua number (integer or float, NaN and infinities included).
function M.number() return NUMBER end
--- A Lua integer (`math.type(v) == 'integer'`; `3.0` is not one).
function M.integer() return INTEGER end
--- A non-negative Lua integer.
function M.nat() return NAT end
function M.boolean() return BOOLEAN end
--- `nil` (JavaScript's `undefined`).
M['nil'] = function() return NIL end
M.undefined = M['nil']
--- `ocap.null`.
function M.null() return NULLP end
function M.promise() return PROMISE end
--- An error value (`ocap.makeError`).
function M.error() return ERROR end

--- A remotable (an exo or a presence). The name documents the expected
--- interface; as in Endo it is not checked.
---@param name? string
function M.remotable(name)
  if name ~= nil and type(name) ~= 'string' then error('M.remotable: name must be a string', 2) end
  local text = name and format('M.remotable(%s)', quote(name)) or 'M.remotable()'
  local expect = name and ('a remotable ' .. quote(name)) or 'a remotable'
  return predicate(text, expect, isRemotable)
end

local RECORD = makePattern({
  text = 'M.record()',
  expect = 'a record',
  match = function(_, v, path)
    if recordLike(v, false) == nil then return fail(path, 'a record', v) end
    local err = passableError(v)
    if err then return prefix(path) .. 'must be passable, got ' .. describe(v) .. ' (' .. err .. ')', false end
    return nil
  end,
})

local ARRAY = makePattern({
  text = 'M.array()',
  expect = 'an array',
  match = function(_, v, path)
    if arrayLike(v) == nil then return fail(path, 'an array', v) end
    local err = passableError(v)
    if err then return prefix(path) .. 'must be passable, got ' .. describe(v) .. ' (' .. err .. ')', false end
    return nil
  end,
})

--- Any record (a table with string keys; `{}` is one).
function M.record() return RECORD end
--- Any array (a sequence, `ocap.array(...)`, or `{}`).
function M.array() return ARRAY end

--- An array whose every element matches `p`.
---@param p any pattern (default M.any())
function M.arrayOf(p)
  if p == nil then p = ANY end
  assertPattern(p, 'M.arrayOf', 2)
  return makePattern({
    kind = 'arrayOf',
    text = 'M.arrayOf(' .. render(p) .. ')',
    expect = 'an array',
    elem = p,
    match = function(d, v, path)
      local n, c = arrayLike(v)
      if n == nil then return fail(path, 'an array', v) end
      for i = 1, n do
        local msg = match(d.elem, c[i], path .. '[' .. i .. ']')
        if msg then return msg, true end
      end
      return nil
    end,
  })
end

--- A record whose every key matches `keyP` and every value `valueP`.
---@param keyP any pattern (default M.string())
---@param valueP any pattern (default M.any())
function M.recordOf(keyP, valueP)
  if keyP == nil then keyP = STRING end
  if valueP == nil then valueP = ANY end
  assertPattern(keyP, 'M.recordOf', 2)
  assertPattern(valueP, 'M.recordOf', 2)
  return makePattern({
    text = 'M.recordOf(' .. render(keyP) .. ', ' .. render(valueP) .. ')',
    expect = 'a record',
    key = keyP,
    value = valueP,
    match = function(d, v, path)
      local keys, c = recordLike(v, true)
      if keys == nil then return fail(path, 'a record', v) end
      keys = sortedKeys(keys)
      for i = 1, #keys do
        local k = keys[i]
        local msg = match(d.key, k, prefix(path) .. 'key ' .. quote(k))
        if msg then return msg, true end
        msg = match(d.value, c[k], fieldPath(path, k))
        if msg then return msg, true end
      end
      return nil
    end,
  })
end

--- `nil` or a value matching `p`.
function M.opt(p)
  assertPattern(p, 'M.opt', 2)
  return makePattern({
    text = 'M.opt(' .. render(p) .. ')',
    expect = expectOf(p) .. ' or nil',
    inner = p,
    match = function(d, v, path)
      if v == nil then return nil end
      local msg, deep = match(d.inner, v, path)
      if msg == nil then return nil end
      if deep then return msg, true end
      return fail(path, d.expect, v)
    end,
  })
end

--- A value deeply equal to `v` (plain data compares by contents, anything
--- else by identity; patterns inside `v` are not interpreted).
function M.eq(v)
  local err = passableError(v)
  if err then error('M.eq: ' .. err, 2) end
  return makePattern({
    text = 'M.eq(' .. render(v) .. ')',
    expect = render(v),
    value = v,
    match = function(d, x, path)
      if equal(d.value, x) then return nil end
      return fail(path, d.expect, x)
    end,
  })
end

local function joinOr(list)
  local n = #list
  if n == 0 then return 'nothing' end
  if n == 1 then return list[1] end
  return concat(list, ', ', 1, n - 1) .. ' or ' .. list[n]
end

--- A value matching at least one of the patterns.
function M.anyOf(...)
  local n = select('#', ...)
  local alts, texts, expects = { ... }, {}, {}
  for i = 1, n do
    assertPattern(alts[i], 'M.anyOf', 2)
    texts[i] = render(alts[i])
    expects[i] = expectOf(alts[i])
  end
  return makePattern({
    text = 'M.anyOf(' .. concat(texts, ', ') .. ')',
    expect = joinOr(expects),
    alts = alts,
    n = n,
    match = function(d, v, path)
      for i = 1, d.n do
        if match(d.alts[i], v, path) == nil then return nil end
      end
      return fail(path, d.expect, v)
    end,
  })
end

--- A value matching every one of the patterns (the first failure is told).
function M.allOf(...)
  local n = select('#', ...)
  local parts, texts = { ... }, {}
  for i = 1, n do
    assertPattern(parts[i], 'M.allOf', 2)
    texts[i] = render(parts[i])
  end
  return makePattern({
    text = 'M.allOf(' .. concat(texts, ', ') .. ')',
    expect = concat(texts, ' and '),
    parts = parts,
    n = n,
    match = function(d, v, path)
      for i = 1, d.n do
        local msg, deep = match(d.parts[i], v, path)
        if msg then return msg, deep end
      end
      return nil
    end,
  })
end

--- A value that does not match `p`.
M['not'] = function(p)
  assertPattern(p, 'M.not', 2)
  return makePattern({
    text = 'M.not(' .. render(p) .. ')',
    expect = 'anything but ' .. expectOf(p),
    inner = p,
    match = function(d, v, path)
      if match(d.inner, v, path) ~= nil then return nil end
      return fail(path, d.expect, v)
    end,
  })
end

local function comparison(name, words, cmp)
  return function(bound)
    local tb = type(bound)
    if (tb ~= 'number' or bound ~= bound) and tb ~= 'string' then
      error(name .. ': bound must be a number or a string', 2)
    end
    return makePattern({
      text = name .. '(' .. render(bound) .. ')',
      expect = words .. ' ' .. render(bound),
      bound = bound,
      match = function(d, v, path)
        if type(v) == type(d.bound) and v == v and cmp(v, d.bound) then return nil end
        return fail(path, d.expect, v)
      end,
    })
  end
end

--- A number (or string) `>= n`; the value must be of the bound's type.
M.gte = comparison('M.gte', 'at least', function(a, b) return a >= b end)
--- A number (or string) `<= n`.
M.lte = comparison('M.lte', 'at most', function(a, b) return a <= b end)
--- A number (or string) `> n`.
M.gt = comparison('M.gt', 'greater than', function(a, b) return a > b end)
--- A number (or string) `< n`.
M.lt = comparison('M.lt', 'less than', function(a, b) return a < b end)

-- Method guards -------------------------------------------------------------

local MethodGuard = {}

local METHOD_GUARD_MT = {
  __name = 'ocap.methodGuard',
  __index = MethodGuard,
  __newindex = refuse,
  __tostring = function(g)
    local d = methodGuardData[g]
    local function list(ps, n)
      local t = {}
      for i = 1, n do t[i] = render(ps[i]) end
      return concat(t, ', ')
    end
    local s = 'M.call(' .. list(d.args, d.nargs) .. ')'
    if d.nopt > 0 then s = s .. ':optional(' .. list(d.optional, d.nopt) .. ')' end
    if d.hasRest then s = s .. ':rest(' .. render(d.rest) .. ')' end
    return s .. ':returns(' .. render(d.returns) .. ')'
  end,
  __metatable = 'methodGuard',
}

local function makeMethodGuard(d)
  local g = setmetatable({}, METHOD_GUARD_MT)
  methodGuardData[g] = d
  return g
end

local function copyGuard(g, where)
  local d = methodGuardData[g]
  if d == nil then error(where .. ': not a method guard (use guard:' .. where .. '(...))', 3) end
  return {
    args = d.args, nargs = d.nargs, optional = d.optional, nopt = d.nopt,
    rest = d.rest, hasRest = d.hasRest, returns = d.returns,
  }
end

local function patternList(where, ...)
  local n = select('#', ...)
  local list = { ... }
  for i = 1, n do assertPattern(list[i], where, 3) end
  return list, n
end

--- A method guard that also accepts these optional arguments (each nil or
--- matching its pattern) after the required ones.
function MethodGuard:optional(...)
  local d = copyGuard(self, 'optional')
  d.optional, d.nopt = patternList('optional', ...)
  return makeMethodGuard(d)
end

--- A method guard that accepts any number of further arguments; as in Endo,
--- `p` is matched against the array of those arguments (`M.any()`,
--- `M.arrayOf(p)`).
function MethodGuard:rest(p)
  local d = copyGuard(self, 'rest')
  assertPattern(p, 'rest', 2)
  d.rest, d.hasRest = p, true
  return makeMethodGuard(d)
end

--- A method guard whose (first) return value must match `p`.
function MethodGuard:returns(p)
  local d = copyGuard(self, 'returns')
  assertPattern(p, 'returns', 2)
  d.returns = p
  return makeMethodGuard(d)
end

--- A method guard whose required arguments match the given patterns. Its
--- return value must be passable unless `:returns` says otherwise.
function M.call(...)
  local args, n = patternList('M.call', ...)
  return makeMethodGuard({ args = args, nargs = n, optional = {}, nopt = 0, returns = ANY })
end
--- The same as `M.call` (methods here are synchronous; an asynchronous
--- method returns a promise, which `M.any()` accepts).
M.callWhen = M.call

local PASSABLE_GUARD = M.call():rest(ANY)

local function plural(n, word)
  if n == 1 then return '1 ' .. word end
  return format('%d %ss', n, word)
end

local function violation(label, msg)
  error(makeError(label .. ': ' .. msg), 0)
end

-- Checks an argument list (`args.n` counts them) against a method guard's
-- data, raising an error value that names the method and the argument.
local function checkArgs(label, d, args)
  local n = args.n
  local nargs, nopt = d.nargs, d.nopt
  for i = 1, nargs do
    if i > n then
      violation(label, format('arg %d: missing (expected at least %s, got %d)',
        i - 1, plural(nargs, 'argument'), n))
    end
    local msg = match(d.args[i], args[i], '')
    if msg then violation(label, format('arg %d: %s', i - 1, msg)) end
  end
  local declared = nargs + nopt
  for i = nargs + 1, n < declared and n or declared do
    local v = args[i]
    if v ~= nil then
      local msg = match(d.optional[i - nargs], v, '')
      if msg then violation(label, format('arg %d: %s', i - 1, msg)) end
    end
  end
  if not d.hasRest then
    for i = declared + 1, n do
      if args[i] ~= nil then
        violation(label, format('arg %d: unexpected (expected at most %s, got %d)',
          i - 1, plural(declared, 'argument'), n))
      end
    end
    return
  end
  local rd = patternData[d.rest]
  if rd and rd.kind == 'arrayOf' then
    -- M.arrayOf(p): tell which argument failed.
    for i = declared + 1, n do
      local msg = match(rd.elem, args[i], '')
      if msg then violation(label, format('arg %d: %s', i - 1, msg)) end
    end
    return
  end
  local rest = pass.array(unpack(args, declared + 1, n > declared and n or declared))
  local msg = match(d.rest, rest, '')
  if msg then violation(label, 'rest args: ' .. msg) end
end

local function checkResults(label, d, r)
  local msg = match(d.returns, r[1], '')
  if msg then violation(label, 'return value: ' .. msg) end
  return unpack(r, 1, r.n)
end

-- Interface guards ----------------------------------------------------------

local INTERFACE_MT = {
  __name = 'ocap.interfaceGuard',
  __newindex = refuse,
  __tostring = function(g) return 'M.interface(' .. quote(interfaceData[g].name) .. ')' end,
  __metatable = 'interfaceGuard',
}

--- An interface guard: the method guards of an exo's methods.
--- `opts.defaultGuards = 'passable'` (or Endo's older `opts.sloppy = true`)
--- lets methods without a guard through, checking only that their
--- arguments and result are passable; `'raw'` lets them through unchecked.
--- Otherwise a method without a guard is refused when the exo is defined.
---@param name string
---@param methodGuards table<string, table> method name -> M.call(...)
---@param opts? { defaultGuards?: 'passable'|'raw', sloppy?: boolean }
---@return table interfaceGuard
function M.interface(name, methodGuards, opts)
  if type(name) ~= 'string' then error('M.interface: name must be a string', 2) end
  if type(methodGuards) ~= 'table' then error('M.interface: methodGuards must be a table', 2) end
  local methods = {}
  for k, g in pairs(methodGuards) do
    if type(k) ~= 'string' then error('M.interface ' .. quote(name) .. ': method names must be strings', 2) end
    local d = methodGuardData[g]
    if d == nil then
      error(format('M.interface %s: guard of %s must be a method guard (M.call(...))', quote(name), quote(k)), 2)
    end
    methods[k] = d
  end
  local defaultGuards
  if opts ~= nil then
    if type(opts) ~= 'table' then error('M.interface: opts must be a table', 2) end
    defaultGuards = opts.defaultGuards
    if defaultGuards == nil and opts.sloppy then defaultGuards = 'passable' end
    if defaultGuards ~= nil and defaultGuards ~= 'passable' and defaultGuards ~= 'raw' then
      error('M.interface: unrecognized defaultGuards ' .. render(defaultGuards), 2)
    end
  end
  local g = setmetatable({}, INTERFACE_MT)
  interfaceData[g] = { name = name, methods = methods, defaultGuards = defaultGuards }
  return g
end

-- The read-only face of M.
local Mface = setmetatable({}, {
  __index = M,
  __newindex = function() error('cannot modify M', 2) end,
  __pairs = function() return next, M, nil end,
  __metatable = false,
})

-- Exos ----------------------------------------------------------------------

local function quotedList(names)
  sort(names)
  local t = {}
  for i = 1, #names do t[i] = quote(names[i]) end
  return '[' .. concat(t, ', ') .. ']'
end

-- The interface data of `ig` (nil when `ig` is nil), raising at the
-- caller's caller when `ig` is something else.
local function interfaceOf(ig, where)
  if ig == nil then return nil end
  local d = interfaceData[ig]
  if d == nil then error(where .. ': interface guard must be made by M.interface (or be nil)', 3) end
  return d
end

-- The guard of each method: a method guard's data, or false for none.
-- Raises at definition time, as Endo does, when the interface and the
-- methods disagree.
local function guardsFor(tag, idata, methods, where, level)
  if type(methods) ~= 'table' then error(where .. ': methods must be a table', level + 1) end
  local names = {}
  for k, f in pairs(methods) do
    if type(k) ~= 'string' or type(f) ~= 'function' then
      error(format('%s %s: method %s is not a function', where, quote(tag), tostring(k)), level + 1)
    end
    names[#names + 1] = k
  end
  local result = {}
  if idata == nil then
    for i = 1, #names do result[names[i]] = false end
    return result
  end
  local unimplemented = {}
  for k in pairs(idata.methods) do
    if methods[k] == nil then unimplemented[#unimplemented + 1] = k end
  end
  if #unimplemented > 0 then
    error(format('methods %s not implemented by %s', quotedList(unimplemented), quote(tag)), level + 1)
  end
  local unguarded = {}
  for i = 1, #names do
    local k = names[i]
    local d = idata.methods[k]
    if d then
      result[k] = d
    elseif idata.defaultGuards == 'passable' then
      result[k] = methodGuardData[PASSABLE_GUARD]
    elseif idata.defaultGuards == 'raw' then
      result[k] = false
    else
      unguarded[#unguarded + 1] = k
    end
  end
  if #unguarded > 0 then
    error(format('methods %s not guarded by %s', quotedList(unguarded), quote(idata.name)), level + 1)
  end
  return result
end

-- The shared metatable of the exos of one class or facet.
local function exoMetatable(alleged, impl)
  local iface = 'Alleged: ' .. alleged
  return {
    __name = 'ocap.exo',
    __index = impl,
    __newindex = function(_, k)
      error(format('cannot modify exo %q (field %s)', alleged, tostring(k)), 2)
    end,
    __tostring = function() return iface end,
    __metatable = 'exo',
  }
end

local function newExo(mt, alleged, impl)
  local obj = setmetatable({}, mt)
  pass.registerRemotable(obj, 'Alleged: ' .. alleged)
  exo.register(obj, impl)
  return obj
end

-- The method table of a class or facet: each method finds the receiver's
-- context in `contexts`, checks its guard, then calls the behavior as
-- `fn(context, ...)`, or `fn(self, ...)` when `selfful` is set.
local function makeImpl(tag, label, methods, guardOf, contexts, selfful)
  local impl = {}
  for name, fn in pairs(methods) do
    local d = guardOf[name]
    local methodLabel = format('In %s method of (%s)', quote(name), label)
    local notInstance = format('receiver is not a %s instance (call it as obj:%s(...))', quote(tag), name)
    if d then
      impl[name] = function(self, ...)
        local ctx = contexts[self]
        if ctx == nil then violation(methodLabel, notInstance) end
        local args = pack(...)
        checkArgs(methodLabel, d, args)
        return checkResults(methodLabel, d, pack(fn(selfful and self or ctx, unpack(args, 1, args.n))))
      end
    else
      impl[name] = function(self, ...)
        local ctx = contexts[self]
        if ctx == nil then violation(methodLabel, notInstance) end
        return fn(selfful and self or ctx, ...)
      end
    end
  end
  return impl
end

local function callInit(where, tag, init, ...)
  if init == nil then return {} end
  local state = init(...)
  if state == nil then return {} end
  if type(state) ~= 'table' then
    error(format('%s %s: init must return a table, got %s', where, quote(tag), type(state)), 3)
  end
  return state
end

local function checkOptions(where, options)
  if options ~= nil and type(options) ~= 'table' then error(where .. ': options must be a table', 3) end
  local finish = options and options.finish
  if finish ~= nil and type(finish) ~= 'function' then error(where .. ': options.finish must be a function', 3) end
  return finish
end

--- Defines an exo class. `makeInstance(...)` calls `init(...)` for the
--- instance's state and returns a new exo whose methods are called as
--- `methods[name](context, ...)` with `context = { state = state, self = exo }`,
--- after their arguments are checked against `interfaceGuard` (nil: no
--- checks). `options.finish(context)` runs once the instance exists.
---@param tag string the instances' alleged name
---@param interfaceGuard table|nil from M.interface
---@param init fun(...): table|nil
---@param methods table<string, function>
---@param options? { finish?: fun(context: table) }
---@return fun(...): table makeInstance
function guards.defineExoClass(tag, interfaceGuard, init, methods, options)
  local where = 'defineExoClass'
  if type(tag) ~= 'string' then error(where .. ': tag must be a string', 2) end
  local idata = interfaceOf(interfaceGuard, where)
  if init ~= nil and type(init) ~= 'function' then error(where .. ': init must be a function', 2) end
  local finish = checkOptions(where, options)
  local guardOf = guardsFor(tag, idata, methods, where, 2)
  local contexts = weakKeys()
  local impl = makeImpl(tag, idata and idata.name or tag, methods, guardOf, contexts, false)
  local mt = exoMetatable(tag, impl)
  return function(...)
    local state = callInit(where, tag, init, ...)
    local obj = newExo(mt, tag, impl)
    local context = { state = state, self = obj }
    contexts[obj] = context
    if finish then finish(context) end
    return obj
  end
end

--- Defines an exo class kit: `makeKit(...)` calls `init(...)` for the
--- state and returns a hardened table of facets (name -> exo, alleged name
--- `<tag> <facet>`) sharing it; each method is called as
--- `facets[f][name](context, ...)` with `context = { state = state, facets = kit }`.
--- `interfaceGuards[f]` guards facet `f`; nil `interfaceGuards`: no checks.
---@param tag string
---@param interfaceGuards table<string, table>|nil facet name -> M.interface(...)
---@param init fun(...): table|nil
---@param facets table<string, table<string, function>> facet name -> methods
---@param options? { finish?: fun(context: table) }
---@return fun(...): table makeKit
function guards.defineExoClassKit(tag, interfaceGuards, init, facets, options)
  local where = 'defineExoClassKit'
  if type(tag) ~= 'string' then error(where .. ': tag must be a string', 2) end
  if interfaceGuards ~= nil and type(interfaceGuards) ~= 'table' then
    error(where .. ': interfaceGuards must be a table of interface guards (or nil)', 2)
  end
  if init ~= nil and type(init) ~= 'function' then error(where .. ': init must be a function', 2) end
  if type(facets) ~= 'table' then error(where .. ': facets must be a table', 2) end
  local finish = checkOptions(where, options)
  if interfaceGuards ~= nil then
    for name in pairs(interfaceGuards) do
      if facets[name] == nil then
        error(format('%s %s: interface guard for unknown facet %s', where, quote(tag), quote(tostring(name))), 2)
      end
    end
  end
  local kinds = {}
  for name, methods in pairs(facets) do
    if type(name) ~= 'string' then error(where .. ': facet names must be strings', 2) end
    local ig
    if interfaceGuards ~= nil then
      ig = interfaceGuards[name]
      if ig == nil then
        error(format('%s %s: facet %s has no interface guard', where, quote(tag), quote(name)), 2)
      end
    end
    local idata = interfaceOf(ig, where)
    local alleged = tag .. ' ' .. name
    local guardOf = guardsFor(alleged, idata, methods, where, 2)
    local contexts = weakKeys()
    local impl = makeImpl(alleged, idata and idata.name or alleged, methods, guardOf, contexts, false)
    kinds[name] = { alleged = alleged, impl = impl, mt = exoMetatable(alleged, impl), contexts = contexts }
  end
  return function(...)
    local state = callInit(where, tag, init, ...)
    local kit = {}
    local context = { state = state, facets = kit }
    for name, k in pairs(kinds) do
      local obj = newExo(k.mt, k.alleged, k.impl)
      k.contexts[obj] = context
      kit[name] = obj
    end
    pass.harden(kit)
    if finish then finish(context) end
    return kit
  end
end

--- Makes one exo whose methods are called as `method(self, ...)` after
--- their arguments are checked against `interfaceGuard` (nil: no checks),
--- as Endo's `makeExo`.
---@param tag string the alleged name
---@param interfaceGuard table|nil
---@param methods table<string, function>
---@return table exo
function guards.makeExo(tag, interfaceGuard, methods)
  local where = 'makeExo'
  if type(tag) ~= 'string' then error(where .. ': tag must be a string', 2) end
  local idata = interfaceOf(interfaceGuard, where)
  local guardOf = guardsFor(tag, idata, methods, where, 2)
  local contexts = weakKeys()
  local impl = makeImpl(tag, idata and idata.name or tag, methods, guardOf, contexts, true)
  local obj = newExo(exoMetatable(tag, impl), tag, impl)
  contexts[obj] = true
  return obj
end

-- Checking ----------------------------------------------------------------

--- Whether `value` matches `pattern`.
---@param pattern any
---@param value any
---@return boolean ok
---@return string|nil message e.g. `must be a string, got number 42`
function guards.check(pattern, value)
  assertPattern(pattern, 'check', 2)
  local msg = match(pattern, value, '')
  if msg then return false, msg end
  return true
end

--- Raises an error value `<label>: <message>` unless `value` matches.
---@param value any
---@param pattern any
---@param label? string
function guards.mustMatch(value, pattern, label)
  assertPattern(pattern, 'mustMatch', 2)
  local msg = match(pattern, value, '')
  if msg then error(makeError(label and (label .. ': ' .. msg) or msg), 0) end
  return value
end

--- Whether `v` is a pattern made by M (plain data is a pattern too, but
--- not one of these).
function guards.isPattern(v)
  return patternData[v] ~= nil
end

guards.M = Mface

return guards
