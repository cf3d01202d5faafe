-- A vat whose wait() answers only when open(v) is called, for specs of
-- requests that stay pending.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject()
  local waiters = {}
  return ocap.makeDefaultExo('gate', {
    bootstrap = function() return 'ready' end,
    wait = function()
      local kit = ocap.makePromiseKit()
      waiters[#waiters + 1] = kit.resolve
      return kit.promise
    end,
    open = function(_, v)
      local n = #waiters
      for i = 1, n do waiters[i](v) end
      waiters = {}
      return n
    end,
  })
end

return M
