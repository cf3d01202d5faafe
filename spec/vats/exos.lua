-- Exo classes, kits, guards and stores used across vats, for the exo
-- specs. The same file runs as the vat that makes objects and as the vat
-- that uses them.
local ocap = require 'ocap'
local E, M = ocap.E, ocap.M

local MOD = {}

local function toF(c) return c * 9 / 5 + 32 end
local function toC(f) return (f - 32) * 5 / 9 end

local ServiceI = M.interface('ServiceInterface', {
  echo = M.call(M.string()):returns(M.string()),
  add = M.call(M.number(), M.number()):optional(M.number()):returns(M.number()),
  describe = M.call(M.remotable('thing')):returns(M.string()),
  configure = M.call(M.record()):returns(M.record()),
  count = M.call(M.arrayOf(M.nat())):returns(M.nat()),
  badReturn = M.call():returns(M.string()),
  calls = M.call():returns(M.nat()),
})

local makeService = ocap.defineExoClass('Service', ServiceI,
  function(name) return { name = name, calls = 0 } end,
  {
    echo = function(ctx, message)
      ctx.state.calls = ctx.state.calls + 1
      return 'Echo: ' .. message
    end,
    add = function(ctx, a, b, c)
      ctx.state.calls = ctx.state.calls + 1
      return a + b + (c or 0)
    end,
    describe = function(ctx, thing)
      ctx.state.calls = ctx.state.calls + 1
      return ctx.state.name .. ' got ' .. tostring(thing)
    end,
    configure = function(ctx, options)
      ctx.state.calls = ctx.state.calls + 1
      return options
    end,
    count = function(ctx, list)
      ctx.state.calls = ctx.state.calls + 1
      return #list
    end,
    badReturn = function() return 1 end,
    calls = function(ctx) return ctx.state.calls end,
  })

local ConverterI = M.interface('TemperatureConverter', {
  setCelsius = M.call(M.number()),
  setFahrenheit = M.call(M.number()),
  getCelsius = M.call():returns(M.number()),
  getFahrenheit = M.call():returns(M.number()),
})

local makeConverter = ocap.defineExoClass('TemperatureConverter', ConverterI,
  function(celsius) return { celsius = celsius or 0 } end,
  {
    setCelsius = function(ctx, c) ctx.state.celsius = c end,
    setFahrenheit = function(ctx, f) ctx.state.celsius = toC(f) end,
    getCelsius = function(ctx) return ctx.state.celsius end,
    getFahrenheit = function(ctx) return toF(ctx.state.celsius) end,
  })

local ScaleI = M.interface('TemperatureScale', {
  getValue = M.call():returns(M.number()),
  setValue = M.call(M.number()):returns(M.number()),
})

local makeTemperature = ocap.defineExoClassKit('Temperature',
  { celsius = ScaleI, fahrenheit = ScaleI },
  function(celsius) return { celsius = celsius or 0 } end,
  {
    celsius = {
      getValue = function(ctx) return ctx.state.celsius end,
      setValue = function(ctx, v)
        ctx.state.celsius = v
        return ctx.facets.fahrenheit:getValue()
      end,
    },
    fahrenheit = {
      getValue = function(ctx) return toF(ctx.state.celsius) end,
      setValue = function(ctx, v)
        ctx.state.celsius = toC(v)
        return ctx.facets.celsius:getValue()
      end,
    },
  })

local function try(f, ...)
  local ok, err = pcall(f, ...)
  if not ok and type(err) == 'table' then err = err.message or tostring(err) end
  return { ok = ok, value = ok and err or nil, err = (not ok) and tostring(err) or nil }
end

