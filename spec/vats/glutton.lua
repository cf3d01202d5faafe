-- A vat that has visible effects (a message sent, a promise resolved, a
-- baggage write, an exit requested) and then exhausts a budget in the same
-- delivery, for the limits specs: none of those effects may survive the
-- rolled-back crank. Also bombs that really reach the memory limit.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

local MB = 1 << 20

local function exhaust(kind)
  if kind == 'memory' then
    local s = 'x'
    while true do s = s .. s end
  end
  while true do end
end

function M.buildRootObject(vatPowers, parameters, baggage)
  if parameters.exhaustAtBuild then exhaust(parameters.exhaustAtBuild) end
  local peers = {}
  local held, kept = {}, {}
  return ocap.makeDefaultExo('glutton', {
    bootstrap = function(_, vats) peers = vats end,
    peer = function(_, name) return peers[name] end,
    ping = function(_, i) return i end,
    -- A promise this vat decides, to be resolved by a later call.
    hold = function(_, key)
      local kit = ocap.makePromiseKit()
      held[key] = kit
      return kit.promise
    end,
    release = function(_, key, value) held[key].resolve(value) end,
    -- Visible effects first, then an exhausted budget ('meter' or 'memory').
    sideEffectsThen = function(_, kind, key)
      E.sendOnly(peers.tally).increment()
      E(peers.tally).increment()
      held[key].resolve('resolved by the doomed crank')
      baggage:init('written', true)
      vatPowers.logger:log('about to exhaust', kind)
      return exhaust(kind)
    end,
    exhaust = function(_, kind) return exhaust(kind) end,
    exitThen = function(_, kind)
      vatPowers.exitVat('clean exit')
      return exhaust(kind)
    end,
    -- Exhausts in a later delivery (a notify), not the message's own.
    awaitThen = function(_, kind)
      E(peers.tally).get():await()
      return exhaust(kind)
    end,
    -- A string.rep bomb that fits in an int (1 GiB is refused by Lua itself
    -- with "resulting string too large", see runaway.lua's repBomb).
    repBomb = function()
      local s = string.rep('x', MB)
      return #string.rep(s, 64)
    end,
    -- table.concat of 10,000 references to one 1 KiB string: cheap to
    -- build, 10 MB to join.
    concatBomb = function()
      local s, t = string.rep('y', 1000), {}
      for i = 1, 10000 do t[i] = s end
      return #table.concat(t)
    end,
    -- About n VM instructions.
    spin = function(_, n)
      local x = 0
      for _ = 1, n do x = x + 1 end
      return x
    end,
    -- Allocates about mb MiB of garbage, 1 MiB at a time.
    churn = function(_, mb)
      local chunk = string.rep('z', 64 << 10)
      local total = 0
      for i = 1, mb do total = total + #(string.rep(chunk, 16) .. i) end
      return total
    end,
    -- Holds 6 MiB, drops it, then asks string.rep for 2.5 MiB: that fits
    -- in an 8 MiB vat once the dropped 6 MiB are collected.
    garbageThenRep = function()
      local chunk = string.rep('g', 64 << 10)
      local function hold()
        local big = {}
        for i = 1, 6 do big[i] = string.rep(chunk, 16) .. i end
        return #big
      end
      hold()
      return #string.rep(chunk, 40)
    end,
    -- Keeps about mb MiB alive in the vat.
    keep = function(_, mb)
      local chunk = string.rep('k', 64 << 10)
      for i = 1, mb do kept[#kept + 1] = string.rep(chunk, 16) .. i end
      return #kept
    end,
  })
end

return M
