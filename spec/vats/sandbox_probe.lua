-- A vat that reports the sandbox it was given: the names and types in its
-- globals and standard library tables, what each library function returns
-- for a sample call, what strings do through their metatable, and a
-- failure inside a library function, whose traceback names it.
local ocap = require 'ocap'

local M = {}

-- One sample call per library function, keyed 'library.name' ('name' for a
-- global): the spec runs the same calls on its own Lua and compares. Each
-- returns a string, so that any value crosses the kernel alike.
M.calls = {
  ['assert'] = function() return tostring(select(2, assert(1, 'two'))) end,
  ['error'] = function() return tostring(select(2, pcall(error, 'e', 0))) end,
  ['getmetatable'] = function() return tostring(getmetatable(setmetatable({}, { __metatable = 'm' }))) end,
  ['ipairs'] = function()
    local s = ''
    for i, v in ipairs({ 'a', 'b' }) do s = s .. i .. v end
    return s
  end,
  ['next'] = function() return tostring(next({ 'x' })) end,
  ['pairs'] = function()
    local s = ''
    for k, v in pairs({ 'p' }) do s = s .. k .. v end
    return s
  end,
  ['pcall'] = function() return tostring(pcall(function() return 1 end)) end,
  ['rawequal'] = function() return tostring(rawequal('a', 'a')) end,
  ['rawget'] = function() return tostring(rawget({ 5 }, 1)) end,
  ['rawlen'] = function() return tostring(rawlen({ 1, 2 })) end,
  ['rawset'] = function() return tostring(rawset({}, 'k', 'v').k) end,
  ['select'] = function() return tostring(select('#', 1, 2, 3)) end,
  ['setmetatable'] = function() return tostring(getmetatable(setmetatable({}, { __metatable = 's' }))) end,
  ['tonumber'] = function() return tostring(tonumber('ff', 16)) end,
  ['tostring'] = function() return tostring(12.5) end,
  ['type'] = function() return type(1) end,
  ['xpcall'] = function() return tostring(select(2, xpcall(error, function(e) return e .. '!' end, 'x', 0))) end,
  ['_VERSION'] = function() return _VERSION end,
  ['string.byte'] = function() return tostring(string.byte('A')) end,
  ['string.char'] = function() return string.char(72, 105) end,
  ['string.find'] = function() return tostring(string.find('abc', 'b')) end,
  ['string.format'] = function() return string.format('%5.1f|%q', 3.14159, 'a\n') end,
  ['string.gmatch'] = function()
    local s = ''
    for w in string.gmatch('one two', '%a+') do s = s .. w .. ';' end
    return s
  end,
  ['string.gsub'] = function() return (string.gsub('hello', 'l', 'L')) end,
  ['string.len'] = function() return tostring(string.len('abc')) end,
  ['string.lower'] = function() return string.lower('ABC') end,
  ['string.match'] = function() return string.match('key=val', '(%w+)=') end,
  ['string.pack'] = function() return string.pack('>i2', 258) end,
  ['string.packsize'] = function() return tostring(string.packsize('i4i8')) end,
  ['string.rep'] = function() return string.rep('ab', 3, '-') end,
  ['string.reverse'] = function() return string.reverse('abc') end,
  ['string.sub'] = function() return string.sub('abcdef', 2, 4) end,
  ['string.unpack'] = function() return tostring(string.unpack('>i2', '\1\2')) end,
  ['string.upper'] = function() return string.upper('abc') end,
  ['table.concat'] = function() return table.concat({ 1, 2, 3 }, ',') end,
  ['table.insert'] = function()
    local t = { 'a', 'c' }
    table.insert(t, 2, 'b')
    return table.concat(t)
  end,
  ['table.move'] = function() return table.concat(table.move({ 1, 2, 3 }, 1, 3, 2), ',') end,
  ['table.pack'] = function() return tostring(table.pack(1, nil, 3).n) end,
  ['table.remove'] = function()
    local t = { 'a', 'b', 'c' }
    return table.remove(t, 1) .. table.concat(t)
  end,
  ['table.sort'] = function()
    local t = { 3, 1, 2 }
    table.sort(t, function(a, b) return a > b end)
    return table.concat(t)
  end,
  ['table.unpack'] = function() return table.concat({ table.unpack({ 1, 2, 3 }, 2) }) end,
  ['utf8.char'] = function() return utf8.char(72, 228, 8364) end,
  ['utf8.charpattern'] = function() return utf8.charpattern end,
  ['utf8.codepoint'] = function() return table.concat({ utf8.codepoint('häx', 1, -1) }, ',') end,
  ['utf8.codes'] = function()
    local s = ''
    for p, c in utf8.codes('aé') do s = s .. p .. ':' .. c .. ';' end
    return s
  end,
  ['utf8.len'] = function() return tostring(utf8.len('häx')) end,
  ['utf8.offset'] = function() return tostring(utf8.offset('häx', 3)) end,
  ['coroutine.close'] = function() return tostring(coroutine.close(coroutine.create(print or type))) end,
  ['coroutine.create'] = function() return type(coroutine.create(type)) end,
  ['coroutine.isyieldable'] = function()
    return coroutine.wrap(function() return tostring(coroutine.isyieldable()) end)()
  end,
  ['coroutine.resume'] = function() return tostring(select(2, coroutine.resume(coroutine.create(type), 1))) end,
  ['coroutine.running'] = function()
    return coroutine.wrap(function() return tostring(select(2, coroutine.running())) end)()
  end,
  ['coroutine.status'] = function() return coroutine.status(coroutine.create(type)) end,
  ['coroutine.wrap'] = function() return coroutine.wrap(function(x) return x .. '!' end)('w') end,
  ['coroutine.yield'] = function()
    return tostring(select(2, coroutine.resume(coroutine.create(function() coroutine.yield('y') end))))
  end,
}

