-- A method that fails rejects its caller with the same value on every
-- path (issue #9 item 12, issue #10 item 12): a vat calling its own exo,
-- a vat calling another vat's, the host calling its own exo, the host
-- calling a vat's; the position goes to the log, not into the value.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local throwers = require 'vats.throwers'

local REJECTER = 'spec/vats/rejecter.lua'

local function err(message, name, code)
  name = name or 'Error'
  return { kind = 'error', name = name, message = message, code = code or ocap.null,
    tostring = name .. ': ' .. message }
end

-- What every path must give, kind by kind.
local EXPECTED = {
  stringError = err('boom'),
  stringNoPosition = err('boom without position'),
  multiline = err('first line\nsecond line: 12: not a position'),
  errorObject = err('bad thing'),
  typedError = err('out of range', 'RangeError'),
  kernelError = err('[KERNEL:OBJECT_DELETED] gone', 'Error', 'OBJECT_DELETED'),
  -- A code that does not follow from the message cannot cross the kernel.
  customCode = err('coded'),
  plainData = { kind = 'table', value = { code = 7, why = 'data' } },
  number = { kind = 'number', value = 42 },
  boolean = { kind = 'boolean', value = false },
  notPassable = err('not passable'),
  missingMethod = err('Alleged: thrower has no method "noSuchMethod"', 'TypeError'),
  guard = err('In "takesString" method of (Guarded): arg 0: must be a string, got number 42'),
  nested = err('deep boom'),
}

-- Through the kernel to an object of the host, the same value wrapped as
-- DELIVERY_FAILED (services.md); a kernel error passes unchanged.
local function delivered(expected)
  if expected.kind ~= 'error' then
    local body = ocap.marshal.serialize(expected.value).body
    return err('[KERNEL:DELIVERY_FAILED] ' .. body, 'Error', 'DELIVERY_FAILED')
  end
  if expected.code ~= ocap.null then return expected end
  return err('[KERNEL:DELIVERY_FAILED] ' .. expected.message, expected.name, 'DELIVERY_FAILED')
end

describe('a failing method', function()
  local kernel, a, peerThrower, peerGuarded, hostThrower, hostGuarded, send
  setup(function()
    kernel = testing.makeKernel()
    local function launch()
      return kernel:launchSubcluster({ bootstrap = 'r', vats = { r = { sourceSpec = REJECTER } } }):await().rootKref
    end
    a = launch()
    local b = launch()
    peerThrower = kernel:queueMessage(b, 'thrower', {}):await()
    peerGuarded = kernel:queueMessage(b, 'guarded', {}):await()
    hostThrower, hostGuarded, send = throwers.make()
  end)
  teardown(function() kernel:stop() end)

  it('covers every kind the throwers know', function()
    for _, kind in ipairs(kernel:queueMessage(a, 'kinds', {}):await()) do
      assert.is_truthy(EXPECTED[kind], 'no expectation for ' .. kind)
    end
  end)

  for _, kind in ipairs(throwers.KINDS) do
    describe('(' .. kind .. ')', function()
      it('rejects a vat calling its own exo and another vat\'s alike', function()
        assert.same(EXPECTED[kind], kernel:queueMessage(a, 'viaLocal', { kind }):await())
        assert.same(EXPECTED[kind], kernel:queueMessage(a, 'viaKernel', { peerThrower, peerGuarded, kind }):await())
      end)

      it('rejects the host calling its own exo and a vat\'s alike', function()
        assert.same(EXPECTED[kind], throwers.rejectionOf(send(hostThrower, hostGuarded, kind)))
        assert.same(EXPECTED[kind], throwers.rejectionOf(send(peerThrower, peerGuarded, kind)))
      end)

      it('rejects a vat calling an exo of the host with the same value, wrapped', function()
        assert.same(delivered(EXPECTED[kind]),
          kernel:queueMessage(a, 'viaKernel', { hostThrower, hostGuarded, kind }):await())
      end)
    end)
  end

  it('logs the position of a local failure, at warn, with the traceback at debug', function()
    local function logged(from)
      local warn, trace
      for i = from, #kernel:logs() do
        local e = kernel:logs()[i]
        if e.level == 'warn' and e.message:find('throwers[.lua]*:%d+: boom') then warn = true end
        if e.level == 'debug' and e.data and tostring(e.data[1].traceback):find('throwers[.lua]*:%d+:') then
          trace = true
        end
      end
      return warn, trace
    end
    local n = #kernel:logs() + 1
    kernel:queueMessage(a, 'viaLocal', { 'stringError' }):await()
    assert.same({ true, true }, { logged(n) })
    n = #kernel:logs() + 1
    throwers.rejectionOf(send(hostThrower, hostGuarded, 'stringError'))
    assert.same({ true, true }, { logged(n) })
  end)
end)
