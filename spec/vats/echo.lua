-- A vat that echoes, fails on demand, and calls other objects.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, parameters)
  local peers = {}
  local log = vatPowers.logger
  return ocap.makeDefaultExo('echo', {
    bootstrap = function(_, vats, services)
      peers = vats
      local names = {}
      for name in pairs(vats) do names[#names + 1] = name end
      table.sort(names)
      log:log('bootstrap', table.concat(names, ','))
      return { vats = names, services = services, parameters = parameters }
    end,
    echo = function(_, ...) return ... end,
    echoAll = function(_, ...) return table.pack(...) end,
    ping = function(_, i) return i end,
    boom = function() error('boom') end,
    rejectData = function() error({ code = 7 }) end,
    peer = function(_, name) return peers[name] end,
    call = function(_, target, method, ...)
      return E(target)[method](...):await()
    end,
    callPeer = function(_, name, method, ...)
      return E(peers[name])[method](...):await()
    end,
    tryPeer = function(_, name, method, ...)
      local ok, err = pcall(ocap.await, E(peers[name])[method](...))
      return { ok = ok, err = err }
    end,
    pingPeer = function(_, name, n)
      local sum = 0
      for i = 1, n do sum = sum + E(peers[name]).ping(i):await() end
      return sum
    end,
    returnFunction = function() return function() end end,
    manyResolved = function(_, n)
      local out = {}
      for i = 1, n do out[i] = ocap.Promise.resolve(i) end
      return out
    end,
    makeThing = function(_, label)
      return ocap.makeDefaultExo('thing', { label = function() return label end })
    end,
    sendBad = function(_, name)
      return E(peers[name]).echo(function() end)
    end,
    -- (Added last: errors_spec quotes the line numbers above.)
    -- The root itself, for chains of calls (bench/run.lua).
    itself = function(me) return me end,
    -- n sequential round trips to any target's ping.
    pingTarget = function(_, target, n)
      local sum = 0
      for i = 1, n do sum = sum + E(target).ping(i):await() end
      return sum
    end,
    -- A rejection made by a callback that raises, not by the method.
    nextBoom = function()
      return ocap.Promise.resolve(1):next(function() error('boom') end)
    end,
  })
end

return M
