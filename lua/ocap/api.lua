--- The public `ocap` table shared by vats, kernel services and hosts.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local exo = require 'ocap.exo'
local liveslots = require 'ocap.liveslots'

local M = {}

-- Captured when the runtime loads, before any vat code runs: a vat that
-- replaces its global require cannot change what the lazy fields load.
local require, pcall, pairs, type, rawget, rawset = require, pcall, pairs, type, rawget, rawset

-- The ocap fields ocap.guards provides. Most vats never use them, and the
-- module is the runtime's largest, so a vat loads it on first touch.
local GUARD_FIELDS = { M = true, defineExoClass = true, defineExoClassKit = true }

-- The ocap fields of symbols, byte arrays, big integers and tagged values,
-- which ocap.pass loads on first touch too.
local BOX_FIELDS = { symbol = true, bytes = true, bigint = true, makeTagged = true }

local lazyFields = {
  __index = function(ocap, k)
    if BOX_FIELDS[k] then
      local f = pass[k]
      rawset(ocap, k, f)
      return f
    end
    if not GUARD_FIELDS[k] then return nil end
    local ok, guards = pcall(require, 'ocap.guards')
    if not ok or type(guards) ~= 'table' then return nil end
    for name in pairs(GUARD_FIELDS) do
      if rawget(ocap, name) == nil then rawset(ocap, name, guards[name]) end
    end
    return rawget(ocap, k)
  end,
}

--- ocap.marshal: the marshal module, plus serialize/unserialize through
--- the context's marshaller (the vat's, or the host's latest kernel), so
--- slots are vrefs in a vat and krefs on the host.
local function contextMarshal(current)
  return setmetatable({
    serialize = function(v)
      local mm = current and current()
      if mm then return mm.serialize(v) end
      return marshal.serializeData(v)
    end,
    unserialize = function(capdata)
      local mm = current and current()
      if mm then return mm.unserialize(capdata) end
      return marshal.unserializeData(capdata)
    end,
  }, { __index = marshal })
end

--- Builds an ocap table; `extra` adds context-specific fields, and
--- `currentMarshal` gives the context's marshaller.
---@param extra table|nil
---@param currentMarshal fun(): table|nil
function M.make(extra, currentMarshal)
  local ocap = {
    E = liveslots.E,
    await = promise.await,
    spawn = promise.spawn,
    makePromiseKit = promise.makePromiseKit,
    isPromise = promise.isPromise,
    Promise = {
      resolve = promise.resolve,
      reject = promise.reject,
      all = promise.all,
      allSettled = promise.allSettled,
      race = promise.race,
      any = promise.any,
    },
    makeDefaultExo = exo.makeDefaultExo,
    harden = pass.harden,
    makeError = pass.makeError,
    null = pass.null,
    array = pass.array,
    passStyleOf = pass.passStyleOf,
    marshal = contextMarshal(currentMarshal),
  }
  for k, v in pairs(extra or {}) do ocap[k] = v end
  return setmetatable(ocap, lazyFields)
end

return M
