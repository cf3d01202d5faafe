-- A vat whose state lives in baggage, for restart specs.
local ocap = require 'ocap'
local E, makeDefaultExo = ocap.E, ocap.makeDefaultExo

local M = {}

function M.buildRootObject(vatPowers, parameters, baggage)
  local log = vatPowers.logger
  if baggage:has('poison') then error('poisoned') end
  if not baggage:has('count') then baggage:init('count', parameters.start or 0) end
  log:log('buildRootObject', baggage:get('count'))
  local held -- luacheck: ignore 231 (kept only so that the heap holds it)
  return makeDefaultExo('counter', {
    bootstrap = function(_, vats)
      log:log('bootstrap called')
      if vats.other then baggage:init('other', vats.other) end
      return 'bootstrapped'
    end,
    increment = function(_, by)
      local n = baggage:get('count') + (by or 1)
      baggage:set('count', n)
      return n
    end,
    get = function() return baggage:get('count') end,
    callOther = function(_, method, ...)
      return E(baggage:get('other'))[method](...):await()
    end,
    makeEphemeral = function()
      return makeDefaultExo('ephemeral', { hi = function() return 'hi' end })
    end,
    poison = function() baggage:init('poison', true) end,
    storeThing = function(_, k, v)
      local s
      if baggage:has('things') then
        s = baggage:get('things')
      else
        s = ocap.makeScalarMapStore('things')
        baggage:init('things', s)
      end
      s:init(k, v)
      return s:getSize()
    end,
    getThing = function(_, k) return baggage:get('things'):get(k) end,
    thingKeys = function()
      local out = {}
      for k in baggage:get('things'):keys() do out[#out + 1] = k end
      return out
    end,
    baggageOp = function(_, op, ...) return baggage[op](baggage, ...) end,
    -- Keeps v in the heap (durable state refuses promises).
    hold = function(_, v) held = v end,
    baggageKeys = function()
      local out = {}
      for k in baggage:keys() do out[#out + 1] = k end
      return out
    end,
    crash = function()
      baggage:set('count', baggage:get('count') + 1)
      error('crashing now')
    end,
  })
end

return M
