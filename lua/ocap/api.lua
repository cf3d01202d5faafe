--- The public `ocap` table shared by vats, kernel services and hosts.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local exo = require 'ocap.exo'
local liveslots = require 'ocap.liveslots'

local M = {}

--- Builds an ocap table; `extra` adds context-specific fields.
---@param extra table|nil
function M.make(extra)
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
    marshal = marshal,
  }
  local ok, guards = pcall(require, 'ocap.guards')
  if ok and type(guards) == 'table' then
    ocap.M = guards.M
    ocap.defineExoClass = guards.defineExoClass
    ocap.defineExoClassKit = guards.defineExoClassKit
  end
  for k, v in pairs(extra or {}) do ocap[k] = v end
  return ocap
end

return M
