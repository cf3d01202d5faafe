-- A vat for the loop-integration specs (ocap.loop): a chain of cranks, a
-- vat timer, and a call to a host service that answers later.
-- luacheck: read globals setTimeout
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject()
  local root, echo
  root = ocap.makeDefaultExo('looper', {
    bootstrap = function(_, vats) echo = vats.echo end,
    -- A chain of sends to itself (a local E is a turn, not a crank).
    countdown = function(_, n)
      if n == 0 then return 'done' end
      return E(root).countdown(n - 1)
    end,
    -- n round trips to the echo vat, one after the other: two cranks
    -- each (the send, the notify of its result).
    relay = function(_, n)
      local count = 0
      for _ = 1, n do
        count = count + E(echo).echo(1):await()
      end
      return count
    end,
    sleep = function(_, ms)
      local kit = ocap.makePromiseKit()
      setTimeout(function() kit.resolve('woke') end, ms)
      return kit.promise
    end,
    ask = function(_, service, n) return E(service).answer(n):await() end,
  })
  return root
end

return M
