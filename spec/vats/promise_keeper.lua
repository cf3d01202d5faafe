-- Tries to keep promises in durable state, which must be refused.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  local Account = ocap.prepareExoClass(baggage, 'Account', nil,
    function(balance) return { balance = balance } end, {
      setBalance = function(ctx, v) ctx.state.balance = v end,
      balance = function(ctx) return ctx.state.balance end,
    })
  if not baggage:has('ledger') then
    baggage:init('ledger', ocap.makeScalarMapStore('ledger'))
    baggage:init('slot', 'empty')
    baggage:init('account', Account(1))
  end
  local store, account = baggage:get('ledger'), baggage:get('account')
  local attempts = {
    baggageInit = function(v) baggage:init('pending', v) end,
    baggageSet = function(v) baggage:set('slot', v) end,
    storeInit = function(v) store:init('pending', v) end,
    exoInit = function(v) Account(v) end,
    exoState = function(v) account:setBalance(v) end,
  }
  local echo
  return ocap.makeDefaultExo('keeper', {
    bootstrap = function(_, vats) echo = vats.echo end,
    -- Stores a promise (a local one, or the result of a send to the echo
    -- vat when `remote`) the way `how` says, wrapped as `shape` says.
    keep = function(_, how, shape, remote)
      local p = remote and ocap.E(echo).ping(1) or ocap.makePromiseKit().promise
      local v = p
      if shape == 'nested' then v = { list = { 1, 2, p } } end
      attempts[how](v)
      return 'stored'
    end,
    -- What durable state holds now.
    contents = function()
      return { hasPending = baggage:has('pending'), slot = baggage:get('slot'),
        ledgerSize = store:getSize(), balance = account:balance() }
    end,
  })
end

return M
