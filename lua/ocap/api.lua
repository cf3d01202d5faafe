--- The public `ocap` table shared by vats, kernel services and hosts.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local exo = require 'ocap.exo'
local liveslots = require 'ocap.liveslots'

local M = {}

-- The ocap table's fields that load on first touch (ocap.guards' M,
-- defineExoClass and defineExoClassKit: most vats never use them, and the
-- module is the runtime's largest; and ocap.pass's symbol, bytes, bigint,
-- makeTagged and array, the last so that the table's sixteen other fields
-- fit a hash part of 16 slots), and the context's ocap.marshal, are C (core/lruntime.c):
-- a vat keeps them, and C functions cost it no prototype. The require and
-- pcall are captured when the runtime loads, before any vat code runs: a
-- vat that replaces its global require cannot change what they load.
local C = require 'ocap.smallcaps'
local lazyFields = C.ocapFields(pass, require, pcall)
local contextMarshal = C.contextMarshal
local pairs, setmetatable = pairs, setmetatable

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
    passStyleOf = pass.passStyleOf,
    -- ocap.marshal: the marshal module, plus serialize/unserialize through
    -- the context's marshaller (the vat's, or the host's latest kernel),
    -- so slots are vrefs in a vat and krefs on the host.
    marshal = contextMarshal(marshal, currentMarshal),
  }
  for k, v in pairs(extra or {}) do ocap[k] = v end
  return setmetatable(ocap, lazyFields)
end

return M
