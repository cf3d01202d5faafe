-- The echo caplet: provides the "echo" service (its root) and counts the
-- echoes in baggage, so the count survives restarts and upgrades.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(vatPowers, _parameters, baggage)
  local log = vatPowers.logger:subLogger { tags = { 'echo-service' } }
  if not baggage:has('count') then baggage:init('count', 0) end
  return ocap.makeDefaultExo('echo-service-root', {
    bootstrap = function() log:log('Echo service ready') end,
    echo = function(_, message)
      if type(message) ~= 'string' then error('echo: message must be a string', 0) end
      baggage:set('count', baggage:get('count') + 1)
      log:log('Echoing:', message)
      return 'Echo: ' .. message
    end,
    count = function() return baggage:get('count') end,
  })
end

return M
