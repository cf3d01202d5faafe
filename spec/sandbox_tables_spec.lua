-- The standard library a vat is given (core/vat.c, "Building the sandbox"):
-- exactly these names, each behaving as the library's own function (or
-- its metered stand-in), string methods from the string metatable, and
-- tracebacks that name library functions as the vat's tables do.
local testing = require 'ocap.testing'

local PROBE = 'spec/vats/sandbox_probe.lua'

local GLOBALS = {
  '_VERSION=string', 'assert=function', 'coroutine=table', 'error=function', 'getmetatable=function',
  'ipairs=function', 'math=table', 'next=function', 'pairs=function', 'pcall=function', 'rawequal=function',
  'rawget=function', 'rawlen=function', 'rawset=function', 'require=function', 'select=function',
  'setmetatable=function', 'string=table', 'table=table', 'tonumber=function', 'tostring=function',
  'type=function', 'utf8=table', 'xpcall=function',
}

local LIBRARIES = {
  string = { 'byte', 'char', 'find', 'format', 'gmatch', 'gsub', 'len', 'lower', 'match', 'pack', 'packsize',
    'rep', 'reverse', 'sub', 'unpack', 'upper' },
  table = { 'concat', 'insert', 'move', 'pack', 'remove', 'sort', 'unpack' },
  math = { 'abs', 'acos', 'asin', 'atan', 'atan2', 'ceil', 'cos', 'cosh', 'deg', 'exp', 'floor', 'fmod', 'frexp',
    'huge=number', 'ldexp', 'log', 'log10', 'max', 'maxinteger=number', 'min', 'mininteger=number', 'modf',
    'pi=number', 'pow', 'rad', 'sin', 'sinh', 'sqrt', 'tan', 'tanh', 'tointeger', 'type', 'ult' },
  utf8 = { 'char', 'charpattern=string', 'codepoint', 'codes', 'len', 'offset' },
  coroutine = { 'close', 'create', 'isyieldable', 'resume', 'running', 'status', 'wrap', 'yield' },
}

-- 'name=type' as the probe lists them, sorted; a bare name is a function.
local function listing(names)
  local out = {}
  for i, n in ipairs(names) do out[i] = n:find('=') and n or n .. '=function' end
  table.sort(out)
  return out
end

describe('the standard library of a vat', function()
  local kernel, probe
  setup(function()
    kernel = testing.makeKernel()
    probe = kernel:launchSubcluster({ bootstrap = 'p', vats = { p = { sourceSpec = PROBE } } }):await().rootKref
  end)
  teardown(function() kernel:stop() end)

  local function ask(method, ...)
    return kernel:queueMessage(probe, method, { ... }):await()
  end

  it('holds exactly these globals', function()
    assert.same(GLOBALS, ask('globals'))
  end)

  for name, names in pairs(LIBRARIES) do
    it('holds exactly these names in ' .. name, function()
      assert.same(listing(names), ask('library', name))
    end)
  end

  it('lists every library it checks', function()
    local names = {}
    for name in pairs(LIBRARIES) do names[#names + 1] = name end
    table.sort(names)
    local got = ask('libraries')
    table.sort(got)
    assert.same(names, got)
  end)

  it('gives each name the function, or the value, of this Lua', function()
    local calls = dofile(PROBE).calls
    local expected = {}
    for name, f in pairs(calls) do
      local ok, r = pcall(f)
      expected[name] = ok and r or ('error: ' .. tostring(r))
    end
    assert.same(expected, ask('calls'))
  end)

  it('gives strings their methods and arithmetic through a locked metatable', function()
    assert.same({
      upper = 'ABC', format = '4-x', len = '4', find = '3', rep = 'xxx', add = '11', sub = '9', mul = '12',
      div = '0.5', mod = '3', pow = '8.0', unm = '-5', idiv = '3', lock = 'locked',
    }, ask('methods'))
  end)

  it('names library functions in tracebacks as the vat finds them', function()
    local function traceback(which)
      local from = #kernel:logs() + 1
      pcall(function() return ask('fail', which) end)
      for i = from, #kernel:logs() do
        local e = kernel:logs()[i]
        if e.level == 'debug' and e.data and e.data[1] and e.data[1].traceback then
          return tostring(e.data[1].traceback)
        end
      end
      return 'no traceback logged'
    end
    assert.matches("in function 'string.rep'", traceback('string.rep'), 1, true)
    assert.matches("in function 'math.floor'", traceback('math.floor'), 1, true)
    assert.matches("in function 'coroutine.status'", traceback('coroutine.status'), 1, true)
    assert.matches("in function 'select'", traceback('select'), 1, true)
    -- String methods share the vat's metered functions (vat.c).
    assert.matches("in function 'string.rep'", traceback('method'), 1, true)
  end)
end)
