-- A vat whose exos fail in every way (spec/vats/throwers.lua): it reports
-- the rejections it sees calling its own exos and a peer's through the
-- kernel.
local ocap = require 'ocap'
local throwers = require 'throwers'

local M = {}

function M.buildRootObject()
  local thrower, guarded, send = throwers.make()
  return ocap.makeDefaultExo('rejecter', {
    thrower = function() return thrower end,
    guarded = function() return guarded end,
    kinds = function() return throwers.KINDS end,
    -- The rejection of kind, called on this vat's own exo with E().
    viaLocal = function(_, kind) return throwers.rejectionOf(send(thrower, guarded, kind)) end,
    -- The rejection of kind, called on a peer's exo through the kernel.
    viaKernel = function(_, peerThrower, peerGuarded, kind)
      return throwers.rejectionOf(send(peerThrower, peerGuarded, kind))
    end,
  })
end

return M
