-- Alice greets Bob at bootstrap, reports what he answered, and hands out
-- her peers.
local ocap = require 'ocap'
local E, makeDefaultExo = ocap.E, ocap.makeDefaultExo

local M = {}

function M.buildRootObject(vatPowers, parameters)
  local log = vatPowers.logger:subLogger { tags = { 'alice' } }
  local name = parameters.name or 'Alice'
  local peers = {}
  return makeDefaultExo('alice', {
    bootstrap = function(_, vats)
      peers = vats
      local reply = E(vats.bob).hello(name):await()
      log:log(('%s heard: %s'):format(name, reply))
      return reply
    end,
    -- Hands out the root of another vat of the subcluster, by name.
    peer = function(_, peerName) return peers[peerName] end,
    ping = function(_, i) return i end,
  })
end

return M
