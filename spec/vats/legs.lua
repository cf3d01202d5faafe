-- A vat whose methods attack the thread a delivery runs in (a leg,
-- core/lpromise.c): errors whose tostring runs away, and awaits.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject()
  local function turn(v)
    return ocap.Promise.resolve(v):next(function(x) return x end)
  end
  -- An error value whose every tostring raises one whose tostring loops.
  local looping = setmetatable({}, { __tostring = function() while true do end end })
  local raising = setmetatable({}, { __tostring = function() error(looping) end })
  return ocap.makeDefaultExo('legs', {
    later = function(_, v) return turn(v):await() + 1 end,
    badError = function() error(raising) end,
    laterBadError = function()
      turn():await()
      error(raising)
    end,
  })
end

return M
