-- A bank with an admin facet, for the revocation specs. The admin is a
-- durable exo, so it keeps its kref across vat and kernel restarts.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  if not baggage:has('balance') then baggage:init('balance', 100) end
  local admin = ocap.prepareExo(baggage, 'admin', {
    drain = function()
      local n = baggage:get('balance')
      baggage:set('balance', 0)
      return n
    end,
  })
  -- Kits whose promises the bank resolves to the admin on releaseAdmin,
  -- so messages pipelined to them wait in between.
  local held = {}
  local function later()
    local kit = ocap.makePromiseKit()
    held[#held + 1] = kit
    return kit.promise
  end
  return ocap.makeDefaultExo('bank', {
    balance = function() return baggage:get('balance') end,
    getAdmin = function() return admin end,
    -- The result promise is decided by this vat and still unresolved.
    getAdminLater = function() return later() end,
    -- A promise this vat exports inside data, not as a result.
    promiseForAdmin = function() return { admin = later() } end,
    releaseAdmin = function()
      for i, kit in ipairs(held) do
        kit.resolve(admin)
        held[i] = nil
      end
    end,
    -- The owner's own calls through its direct Lua reference.
    drainDirectly = function() return admin:drain() end,
    drainEventually = function() return E(admin).drain():await() end,
  })
end

return M
