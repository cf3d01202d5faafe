-- Another vat's view of the bank (revocation specs): it reaches the admin
-- only through the kernel.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject()
  local held, heldResult
  return ocap.makeDefaultExo('bankClient', {
    -- A send this vat's runtime holds: E() on a promise of its own, which
    -- releaseDrain resolves to the admin, so the send leaves only then.
    holdDrain = function()
      held = ocap.makePromiseKit()
      heldResult = E(held.promise).drain()
    end,
    releaseDrain = function(_, admin)
      held.resolve(admin)
      return heldResult
    end,
    -- E(E(bank).getAdminLater()).drain(): sent before the admin is known.
    pipelineDrain = function(_, bank)
      return E(E(bank).getAdminLater()).drain()
    end,
    -- The same through a promise the bank exported inside data.
    drainExported = function(_, bank)
      local rec = E(bank).promiseForAdmin():await()
      return E(rec.admin).drain()
    end,
    drain = function(_, admin) return E(admin).drain() end,
  })
end

return M