function MOD.buildRootObject(_vatPowers, _parameters, baggage)
  local peers = {}
  local made = {}
  local listeners = {}
  local heard = {}
  local store = ocap.makeScalarMapStore('things')

  return ocap.makeDefaultExo('exos', {
    bootstrap = function(_, vats) peers = vats end,
    peer = function(_, name) return peers[name] end,

    -- Makers.
    makeService = function(_, name)
      local s = makeService(name)
      made[#made + 1] = s
      return s
    end,
    makeConverter = function(_, celsius) return makeConverter(celsius) end,
    makeTemperature = function(_, celsius) return makeTemperature(celsius) end,
    makeThing = function(_, label)
      return ocap.makeDefaultExo('thing', { label = function() return label end })
    end,
    -- Whether x is (the very same) object this vat made with makeService.
    isMine = function(_, x)
      for _, s in ipairs(made) do if s == x then return true end end
      return false
    end,

    -- Users: call whatever they are given, eventually.
    call = function(_, target, method, ...)
      return E(target)[method](...):await()
    end,
    tryCall = function(_, target, method, ...)
      local args = table.pack(...)
      return try(function() return E(target)[method](table.unpack(args, 1, args.n)):await() end)
    end,
    useConverter = function(_, conv)
      local out = {}
      out[1] = E(conv).getFahrenheit():await()
      E(conv).setCelsius(100)
      out[2] = E(conv).getFahrenheit():await()
      E(conv).setFahrenheit(-40)
      out[3] = E(conv).getCelsius():await()
      return out
    end,
    useScale = function(_, scale, value)
      return E(scale).setValue(value):await()
    end,

    -- Callbacks: `register` keeps a listener; `fire` calls them all.
    register = function(_, listener)
      listeners[#listeners + 1] = listener
      return #listeners
    end,
    fire = function(_, value)
      local results = {}
      for i, l in ipairs(listeners) do results[i] = E(l).notify(value):await() end
      return results
    end,
    -- Passes a fresh listener of its own to the peer, asks the peer to fire
    -- it, and returns what the listener heard.
    subscribeTo = function(_, name, value)
      local listener = ocap.makeDefaultExo('listener', {
        notify = function(_, v)
          heard[#heard + 1] = v
          return 'heard ' .. tostring(v)
        end,
      })
      E(peers[name]).register(listener):await()
      local answers = E(peers[name]).fire(value):await()
      return { answers = answers, heard = heard }
    end,

    -- Scalar map stores, inside the vat.
    storeDemo = function()
      local s = ocap.makeScalarMapStore('demo')
      local thing = ocap.makeDefaultExo('key', {})
      s:init('b', 2)
      s:init('a', { nested = true })
      s:init(10, 'ten')
      s:init(true, 'yes')
      s:init(thing, 'a remotable key')
      s:set('b', 3)
      local keys = {}
      for k in s:keys() do keys[#keys + 1] = k == thing and 'thing' or k end
      local out = {
        keys = keys,
        size = s:getSize(),
        b = s:get('b'),
        a = s:get('a'),
        byThing = s:get(thing),
        hasA = s:has('a'),
        dup = try(s.init, s, 'a', 1),
        missing = try(s.get, s, 'zz'),
        badKey = try(s.init, s, { 1 }, 1),
      }
      s:delete('a')
      out.hasAAfterDelete = s:has('a')
      out.sizeAfterDelete = s:getSize()
      out.label = tostring(s)
      return out
    end,
    -- The vat's long-lived store, also handed out as a remotable.
    getStore = function() return store end,
    storeGet = function(_, k) return store:get(k) end,
    storeKeys = function()
      local out = {}
      for k, v in store:entries() do out[#out + 1] = { k, v } end
      return out
    end,
    keepInBaggage = function(_, k, v)
      local s
      if baggage:has('kept') then
        s = baggage:get('kept')
      else
        s = ocap.makeScalarMapStore('kept')
        baggage:init('kept', s)
      end
      s:init(k, v)
      return s:getSize()
    end,
    fromBaggage = function(_, k) return baggage:get('kept'):get(k) end,

    -- harden and passability at the sender.
    hardenDemo = function(_, name)
      local data = { a = 1, nested = { b = 2 }, list = { 1, 2, 3 } }
      local h = ocap.harden(data)
      return {
        same = h == data,
        top = try(function() h.a = 2 end),
        nested = try(function() h.nested.b = 3 end),
        add = try(function() h.list[4] = 4 end),
        a = h.a,
        echoed = E(peers[name]).echo(h):await(),
      }
    end,
    -- Tries to send something not passable to target.echo.
    sendBad = function(_, target, what)
      local bad = {
        ['function'] = function() end,
        coroutine = coroutine.create(function() end),
        cyclic = (function() local t = {} t.self = t return t end)(),
        mixed = { 1, 2, x = 3 },
        metatable = setmetatable({}, { __index = {} }),
      }
      local r = try(function() return E(target).echo(bad[what]) end)
      r.value = nil -- a promise, if the send went out
      return r
    end,
    returnFunction = function() return function() end end,
    ping = function(_, i) return i end,
  })
end

return MOD
