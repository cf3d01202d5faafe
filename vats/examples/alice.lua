-- Alice greets Bob at bootstrap and reports what he answered.
local ocap = require 'ocap'
local E, makeDefaultExo = ocap.E, ocap.makeDefaultExo

local M = {}

function M.buildRootObject(vatPowers, parameters)
  local log = vatPowers.logger:subLogger { tags = { 'alice' } }
  local name = parameters.name or 'Alice'
  return makeDefaultExo('alice', {
    bootstrap = function(_, vats)
      local reply = E(vats.bob).hello(name):await()
      log:log(('%s heard: %s'):format(name, reply))
      return reply
    end,
    ping = function(_, i) return i end,
  })
end

return M
