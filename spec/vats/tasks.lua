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
  local gates = {}
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
    -- Yields its thread itself rather than awaiting: it never ends.
    yield = function() coroutine.yield('stray') end,
    -- Awaits until open is called, for methods that await at once.
    gate = function(_, v)
      gates[#gates + 1] = ocap.makePromiseKit()
      return gates[#gates].promise:await() + v
    end,
    open = function(_, v)
      for _, kit in ipairs(gates) do kit.resolve(v) end
      gates = {}
      return true
    end,
  })
end

return M
