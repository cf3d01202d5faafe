-- A system vat that upgrades other vats through the kernel facet.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  return ocap.makeDefaultExo('admin', {
    bootstrap = function(_, _vats, services) baggage:init('facet', services.kernelFacet) end,
    upgrade = function(_, vatId, spec)
      return ocap.E(baggage:get('facet')).upgradeVat(vatId, spec):await()
    end,
  })
end

return M
