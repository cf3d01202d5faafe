--- What a vat's boot hands out but a vat seldom runs: the runtime's log
--- (a method that failed, an unhandled rejection), the advice added to an
--- error about an absent endowment, vatPowers' exitVat and
--- exitVatWithFailure, and the logger behind vatPowers.logger.
--- ocap.vatboot hands out C trampolines (core/lruntime.c) that load this
--- module on their first call and call its functions with the vat's
--- context { syscall, vatId, env, ls }, so an idle vat keeps none of this
--- code.
local marshal = require 'ocap.marshal'
local liveslots = require 'ocap.liveslots'

local M = {}

local require, pairs, type, pcall, tostring = require, pairs, type, pcall, tostring

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

-- A log entry of the vat's, to the kernel.
local function emit(ctx, entry)
  local payload = marshal.serializeData(plainData({
    tags = entry.tags, message = entry.message, data = entry.data,
  }, {}))
  ctx.syscall.log(entry.level, payload.body)
end

--- The runtime's own log, tagged `liveslots`.
function M.log(ctx, level, message, data)
  emit(ctx, { level = level, tags = { 'liveslots' }, message = message, data = data and { data, n = 1 } })
end

--- What the vat hears of a rejection nothing handled.
function M.unhandled(ctx, reason)
  M.log(ctx, 'warn', 'unhandled rejection: ' .. tostring(reason))
end

--- Adds to a Lua error about an absent endowment which VatConfig.globals
--- entry would provide it (ocap.vatboot.explain, loaded on the first
--- error that may be one).
function M.explain(ctx, message)
  if type(message) ~= 'string' or not message:find('a nil value', 1, true) then return message end
  return require('ocap.vatboot.explain').explainMissing(ctx.env, message)
end

--- A logger whose entries go to the kernel (ocap.logger loads with it).
function M.makeLogger(ctx)
  return require('ocap.logger').make(function(entry) emit(ctx, entry) end, {}, ctx.vatId)
end

--- vatPowers.exitVat(value).
function M.exitVat(ctx, value)
  local cd = ctx.ls.marshal.serialize(value)
  ctx.syscall.exit(false, cd.body)
end

--- vatPowers.exitVatWithFailure(reason).
function M.exitVatWithFailure(ctx, reason)
  local cd = ctx.ls.marshal.serialize(liveslots.normalizeError(reason))
  ctx.syscall.exit(true, cd.body)
end

--- Makes vatPowers.logger, the table t, a logger like makeLogger's
--- (core/lruntime.c hands t out empty, and calls this on its first use).
function M.fillLogger(ctx, t)
  require('ocap.logger').make(function(entry) emit(ctx, entry) end, {}, ctx.vatId, t)
end

return M
