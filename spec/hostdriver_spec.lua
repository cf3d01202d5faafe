-- The host's round trips in C (core/lkernel.c: K:queueFlat, the host's
-- endpoint taking a resolution, K:await). The last two run where the
-- host's promise core and C codec are the ones built into the kernel, as
-- in the ocap binary: under busted the modules load one by one and the
-- host goes the Lua way. So spec/host/roundtrips.lua runs both ways, in memory and
-- on LevelDB, and each must print what the host expects, the same lines
-- but the one that says which way the calls went.
local testing = require 'ocap.testing'

local BIN = os.getenv('OCAP_BIN') or 'build/ocap'
local SOURCE = os.getenv('OCAP_SOURCE_DIR') or '.'

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function absolute(path)
  if path:sub(1, 1) == '/' then return path end
  return os.getenv('PWD') .. '/' .. path
end

local EXPECTED = table.concat({
  'integer 41',
  'strings hi',
  'record nil a false 3',
  'long 2000',
  'counted c',
  'rejected false true',
  'rejected data false 7',
  'bad method false queueMessage: method must be a string',
  'bad args false queueMessage: args must be a sequence',
  'bad both false queueMessage: method must be a string',
  'bad kref false unknown kref "ko999999"',
  'no args nil',
  'presence label1',
  'kpid true',
  'echoed promise 5',
  'turns next 5',
  'sum 150',
  'c paths %s %s',
  'stopped true false true',
}, '\n') .. '\n'

-- Through the binary every C path runs; under plain Lua the sends still
-- go through K:queueFlat, and the resolutions the Lua way.
local C_PATHS = EXPECTED:format('true', 'true')
local LUA_PATHS = EXPECTED:format('true', 'false')

local function run(command)
  local f = assert(io.popen(command .. ' 2>&1'))
  local out = f:read('a')
  f:close()
  return out
end

local src = absolute(SOURCE)
local script = src .. '/spec/host/roundtrips.lua'

local function viaBinary(db)
  return run(('%s run %s %s %s'):format(q(absolute(BIN)), q(script), q(src), db and q(db) or ''))
    :gsub('ocap run: kernel state is kept[^\n]*\n?', '')
end

local function viaLua(db)
  return run(('LUA_PATH=%s LUA_CPATH=%s lua5.4 %s %s %s'):format(q(package.path), q(package.cpath), q(script),
    q(src), db and q(db) or ''))
end

describe('host round trips', function()
  it('take their C path in the ocap binary with the results of the Lua path', function()
    assert.equal(C_PATHS, viaBinary())
    assert.equal(LUA_PATHS, viaLua())
  end)

  it('write the cranks before a result reaches the host, on LevelDB', function()
    assert.equal(C_PATHS, viaBinary(testing.tempDir()))
    assert.equal(LUA_PATHS, viaLua(testing.tempDir()))
  end)
end)
