-- A vat whose methods end in every way a task can: returning, raising,
-- awaiting first, or never (for the meter), and that tells which worker
-- runs them.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject()
  -- A promise that settles in a turn of its own, so that awaiting it yields.
  local function turn(v)
    return ocap.Promise.resolve(v):next(function(x) return x end)
  end
  return ocap.makeDefaultExo('tasks', {
    worker = function() return tostring(coroutine.running()) end,
    boom = function(_, why) error(why) end,
    later = function(_, v) return turn(v):await() + 1 end,
    laterBoom = function(_, why)
      turn():await()
      error(why, 0)
    end,
    laterWorker = function()
      turn():await()
      return tostring(coroutine.running())
    end,
    loop = function() while true do end end,
  })
end

return M
