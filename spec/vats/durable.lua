-- Durable exos that survive restarts: a singleton and a class.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  if not baggage:has('ticks') then baggage:init('ticks', 0) end
  local clock = ocap.prepareExo(baggage, 'clock', {
    tick = function()
      local n = baggage:get('ticks') + 1
      baggage:set('ticks', n)
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
      owner = function(ctx) return ctx.state.owner end,
    })
  return ocap.makeDefaultExo('bank', {
    clock = function() return clock end,
    open = function(_, owner, balance) return makeAccount(owner, balance) end,
    ephemeral = function() return ocap.makeDefaultExo('temp', { hi = function() return 'hi' end }) end,
  })
end

return M
