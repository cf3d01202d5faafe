-- Version 1 of a vat the upgrade specs upgrade in place: state in
-- baggage, a store, a durable singleton and a durable kind, an ephemeral
-- export, and promises it decides.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, parameters, baggage)
  if not baggage:has('count') then baggage:init('count', parameters.start or 0) end
  if not baggage:has('things') then baggage:init('things', ocap.makeScalarMapStore('things')) end
  local things = baggage:get('things')
  local clock = ocap.prepareExo(baggage, 'clock', {
    tick = function()
      local n = (baggage:has('ticks') and baggage:get('ticks') or 0) + 1
      if baggage:has('ticks') then baggage:set('ticks', n) else baggage:init('ticks', n) end
      return n
    end,
  })
  local makeAccount = ocap.prepareExoClass(baggage, 'Account', nil,
    function(owner, balance) return { owner = owner, balance = balance } end, {
      deposit = function(ctx, n)
        ctx.state.balance = ctx.state.balance + n
        return ctx.state.balance
      end,
      balance = function(ctx) return ctx.state.balance end,
    })
  local waiting = {}
  return ocap.makeDefaultExo('root', {
    bootstrap = function(_, vats)
      baggage:init('bootstraps', 1)
      if vats.peer then baggage:init('peer', vats.peer) end
      return 'bootstrapped'
    end,
    version = function() return 1 end,
    parameters = function() return parameters end,
    increment = function()
      local n = baggage:get('count') + 1
      baggage:set('count', n)
      return n
    end,
    get = function() return baggage:get('count') end,
    put = function(_, k, v) things:init(k, v) end,
    things = function()
      local out = {}
      for k, v in things:entries() do out[k] = v end
      return out
    end,
    clock = function() return clock end,
    open = function(_, owner, balance) return makeAccount(owner, balance) end,
    ephemeral = function() return ocap.makeDefaultExo('temp', { hi = function() return 'hi' end }) end,
    -- A result this incarnation decides and never settles by itself.
    wait = function()
      local kit = ocap.makePromiseKit()
      waiting[#waiting + 1] = kit
      return kit.promise
    end,
    -- Resolves once an interval timer (VatConfig.globals) has ticked n times.
    beat = function(_, n)
      local kit, count = ocap.makePromiseKit(), 0
      setInterval(function() -- luacheck: ignore 113 (an endowment)
        count = count + 1
        if count == n then kit.resolve(count) end
      end, 1)
      return kit.promise
    end,
    release = function(_, v)
      for _, kit in ipairs(waiting) do kit.resolve(v) end
      local n = #waiting
      waiting = {}
      return n
    end,
  })
end

return M
