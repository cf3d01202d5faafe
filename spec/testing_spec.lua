-- `ocap test` and ocap.testing's busted reports (issue #10, item 13): a
-- project outside this repository runs its specs with one command, even
-- with the LUA_PATH and LUA_CPATH of `luarocks path`, and a failing spec
-- is reported at its own line with the log its kernels captured.
local testing = require 'ocap.testing'

local BIN = os.getenv('OCAP_BIN') or 'build/ocap'
local SOURCE = os.getenv('OCAP_SOURCE_DIR') or '.'

local function writeFile(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
end

local function copyFile(from, to)
  local f = assert(io.open(from))
  writeFile(to, f:read('a'))
  f:close()
end

-- A project in a fresh directory outside the repository: the counter vat
-- and one spec file whose lines the assertions below refer to.
local SPEC = [[
local testing = require 'ocap.testing'

describe('counter', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('counts', function()
    local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'vats/counter.lua' } } }):await()
    assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
  end)
%s
end)
]]

local FAILING = [[

  it('asks a service it was not given', function()
    local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'vats/counter.lua' } } }):await()
    kernel:queueMessage(r.rootKref, 'increment', {}):await()
    kernel:queueMessage(r.rootKref, 'askService', { 'x' }):await()
  end)
]]

local function project(failing)
  local dir = testing.tempDir()
  assert(os.execute(('mkdir -p %q/spec %q/vats'):format(dir, dir)))
  copyFile(SOURCE .. '/vats/examples/counter.lua', dir .. '/vats/counter.lua')
  writeFile(dir .. '/spec/counter_spec.lua', SPEC:format(failing and FAILING or ''))
  return dir
end

-- Runs `ocap test` in dir with the paths `luarocks path` gives a user
-- (nothing of the system's Lua directories); returns output, exit code.
local function ocapTest(dir, args)
  local bin = BIN:sub(1, 1) == '/' and BIN or (SOURCE .. '/' .. BIN)
  local p = assert(io.popen(('cd %q && LUA_PATH=%q LUA_CPATH=%q %q test %s 2>&1'):format(
    dir, dir .. '/rocks/?.lua', dir .. '/rocks/?.so', bin, args or '')))
  local out = p:read('a')
  local _, _, code = p:close()
  return out, code
end

describe('ocap test', function()
  it('runs the specs of a project outside the repository', function()
    local out, code = ocapTest(project(false))
    assert.equal(0, code, out)
    assert.matches('1 success / 0 failures / 0 errors', out, 1, true)
  end)

  it('passes its arguments to busted', function()
    local out, code = ocapTest(project(false), '-o TAP --filter=counts')
    assert.equal(0, code, out)
    assert.matches('ok 1 - counter counts', out, 1, true)
    assert.matches('1..1', out, 1, true)
  end)

  it('has its own --help, and busted names itself ocap test', function()
    local dir = project(false)
    local out, code = ocapTest(dir, '--help')
    assert.equal(0, code, out)
    assert.matches('^usage: ocap test %[BUSTED%-OPTIONS%.%.%.%] %[SPECS%.%.%.%]\n', out)
    out, code = ocapTest(dir, '--no-such-option')
    assert.equal(2, code, out)
    assert.equal("ocap test: unknown/bad flag: --no-such-option (see 'ocap test --help')\n", out)
  end)

  it("reports a failing spec at the spec's own line, with its kernel's log", function()
    local out, code = ocapTest(project(true))
    assert.equal(1, code, out)
    assert.matches('\nspec/counter_spec.lua:16: Error: key "myService" not found in baggage\n', out, 1, true)
    assert.not_matches('promise.lua', out, 1, true)
    assert.matches('ocap.testing: log of a kernel of this test (2 entries):\n'
      .. '  [log] v1 [counter] now 1\n'
      .. '  [warn] v1 [liveslots] Alleged: root: "askService" failed: vats/counter.lua:30: '
      .. 'key "myService" not found in baggage', out, 1, true)
  end)
end)
