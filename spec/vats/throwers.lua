-- Methods that fail in every way a method can, shared by a vat
-- (spec/vats/rejecter.lua) and host code, so the rejection specs can
-- compare what each path makes of the same failure.
local ocap = require 'ocap'

local M = {}

local Guarded = ocap.M.interface('Guarded', { takesString = ocap.M.call(ocap.M.string()) })

--- The kinds of failure, in a fixed order.
M.KINDS = {
  'stringError', 'stringNoPosition', 'multiline', 'errorObject', 'typedError', 'kernelError',
  'customCode', 'plainData', 'number', 'boolean', 'notPassable', 'missingMethod', 'guard',
  'nested',
}

--- Makes the exo that fails, and a guarded one.
function M.make()
  local guarded = ocap.defineExoClass('Guarded', Guarded, function() return {} end, {
    takesString = function() return 'ok' end,
  })()
  local thrower
  thrower = ocap.makeDefaultExo('thrower', {
    stringError = function() error('boom') end,
    stringNoPosition = function() error('boom without position', 0) end,
    multiline = function() error('first line\nsecond line: 12: not a position') end,
    errorObject = function() error(ocap.makeError('bad thing')) end,
    typedError = function() error(ocap.makeError('out of range', 'RangeError')) end,
    kernelError = function() error(ocap.makeError('[KERNEL:OBJECT_DELETED] gone')) end,
    customCode = function() error(ocap.makeError('coded', 'Error', 'MY_CODE')) end,
    plainData = function() error({ code = 7, why = 'data' }) end,
    number = function() error(42) end,
    boolean = function() error(false) end,
    notPassable = function()
      error(setmetatable({}, { __tostring = function() return 'not passable' end }))
    end,
    -- Fails in a method it calls: the position is deeper in the stack.
    nested = function()
      local function inner() error('deep boom') end
      inner()
    end,
  })
  --- Sends kind to the thrower (or the guarded exo) behind target.
  local function send(target, guardedTarget, kind)
    if kind == 'missingMethod' then return ocap.E(target).noSuchMethod() end
    if kind == 'guard' then return ocap.E(guardedTarget).takesString(42) end
    return ocap.E(target)[kind]()
  end
  return thrower, guarded, send
end

--- A plain-data description of a rejection value, so two can be compared
--- after crossing the kernel.
function M.describe(v)
  local ok, style = pcall(ocap.passStyleOf, v)
  if not ok then return { kind = 'not passable', value = tostring(v) } end
  if style == 'error' then
    return { kind = 'error', name = v.name, message = v.message, code = v.code or ocap.null,
      tostring = tostring(v) }
  end
  return { kind = type(v), value = v == nil and ocap.null or v }
end

--- The rejection of p, described.
function M.rejectionOf(p)
  local ok, err = pcall(ocap.await, p)
  if ok then return { kind = 'fulfilled' } end
  return M.describe(err)
end

return M