-- math: every function's value at a sample point, and its constants.
local mathArgs = {
  abs = { -2 }, acos = { 0.5 }, asin = { 0.5 }, atan = { 1, 2 }, ceil = { 1.2 }, cos = { 1 }, deg = { 1 },
  exp = { 1 }, floor = { -1.5 }, fmod = { 7, 3 }, log = { 8, 2 }, max = { 1, 3, 2 }, min = { 2, 1, 3 },
  modf = { 3.25 }, rad = { 90 }, sin = { 1 }, sqrt = { 2 }, tan = { 1 }, tointeger = { 3.0 },
  type = { 1.5 }, ult = { 1, -1 },
  -- Lua 5.3's, which this Lua keeps (LUA_COMPAT_MATHLIB).
  atan2 = { 1, 2 }, cosh = { 1 }, frexp = { 8 }, ldexp = { 1, 3 }, log10 = { 100 }, pow = { 2, 10 },
  sinh = { 1 }, tanh = { 1 },
}
for name, args in pairs(mathArgs) do
  M.calls['math.' .. name] = function()
    if math[name] == nil then return 'absent' end
    local r = table.pack(math[name](table.unpack(args)))
    for i = 1, r.n do r[i] = type(r[i]) == 'number' and string.format('%.14g', r[i]) or tostring(r[i]) end
    return table.concat(r, ',')
  end
end
for _, name in ipairs({ 'pi', 'huge', 'maxinteger', 'mininteger' }) do
  M.calls['math.' .. name] = function() return string.format('%.17g', math[name]) end
end

-- Strings through their metatable: methods and arithmetic coercions.
M.methods = {
  upper = function() return ('abc'):upper() end,
  format = function() return ('%d-%s'):format(4, 'x') end,
  len = function() return tostring(('abcd'):len()) end,
  find = function() return tostring(('abc'):find('c')) end,
  rep = function() return ('x'):rep(3) end,
  add = function() return tostring('10' + 1) end,
  sub = function() return tostring('10' - 1) end,
  mul = function() return tostring('3' * '4') end,
  div = function() return tostring('1' / 2) end,
  mod = function() return tostring('7' % 4) end,
  pow = function() return tostring('2' ^ 3) end,
  unm = function() return tostring(-'5') end,
  idiv = function() return tostring('7' // 2) end,
  lock = function() return tostring(getmetatable('')) end,
}

-- 'name=type' for every key of t, sorted.
local function inventory(t)
  local out = {}
  for k, v in pairs(t) do out[#out + 1] = tostring(k) .. '=' .. type(v) end
  table.sort(out)
  return out
end

local LIBS = { 'string', 'table', 'math', 'utf8', 'coroutine' }

function M.buildRootObject()
  -- The globals as vat code finds them when its module runs.
  local globals = inventory(_ENV)
  local function run(fs)
    local out = {}
    for name, f in pairs(fs) do
      local ok, r = pcall(f)
      out[name] = ok and r or ('error: ' .. tostring(r))
    end
    return out
  end
  return ocap.makeDefaultExo('sandboxProbe', {
    globals = function() return globals end,
    library = function(_, name) return inventory(_ENV[name]) end,
    libraries = function() return LIBS end,
    calls = function() return run(M.calls) end,
    methods = function() return run(M.methods) end,
    -- Fails inside the library function named: the kernel logs the
    -- traceback, which names it as the vat's tables do.
    fail = function(_, which)
      if which == 'string.rep' then return string.rep() end
      if which == 'math.floor' then return math.floor('x') end
      if which == 'coroutine.status' then return coroutine.status() end
      if which == 'select' then return select('x') end
      return ('x'):rep()
    end,
  })
end

return M
