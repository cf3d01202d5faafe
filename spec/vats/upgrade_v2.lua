-- Version 2 of upgrade_v1.lua: the same durable singleton and kind (the
-- kind with one more method), a root with new behaviour.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, parameters, baggage)
  local things = baggage:get('things')
  local clock = ocap.prepareExo(baggage, 'clock', {
    tick = function()
      local n = baggage:get('ticks') + 10
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
      withdraw = function(ctx, n)
        ctx.state.balance = ctx.state.balance - n
        return ctx.state.balance
      end,
    })
  return ocap.makeDefaultExo('root', {
    bootstrap = function()
      baggage:set('bootstraps', baggage:get('bootstraps') + 1)
      return 'bootstrapped again'
    end,
    version = function() return 2 end,
    parameters = function() return parameters end,
    bootstraps = function() return baggage:get('bootstraps') end,
    increment = function()
      local n = baggage:get('count') + 2
      baggage:set('count', n)
      return n
    end,
    get = function() return baggage:get('count') end,
    things = function()
      local out = {}
      for k, v in things:entries() do out[k] = v end
      return out
    end,
    clock = function() return clock end,
    open = function(_, owner, balance) return makeAccount(owner, balance) end,
  })
end

return M
