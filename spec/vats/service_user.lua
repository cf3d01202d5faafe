-- A vat that uses kernel services it got at bootstrap (kept in baggage).
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, _parameters, baggage)
  local log = vatPowers.logger
  local function svc(name) return baggage:get('service:' .. name) end
  return ocap.makeDefaultExo('serviceUser', {
    bootstrap = function(_, vats, services)
      local names = {}
      for name, s in pairs(services) do
        baggage:init('service:' .. name, s)
        names[#names + 1] = name
      end
      table.sort(names)
      log:log('bootstrap services: ' .. table.concat(names, ','))
      for name, v in pairs(vats) do baggage:init('vat:' .. name, v) end
      return names
    end,
    call = function(_, name, method, ...)
      return E(svc(name))[method](...):await()
    end,
    try = function(_, name, method, ...)
      local ok, err = pcall(ocap.await, E(svc(name))[method](...))
      return { ok = ok, value = err }
    end,
    callWithObject = function(_, name)
      local calls = 0
      local obj = ocap.makeDefaultExo('callback', {
        hello = function(_, who) calls = calls + 1; return 'hello ' .. who end,
      })
      local r = E(svc(name)).useObject(obj):await()
      return { result = r, calls = calls }
    end,
    facet = function(_, method, ...)
      return E(svc('kernelFacet'))[method](...):await()
    end,
    launchViaFacet = function(_, config)
      local r = E(svc('kernelFacet')).launchSubcluster(config):await()
      return { subclusterId = r.subclusterId, pong = E(r.root).ping(9):await() }
    end,
    ping = function(_, i) return i end,
    identity = function(_, x) return x end,
    peerThing = function(_, name) return E(baggage:get('vat:' .. name)).makeThing():await() end,
    sendTo = function(_, target, method, ...)
      local ok, err = pcall(ocap.await, E(target)[method](...))
      return { ok = ok, value = err }
    end,
    makeThing = function()
      return ocap.makeDefaultExo('thing', { poke = function() return 'poked' end })
    end,
    promiseForThing = function()
      local kit = ocap.makePromiseKit()
      baggage:init('kit', 'unused')
      return kit.promise
    end,
  })
end

return M
