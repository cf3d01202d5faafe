-- A vat that spends kernel-side resources on demand: big messages, many
-- timers, log entries, and records that are costly to decode.
-- luacheck: read globals setTimeout clearTimeout
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, parameters, baggage)
  local log = vatPowers.logger
  if parameters.failBuildIfMarked and baggage:has('marked') then
    error('baggage is marked: ' .. tostring(baggage:get('marked')))
  end
  local peers = {}
  return ocap.makeDefaultExo('budget', {
    bootstrap = function(_, vats) peers = vats end,
    peer = function(_, name) return peers[name] end,
    meet = function(_, name, p) peers[name] = p end,
    ping = function(_, i) return i end,
    put = function(_, k, v)
      if baggage:has(k) then baggage:set(k, v) else baggage:init(k, v) end
      return v
    end,
    get = function(_, k) return baggage:has(k) and baggage:get(k) or nil end,
    -- n references to one empty record: cheap to hold and to encode, but
    -- the receiver decodes n distinct tables.
    records = function(_, n)
      local one, list = {}, {}
      for i = 1, n do list[i] = one end
      return list
    end,
    sendRecords = function(_, name, n)
      local one, list = {}, {}
      for i = 1, n do list[i] = one end
      local ok, err = pcall(ocap.await, E(peers[name]).take(list))
      return { ok = ok, err = err }
    end,
    -- Asks the peer for n records: the reply is a notify to this vat.
    askRecords = function(_, name, n)
      local ok, res = pcall(ocap.await, E(peers[name]).records(n))
      if ok then return { ok = true, count = #res } end
      return { ok = false, err = res }
    end,
    take = function(_, list) return #list end,
    trySend = function(_, name, bytes)
      local ok, err = pcall(function() return E(peers[name]).take(string.rep('x', bytes)) end)
      return { ok = ok, err = err }
    end,
    -- Sends count messages of size bytes each in this one delivery.
    flood = function(_, name, count, bytes)
      local s = string.rep('f', bytes)
      for _ = 1, count do E.sendOnly(peers[name]).take(s) end
      return count
    end,
    bigResult = function(_, bytes) return string.rep('r', bytes) end,
    -- Keeps a promise, then sends messages to it: until it resolves they
    -- wait in the kernel.
    hold = function(_, p) peers.held = p end,
    sendToHeld = function(_, bytes)
      local ok, err = pcall(function() E.sendOnly(peers.held).take(string.rep('q', bytes)) end)
      return { ok = ok, err = err }
    end,
    logLine = function(_, message, ...) log:log(message, ...) end,
    logHuge = function(_, bytes) log:log(string.rep('x', bytes)) end,
    logMany = function(_, n)
      local values = {}
      for i = 1, n do values[i] = i end
      log:log('many', table.unpack(values))
    end,
    logFlood = function(_, count, bytes)
      local s = string.rep('l', bytes)
      for _ = 1, count do log:log(s) end
      return count
    end,
    -- Arms n timers far in the future; returns their ids, or the error
    -- that stopped it and how many were armed.
    armTimers = function(_, n)
      local ids = {}
      for i = 1, n do
        local ok, id = pcall(setTimeout, function() end, 1e9)
        if not ok then return { armed = i - 1, err = id, ids = ids } end
        ids[i] = id
      end
      return { armed = n, ids = ids }
    end,
    clearTimer = function(_, id) clearTimeout(id) end,
    -- Arms n one-shot timers due at once; the promise settles once all fired.
    fireTimers = function(_, n)
      local kit, fired = ocap.makePromiseKit(), 0
      for _ = 1, n do
        setTimeout(function()
          fired = fired + 1
          if fired == n then kit.resolve(fired) end
        end, 0)
      end
      return kit.promise
    end,
    -- n promises, settled by the time the result is: the asker learns
    -- them all in the notify of the result.
    promiseList = function(_, n)
      local list = {}
      for i = 1, n do list[i] = ocap.Promise.resolve(i) end
      return list
    end,
    sumPromises = function(_, name, n)
      local list = E(peers[name]).promiseList(n):await()
      local sum = 0
      for i = 1, #list do sum = sum + list[i]:await() end
      return sum
    end,
    spin = function(_, n)
      local x = 0
      for i = 1, n do x = x + i end
      return x
    end,
  })
end

return M
