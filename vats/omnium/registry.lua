-- Omnium's registry vat (Phase 2 service discovery): caplets ask its
-- public facet for services by name and get revocable forwarders; only
-- the controller, which holds this vat's root, registers and withdraws
-- services. Everything is durable, so forwarders keep working, and stay
-- revoked, across restarts.
local ocap = require 'ocap'
local exo = require 'ocap.exo'
local E = ocap.E

local M = {}

-- The methods of a forwarder: any name, sent on to the service unless
-- the forwarder was revoked.
local function forwarding(state)
  return setmetatable({}, { __index = function(_, method)
    if type(method) ~= 'string' then return nil end
    return function(_, ...)
      if state.revoked then error(('service "%s" has been revoked'):format(state.name), 0) end
      return E(state.target)[method](...)
    end
  end })
end

function M.buildRootObject(_vatPowers, _parameters, baggage)
  -- Each forwarder's durable state, found again when it is revived.
  local states = setmetatable({}, { __mode = 'k' })
  local makeForwarder = ocap.prepareExoClass(baggage, 'ServiceForwarder', nil,
    function(name, target) return { name = name, target = target, revoked = false } end, {},
    { finish = function(context)
      states[context.self] = context.state
      exo.register(context.self, forwarding(context.state))
    end })

  local function key(name) return 'service:' .. tostring(name) end
  local function names()
    local out = {}
    for k in baggage:keys() do
      if type(k) == 'string' and k:sub(1, 8) == 'service:' then out[#out + 1] = k:sub(9) end
    end
    table.sort(out)
    return out
  end

  local public = ocap.prepareExo(baggage, 'registry', {
    getService = function(_, name)
      if type(name) ~= 'string' or not baggage:has(key(name)) then
        error(('no service "%s"'):format(tostring(name)), 0)
      end
      local entry = baggage:get(key(name))
      local f = makeForwarder(name, entry.target)
      entry.forwarders[#entry.forwarders + 1] = f
      baggage:set(key(name), entry)
      return f
    end,
    listServices = function() return names() end,
  })

  return ocap.makeDefaultExo('registryAdmin', {
    getPublic = function() return public end,
    register = function(_, name, target)
      baggage:init(key(name), { target = target, forwarders = {} })
    end,
    -- Revokes every forwarder of the service, for good, and forgets it.
    withdraw = function(_, name)
      if not baggage:has(key(name)) then return 0 end
      local entry = baggage:get(key(name))
      for _, f in ipairs(entry.forwarders) do states[f].revoked = true end
      baggage:delete(key(name))
      return #entry.forwarders
    end,
  })
end

return M
