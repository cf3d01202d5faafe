-- Another vat's view of the bank (revocation specs): it reaches the admin
-- only through the kernel.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject()
  return ocap.makeDefaultExo('bankClient', {
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
