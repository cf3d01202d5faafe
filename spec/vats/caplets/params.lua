-- A vat that reports its parameters: plain data, and a reference the
-- kernel passed in them (parameters.peer).
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, parameters)
  return ocap.makeDefaultExo('params', {
    greeting = function() return parameters.greeting end,
    hasRefsKey = function() return parameters['$ocap.refs'] ~= nil end,
    peerPing = function(_, n) return E(parameters.peer).ping(n):await() end,
    ping = function(_, n) return n end,
  })
end

return M
