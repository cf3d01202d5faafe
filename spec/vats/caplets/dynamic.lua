-- A caplet that finds services at run time through parameters.registry
-- (Phase 2), keeping what it got in baggage.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, parameters, baggage)
  local registry = parameters.registry
  return ocap.makeDefaultExo('dynamic', {
    list = function() return E(registry).listServices():await() end,
    get = function(_, name)
      local svc = E(registry).getService(name):await()
      local key = 'svc:' .. name
      if baggage:has(key) then baggage:set(key, svc) else baggage:init(key, svc) end
      return true
    end,
    call = function(_, name, method, ...) return E(baggage:get('svc:' .. name))[method](...):await() end,
    register = function(_, name)
      return E(registry).register(name, ocap.makeDefaultExo('fake', {})):await()
    end,
  })
end

return M
