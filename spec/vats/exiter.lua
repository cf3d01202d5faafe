-- A vat that sends a message and exits in one crank, so that the crank
-- of its exit can be made to fail (hostcalls_spec).
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(vatPowers)
  local held
  return ocap.makeDefaultExo('exiter', {
    bootstrap = function() return 'ready' end,
    hold = function(_, value) held = value end,
    sendThenExit = function()
      -- A send the kernel cannot take (it fails to allocate the new
      -- object's kref) fails the crank at its end, whatever the vat does
      -- meanwhile.
      pcall(function() return ocap.E(held).ping(ocap.makeDefaultExo('gift', {})) end)
      vatPowers.exitVat('bye')
      return 'sent'
    end,
  })
end

return M
