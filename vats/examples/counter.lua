-- A counter: its state in baggage, a service kept from bootstrap.
local ocap = require 'ocap'
local E, makeDefaultExo = ocap.E, ocap.makeDefaultExo

local M = {}

function M.buildRootObject(vatPowers, parameters, baggage)
  local log = vatPowers.logger:subLogger { tags = { 'counter' } }
  local counter
  if baggage:has('counter') then
    counter = baggage:get('counter')
  else
    counter = parameters.start or 0
    baggage:init('counter', counter)
  end

  return makeDefaultExo('root', {
    bootstrap = function(_, _vats, services)
      -- called exactly once, when the subcluster is first launched
      if services.myService then baggage:init('myService', services.myService) end
    end,
    increment = function()
      counter = counter + 1
      baggage:set('counter', counter)
      log:log('now', counter)
      return counter
    end,
    askService = function(_, what)
      -- every delivery runs in its own coroutine, so it may wait
      return E(baggage:get('myService')).doSomething(what):await()
    end,
  })
end

return M
