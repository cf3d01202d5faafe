-- A root whose bootstrap awaits a turn first, then returns or raises as
-- its parameters say (mode = 'return' | 'raise').
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_, parameters)
  local function turn(v)
    return ocap.Promise.resolve(v):next(function(x) return x end)
  end
  return ocap.makeDefaultExo('lateBootstrap', {
    bootstrap = function()
      local v = turn(41):await()
      if parameters.mode == 'raise' then error('late boom', 0) end
      return v + 1
    end,
  })
end

return M
