-- Integrity of the kernel's tables (issue #9, items 2, 8 and 10): values of
-- any length are read whole, and a damaged database gives a clean error.
local testing = require 'ocap.testing'
local ocap = require 'ocap'

local SCENARIO = 'spec/vats/scenario.lua'

describe('promise subscribers', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('notifies every one of 100 vats awaiting one promise', function()
    local roots = {}
    for i = 1, 100 do
      local r = kernel:launchSubcluster({ bootstrap = 'w', vats = {
        w = { sourceSpec = SCENARIO, parameters = { name = 'w' .. i } } } }):await()
      roots[i] = r.rootKref
    end
    local kit = ocap.makePromiseKit()
    for i = 1, 100 do
      assert.equal('noted', kernel:queueMessage(roots[i], 'takePromiseNoWait', { kit.promise }):await())
    end
    kit.resolve('go')
    kernel:run()
    local told = 0
    for i = 1, 100 do
      if kernel:queueMessage(roots[i], 'lastSeen', {}):await() == 'go' then told = told + 1 end
    end
    assert.equal(100, told)
  end)
end)

describe('decoding capdata', function()
  -- A fresh copy of the marshal module whose string.find counts the bytes
  -- each call scans, so work is counted rather than timed.
  local function countingMarshal()
    local scanned, realFind = 0, string.find
    local function find(s, pat, init, plain)
      local from = init or 1
      local a, b = realFind(s, pat, from, plain)
      if plain or pat:sub(1, 1) ~= '^' then scanned = scanned + ((b or #s) - from + 1) end
      return a, b
    end
    local saved = package.loaded['ocap.marshal']
    package.loaded['ocap.marshal'] = nil
    string.find = find -- luacheck: ignore 122 (the copy caches it when loaded)
    local ok, m = pcall(require, 'ocap.marshal')
    string.find = realFind -- luacheck: ignore 122
    package.loaded['ocap.marshal'] = saved
    assert(ok, m)
    return m, function() local n = scanned; scanned = 0; return n end
  end

  local function bareRemotables(n)
    local parts, slots = {}, {}
    for i = 0, n - 1 do
      parts[i + 1] = ('"$%d"'):format(i)
      slots[i + 1] = 'o-' .. (i + 1)
    end
    return { body = '#[' .. table.concat(parts, ',') .. ']', slots = slots }
  end

  it('scans a body a bounded number of times, however many slots it has', function()
    local marshal, takeScanned = countingMarshal()
    local m = marshal.makeMarshal(function() error('unused') end, function(slot) return { slot } end)
    local perByte = {}
    for _, n in ipairs({ 500, 4000 }) do
      local capdata = bareRemotables(n)
      takeScanned()
      assert.equal(n, #m.unserialize(capdata))
      perByte[#perByte + 1] = takeScanned() / #capdata.body
    end
    -- A search of the body per slot made this 4000 / 500 = 8 times larger.
    assert.is_true(perByte[2] < 2 * perByte[1], ('%.1f then %.1f'):format(perByte[1], perByte[2]))
    assert.is_true(perByte[2] < 10, ('%.1f bytes scanned per body byte'):format(perByte[2]))
  end)
end)
