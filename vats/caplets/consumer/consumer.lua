-- The consumer caplet: requests the "echo" service, which Omnium resolves
-- at install to the echo caplet's root and passes in parameters.echo (a
-- presence, given again each time the vat starts).
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, parameters, _baggage)
  local log = vatPowers.logger:subLogger { tags = { 'consumer' } }
  local echo = parameters.echo
  if not echo then error('Required service "echo" not provided', 0) end
  return ocap.makeDefaultExo('consumer-root', {
    bootstrap = function() log:log('Consumer initialized with echo service') end,
    useService = function(_, message)
      local result = E(echo).echo(message):await()
      log:log('Received from service:', result)
      return result
    end,
  })
end

return M
