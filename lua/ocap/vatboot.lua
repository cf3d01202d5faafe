--- Boots liveslots inside a vat's Lua state. The kernel calls
--- boot(syscall, info) once, then dispatch(...) for every delivery, or
--- dispatchCall(...) or dispatchSettle(...) for one it decoded itself.
local liveslots = require 'ocap.liveslots'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local api = require 'ocap.api'

local M = {}

-- Captured before any vat code runs, so that a vat which replaces its
-- global require cannot change what the lazy logger below loads.
local require, rawset, setmetatable, pairs, type = require, rawset, setmetatable, pairs, type

--- A logger whose entries go to emit. ocap.logger loads on the first one
--- a vat asks for: a vat that never logs does not carry the module.
local function makeLogger(emit, vatId)
  return require('ocap.logger').make(emit, {}, vatId)
end

local function plainData(v, seen)
  -- Log data may hold anything; make it passable by stringifying the rest.
  local ok = pcall(marshal.serializeData, v)
  if ok then return v end
  if type(v) == 'table' and not seen[v] then
    seen[v] = true
    local out = {}
    for k, x in pairs(v) do out[tostring(k)] = plainData(x, seen) end
    return out
  end
  return tostring(v)
end

--- Adds to a Lua error about an absent endowment which VatConfig.globals
--- entry would provide it (ocap.vatboot.explain, loaded on the first
--- error that may be one).
---@param env table the vat's globals
---@param message any
local function explainMissing(env, message)
  if type(message) ~= 'string' or not message:find('a nil value', 1, true) then return message end
  return require('ocap.vatboot.explain').explainMissing(env, message)
end
M.explainMissing = explainMissing

--- Boots the vat runtime.
---@param syscall table the C syscalls
---@param info string JSON-free "vatId name" pair
---@param env table|nil the vat's globals (the runtime has its own)
function M.boot(syscall, info, env)
  local vatId, name = info:match('^(%S+)%s*(.*)$')
  local function emit(entry)
    local payload = marshal.serializeData(plainData({
      tags = entry.tags, message = entry.message, data = entry.data,
    }, {}))
    syscall.log(entry.level, payload.body)
  end
  local ls
  local function log(level, message, data)
    emit({ level = level, tags = { 'liveslots' }, message = message, data = data and { data, n = 1 } })
  end
  local function explain(message) return explainMissing(env or _ENV, message) end
  ls = liveslots.make({ syscall = syscall, vatId = vatId, kind = 'vat', log = log, explain = explain })
  promise.setUnhandledRejectionHandler(function(reason)
    log('warn', 'unhandled rejection: ' .. tostring(reason))
  end)
  local ocap = api.make({
    makeScalarMapStore = function(label) return ls.stores().makeScalarMapStore(label) end,
    prepareExo = function(...) return ls.durable().prepareExo(...) end,
    prepareExoClass = function(...) return ls.durable().prepareExoClass(...) end,
    prepareExoClassKit = function(...) return ls.durable().prepareExoClassKit(...) end,
  }, function() return ls.marshal end)

  function ls.startVat(main, paramsBody, upgrade)
    local ok, mod = pcall(require, main)
    if not ok then
      return false, tostring(explain(mod))
    end
    if type(mod) ~= 'table' or type(mod.buildRootObject) ~= 'function' then
      return false, ('vat %q does not return a table with buildRootObject'):format(name)
    end
    local params = marshal.unserializeData({ body = paramsBody, slots = {} })
    -- References the kernel put in the vat's c-list for its parameters.
    local refs = type(params) == 'table' and params['$ocap.refs']
    if type(refs) == 'table' then
      params['$ocap.refs'] = nil
      for pname, vref in pairs(refs) do params[pname] = ls.presenceFor(vref) end
    end
    -- vatPowers.logger is made on first use (makeLogger).
    local vatPowers = setmetatable({
      exitVat = function(value)
        local cd = ls.marshal.serialize(value)
        syscall.exit(false, cd.body)
      end,
      exitVatWithFailure = function(reason)
        local cd = ls.marshal.serialize(liveslots.normalizeError(reason))
        syscall.exit(true, cd.body)
      end,
    }, {
      __index = function(powers, k)
        if k ~= 'logger' then return nil end
        local l = makeLogger(emit, vatId)
        rawset(powers, 'logger', l)
        return l
      end,
    })
    local baggage = ls.baggage()
    local p = promise.spawn(mod.buildRootObject, vatPowers, params, baggage)
    promise.drain()
    local state, root = promise.state(p)
    if state == 'pending' then
      return false, 'buildRootObject did not finish (it awaits something that never settles)'
    elseif state == 'rejected' then
      local reason = liveslots.normalizeError(explain(root))
      return false, 'buildRootObject failed: ' .. tostring(reason.message or reason)
    end
    if not pass.isRemotable(root) then
      return false, 'buildRootObject must return a remotable (use makeDefaultExo)'
    end
    if upgrade then
      local missing = ls.durable().unprepared()
      if #missing > 0 then
        return false, ('buildRootObject did not prepare again what the previous incarnation defined: %s '
          .. '(call prepareExo / prepareExoClass for each)'):format(table.concat(missing, ', '))
      end
    end
    ls.exportAs(root, 'o+0')
    -- A vat starts once: its state can drop this code, and the maker of
    -- its baggage shell (the store kit hands out baggage from now on).
    ls.startVat, ls.baggage = nil, nil
    return true
  end

  -- Endowments a vat may ask for (VatConfig.globals): the kernel installs
  -- the requested ones as globals at boot, and ocap.vatboot.endow loads
  -- only when it asks for the first one.
  local endow = setmetatable({}, {
    __index = function(t, k)
      local e = require('ocap.vatboot.endow').make(syscall, ls, log, explain,
        function() return makeLogger(emit, vatId) end)
      setmetatable(t, nil)
      for n, f in pairs(e) do rawset(t, n, f) end
      return e[k]
    end,
  })

  -- A vat makes one liveslots and one ocap table: the code that makes
  -- them (about 7 KiB of prototypes, which the closures they made do not
  -- need) goes with this boot code, as no other code in a vat calls it.
  liveslots.make, api.make = nil, nil
  return ls.dispatch, ocap, endow, ls.dispatchCall, ls.dispatchSettle
end

return M
