-- An account in a ledger: balance and applied transfers live in baggage.
-- A transfer withdraws and sends the deposit in the same crank, so it is
-- atomic however the kernel process dies.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, parameters, baggage)
  if not baggage:has('balance') then
    baggage:init('balance', parameters.balance or 0)
    baggage:init('attempted', ocap.makeScalarMapStore('attempted'))
    baggage:init('withdrawn', ocap.makeScalarMapStore('withdrawn'))
    baggage:init('deposited', ocap.makeScalarMapStore('deposited'))
    baggage:init('duplicates', 0)
    baggage:init('badReceipts', 0)
  end
  local attempted = baggage:get('attempted')
  local withdrawn, deposited = baggage:get('withdrawn'), baggage:get('deposited')
  return ocap.makeDefaultExo('account', {
    bootstrap = function(_, vats)
      local names = {}
      for name in pairs(vats) do names[#names + 1] = name end
      table.sort(names)
      return names
    end,
    transfer = function(_, id, to, amount)
      -- A host that died before it saw the answer asks again: answer again.
      if attempted:has(id) then return 'repeated' end
      local balance = baggage:get('balance')
      attempted:init(id, true)
      if balance < amount then return 'insufficient' end
      baggage:set('balance', balance - amount)
      withdrawn:init(id, amount)
      -- A receipt nobody keeps: garbage for the kernel to collect while
      -- the process is killed (spec/crash_spec.lua).
      local receipt = ocap.makeDefaultExo('receipt', { id = function() return id end })
      E.sendOnly(to).deposit(id, amount, receipt)
      return 'ok'
    end,
    deposit = function(_, id, amount, receipt)
      if deposited:has(id) then
        baggage:set('duplicates', baggage:get('duplicates') + 1)
        return
      end
      deposited:init(id, amount)
      baggage:set('balance', baggage:get('balance') + amount)
      -- The receipt is alive until this asks it: one freed early answers
      -- with OBJECT_DELETED, and is counted.
      if receipt then
        E(receipt).id():next(function(got)
          if got ~= id then baggage:set('badReceipts', baggage:get('badReceipts') + 1) end
        end, function()
          baggage:set('badReceipts', baggage:get('badReceipts') + 1)
        end)
      end
    end,
    attempted = function(_, id) return attempted:has(id) end,
    report = function()
      local w, d = {}, {}
      for id in withdrawn:keys() do w[#w + 1] = id end
      for id in deposited:keys() do d[#d + 1] = id end
      return { balance = baggage:get('balance'), withdrawn = w, deposited = d,
        duplicates = baggage:get('duplicates'), badReceipts = baggage:get('badReceipts') }
    end,
  })
end

return M
