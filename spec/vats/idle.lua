-- A vat that does nothing until asked, for the footprint spec and bench:
-- idle it shows what every vat pays; each method then touches one part of
-- the runtime a vat loads only when it first uses it.
local ocap = require 'ocap'

local MOD = {}

function MOD.buildRootObject(vatPowers, _parameters, baggage)
  return ocap.makeDefaultExo('idle', {
    ping = function(_, x) return x end,
    -- The vat's logger, and a sub-logger with a tag.
    log = function(_, message)
      vatPowers.logger:log(message)
      vatPowers.logger:subLogger({ tags = { 'sub' } }):warn(message)
      return vatPowers.logger == vatPowers.logger
    end,
    -- Replaces the vat's global require, then touches a lazy part of the
    -- runtime: the runtime must load its own module, not ask this one.
    hijackRequire = function(_, what)
      local asked = 0
      local realRequire = require
      _ENV.require = function(name)
        asked = asked + 1
        error('the runtime asked the vat for ' .. tostring(name))
      end
      local ok, got = pcall(function()
        if what == 'guards' then return type(ocap.M.interface) end
        if what == 'boxes' then return type(ocap.symbol) end
        if what == 'passStyle' then return ocap.passStyleOf({ 1 }) end
        return type(vatPowers.logger.log)
      end)
      _ENV.require = realRequire
      return { ok, got, asked }
    end,
    -- Replaces the vat's global require for good, then calls an endowment
    -- it did not request: the runtime explains the error with its own
    -- module, loaded late.
    hijackThenFail = function()
      _ENV.require = function(name) error('the runtime asked the vat for ' .. tostring(name)) end
      print('not endowed')
    end,
    -- An exo class with an interface guard (ocap.M, ocap.defineExoClass).
    exoClass = function(_, n)
      local M = ocap.M
      local CounterI = M.interface('Counter', { add = M.call(M.nat()):returns(M.nat()) })
      local makeCounter = ocap.defineExoClass('Counter', CounterI,
        function(start) return { n = start } end,
        { add = function(ctx, by) ctx.state.n = ctx.state.n + by; return ctx.state.n end })
      local c = makeCounter(n)
      local ok = pcall(c.add, c, -1) -- the guard refuses a negative number
      return { c:add(2), ok }
    end,
    -- Symbols, byte arrays, big integers and tagged values (ocap.pass.boxes).
    boxes = function()
      return { ocap.symbol('s'), ocap.bytes('\0'), ocap.bigint('99999999999999999999'), ocap.makeTagged('t', 1) }
    end,
    -- A durable map store kept in baggage.
    store = function(_, k, v)
      local s = ocap.makeScalarMapStore('things')
      s:init(k, v)
      baggage:init('things', s)
      return baggage:get('things'):get(k)
    end,
    -- The promise combinators, which load on first use.
    combinators = function()
      local P = ocap.Promise
      local all = ocap.await(P.all({ 1, P.resolve(2) }))
      local settled = ocap.await(P.allSettled({ P.reject('no') }))
      return { all[1], all[2], ocap.await(P.race({ P.resolve(3) })), ocap.await(P.any({ P.reject('x'), 4 })),
        settled[1].status }
    end,
    -- The baggage, touched only as a whole: before the vat touches its
    -- contents, the store code is not loaded.
    baggage = function()
      local ok = pcall(function() baggage.x = 1 end)
      return { tostring(baggage), ok, ocap.passStyleOf(baggage), baggage }
    end,
    isBaggage = function(_, x) return rawequal(x, baggage) end,
    -- A durable singleton and a durable class.
    durable = function()
      local clock = ocap.prepareExo(baggage, 'clock', { now = function() return 42 end })
      local makeBox = ocap.prepareExoClass(baggage, 'Box', nil,
        function(v) return { v = v } end, { get = function(ctx) return ctx.state.v end })
      return { clock:now(), makeBox('boxed'):get() }
    end,
  })
end

return MOD
