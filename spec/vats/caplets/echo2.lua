-- Version 2 of the echo caplet (for upgrades): it answers differently and
-- keeps counting in the same baggage.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  if not baggage:has('count') then baggage:init('count', 0) end
  return ocap.makeDefaultExo('echo-service-root', {
    echo = function(_, message)
      baggage:set('count', baggage:get('count') + 1)
      return 'Echo v2: ' .. message
    end,
    count = function() return baggage:get('count') end,
  })
end

return M
