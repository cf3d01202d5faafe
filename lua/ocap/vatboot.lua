--- Boots liveslots inside a vat's Lua state. The kernel calls
--- boot(syscall, info) once, then dispatch(...) for every delivery.
local liveslots = require 'ocap.liveslots'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local api = require 'ocap.api'

local M = {}

-- Captured before any vat code runs, so that a vat which replaces its
-- global require cannot change what the lazy logger below loads.
local require, rawset, setmetatable = require, rawset, setmetatable

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

-- The endowments a vat may request (VatConfig.globals), by the words Lua
-- uses when code calls or indexes one that is absent.
local MISSING = {
  ["global 'print'"] = 'print', ["global 'setTimeout'"] = 'setTimeout',
  ["global 'clearTimeout'"] = 'clearTimeout', ["global 'setInterval'"] = 'setInterval',
  ["global 'clearInterval'"] = 'clearInterval', ["global 'os'"] = 'os',
  ["field 'time'"] = 'os.time', ["field 'clock'"] = 'os.clock', ["field 'date'"] = 'os.date',
  ["field 'random'"] = 'math.random',
}

--- Adds to a Lua error about an absent endowment which VatConfig.globals
--- entry would provide it. Absent endowments stay nil to read, so code
--- may test for them; only the error of using one says more.
---@param env table the vat's globals
---@param message any
local function explainMissing(env, message)
  if type(message) ~= 'string' then return message end
  local what = message:match('attempt to %a+ a nil value %(([^)]*)%)')
  local name = what and MISSING[what]
  if not name then return message end
  local lib, fn = name:match('^(%a+)%.(%a+)$')
  if lib then
    -- A field of that name is an endowment's only if that library lacks it.
    local t = rawget(env, lib)
    if t ~= nil and (type(t) ~= 'table' or rawget(t, fn) ~= nil) then return message end
  elseif rawget(env, name) ~= nil then
    return message
  end
  local add = name == 'os' and '"os.time", "os.clock" or "os.date"' or ('"%s"'):format(name)
  return ('%s: %s is an endowment this vat did not request; add %s to VatConfig.globals')
    :format(message, lib and (lib .. '.' .. fn) or name, add)
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
    -- A vat starts once: its state can drop this code.
    ls.startVat = nil
    return true
  end

  -- Endowments a vat may ask for (VatConfig.globals); the kernel installs
  -- the requested ones as globals.
  local endow = {}
  local vatLogger
  function endow.print(...)
    local n = select('#', ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    vatLogger = vatLogger or makeLogger(emit, vatId)
    vatLogger:log(table.concat(parts, '\t'))
  end
  local timers, nextTimer = {}, 1
  local function startTimer(fn, ms, repeating, ...)
    if type(fn) ~= 'function' then error('setTimeout: callback must be a function', 3) end
    ms = tonumber(ms) or 0
    local id = nextTimer
    nextTimer = nextTimer + 1
    timers[id] = { fn = fn, args = table.pack(...), repeating = repeating }
    syscall.timerStart(id, ms, repeating and math.max(ms, 1) or 0)
    return id
  end
  local function clearTimer(id)
    if timers[id] then
      timers[id] = nil
      syscall.timerStop(id)
    end
  end
  function endow.setTimeout(fn, ms, ...) return startTimer(fn, ms, false, ...) end
  function endow.setInterval(fn, ms, ...) return startTimer(fn, ms, true, ...) end
  endow.clearTimeout = clearTimer
  endow.clearInterval = clearTimer

  -- Liveslots' dispatch is the vat's, so that a delivery goes through no
  -- extra call; it hands timer deliveries to this.
  function ls.onTimer(id)
    local t = timers[id]
    if not t then return end
    if not t.repeating then timers[id] = nil end
    local p = promise.spawn(t.fn, table.unpack(t.args, 1, t.args.n))
    promise.onSettle(p, function(ok, err)
      if not ok then
        log('error', 'timer callback failed: ' .. tostring(liveslots.normalizeError(explain(err))))
      end
    end)
    promise.drain()
    ls.saveCounters()
  end

  return ls.dispatch, ocap, endow
end

return M
