-- A vat that makes objects for others and uses objects others make, then
-- lets go of them: the workload of garbage collection's end-to-end specs.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject()
  return ocap.makeDefaultExo('churner', {
    bootstrap = function() end,
    make = function(_, i)
      return ocap.makeDefaultExo('thing', { label = function() return i end })
    end,
    --- Asks peer for n objects, one at a time, uses each once and keeps
    --- none; returns the sum of their labels.
    churn = function(_, peer, n)
      local sum = 0
      for i = 1, n do
        local thing = E(peer).make(i):await()
        sum = sum + E(thing).label():await()
      end
      return sum
    end,
  })
end

return M
