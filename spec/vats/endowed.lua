-- A vat that uses the endowments of VatConfig.globals (print, timers,
-- os.time/clock/date, math.random) and its vatPowers (logger, exitVat,
-- exitVatWithFailure), for the endowments specs. It works with any subset
-- of the endowments: `has(name)` says which ones it got.
-- luacheck: read globals setTimeout clearTimeout setInterval clearInterval
local ocap = require 'ocap'
local E = ocap.E

local M = {}

-- Reading an absent global gives nil; the functions below look each name
-- up only when called.
local probes = {
  print = function() return print end,
  setTimeout = function() return setTimeout end,
  clearTimeout = function() return clearTimeout end,
  setInterval = function() return setInterval end,
  clearInterval = function() return clearInterval end,
  os = function() return os end,
  ['os.time'] = function() return os and os.time end,
  ['os.clock'] = function() return os and os.clock end,
  ['os.date'] = function() return os and os.date end,
  ['os.execute'] = function() return os and os.execute end,
  ['os.getenv'] = function() return os and os.getenv end,
  ['math.random'] = function() return math.random end,
  ['math.randomseed'] = function() return math.randomseed end,
}

local function try(f, ...)
  local ok, err = pcall(f, ...)
  if type(err) == 'table' then err = err.message or tostring(err) end
  return { ok = ok, value = ok and err or nil, err = (not ok) and tostring(err) or nil }
end

function M.buildRootObject(vatPowers, _parameters, _baggage)
  local peers = {}
  local held = {}
  local log = vatPowers.logger
  return ocap.makeDefaultExo('endowed', {
    bootstrap = function(_, vats) peers = vats end,
    peer = function(_, name) return peers[name] end,
    ping = function(_, i) return i end,
    has = function(_, name)
      local v = probes[name]()
      return v ~= nil
    end,
    typeOf = function(_, name) return type(probes[name]()) end,

    -- print
    say = function(_, ...) print(...) end,
    trySay = function(_, ...)
      local args = table.pack(...)
      return try(function() print(table.unpack(args, 1, args.n)) end)
    end,

    -- timers
    after = function(_, ms, value)
      local kit = ocap.makePromiseKit()
      setTimeout(function(v) kit.resolve(v) end, ms, value)
      return kit.promise
    end,
    cancelled = function(_, ms)
      local fired = 0
      local kit = ocap.makePromiseKit()
      local id = setTimeout(function() fired = fired + 1 end, ms)
      clearTimeout(id)
      setTimeout(function() kit.resolve(fired) end, 3 * ms)
      return kit.promise
    end,
    ticks = function(_, n, ms)
      local count = 0
      local kit = ocap.makePromiseKit()
      local id
      id = setInterval(function()
        count = count + 1
        if count == n then
          clearInterval(id)
          -- Wait a few more periods: a cleared interval must not tick.
          setTimeout(function() kit.resolve(count) end, 5 * ms)
        end
      end, ms)
      return kit.promise
    end,
    -- Every tick sends increment() to the peer named `name`; the result
    -- fulfills after n ticks, and the interval keeps going.
    tickPeer = function(_, name, n, ms)
      local count = 0
      local kit = ocap.makePromiseKit()
      setInterval(function()
        count = count + 1
        E.sendOnly(peers[name]).increment()
        if count == n then kit.resolve(count) end
      end, ms)
      return kit.promise
    end,
    -- A timer callback that awaits a message to a peer.
    afterAwait = function(_, name, ms)
      local kit = ocap.makePromiseKit()
      setTimeout(function()
        kit.resolve(E(peers[name]).echo('awaited in a timer'):await())
      end, ms)
      return kit.promise
    end,
    failingTimer = function(_, ms)
      setTimeout(function() error('timer went wrong') end, ms)
      local kit = ocap.makePromiseKit()
      setTimeout(function() kit.resolve('after the failure') end, 2 * ms)
      return kit.promise
    end,
    -- A timer callback that never ends: the timer's crank exhausts the meter.
    loopingTimer = function(_, ms)
      setTimeout(function() while true do end end, ms)
    end,
    badTimer = function() return try(setTimeout, 'not a function', 1) end,

    -- os and math
    osTime = function() return os.time() end,
    osClock = function() return os.clock() end,
    osDate = function(_, fmt, t) return os.date(fmt, t) end,
    tryOs = function(_, name) return try(function() return os[name]() end) end,
    randoms = function(_, n)
      local out = {}
      for i = 1, n do out[i] = math.random(1, 1000000) end
      return out
    end,
    tryRandom = function() return try(function() return math.random() end) end,

    -- vatPowers
    logAll = function(_, tags)
      local sub = log:subLogger { tags = tags }
      sub:debug('a debug entry', 1)
      sub:log('a log entry', 2)
      sub:warn('a warn entry', 3)
      sub:error('an error entry', { k = 'v' })
      log:log('a root entry')
      sub:subLogger({ tags = { 'deeper' } }):log('a nested entry')
    end,
    hold = function(_, key)
      local kit = ocap.makePromiseKit()
      held[key] = kit
      return kit.promise
    end,
    release = function(_, key, value) held[key].resolve(value) end,
    exit = function(_, value)
      vatPowers.exitVat(value)
      return 'still running after exitVat'
    end,
    exitWithFailure = function(_, reason)
      vatPowers.exitVatWithFailure(reason)
      return 'still running after exitVatWithFailure'
    end,
    exitTwice = function()
      vatPowers.exitVat('first')
      vatPowers.exitVatWithFailure('second')
    end,
  })
end

return M
