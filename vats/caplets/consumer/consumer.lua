-- The consumer caplet: requests the "echo" service, which Omnium resolves
-- at install to the echo caplet's root and hands over at bootstrap; the
-- consumer keeps it in baggage, so it still has it after a restart.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, parameters, baggage)
  local log = vatPowers.logger:subLogger { tags = { 'consumer' } }
  return ocap.makeDefaultExo('consumer-root', {
    bootstrap = function(_, _vats, services)
      local echo = parameters.echo or services.echo
      if not echo then error('Required service "echo" not provided', 0) end
      baggage:init('echo', echo)
      log:log('Consumer initialized with echo service')
    end,
    useService = function(_, message)
      local result = E(baggage:get('echo')).echo(message):await()
      log:log('Received from service:', result)
      return result
    end,
  })
end

return M
