--- Smallcaps capdata: Lua values to `{ body = '#...', slots = {...} }` and back.
--
-- Bodies are byte for byte what @endo/marshal's smallcaps format produces
-- for the corresponding JavaScript value; `ocap.pass` says which Lua value
-- is which pass style.
--
-- Conventions:
-- 1. The C codec (`pass.codec`, core/lsmallcaps.c) does the work wherever
--    the Lua state has it: in every vat, and on hosts built with ocap. It
--    answers nil or false for what it leaves to the Lua codec
--    (`ocap.marshal.reference`): every error, which the Lua codec raises
--    with its message and the path to the value, and rare inputs. So both
--    give the same bodies, values and errors (spec/smallcaps_spec.lua
--    compares them on many values).
-- 2. The Lua codec is loaded on first need, so a vat that sends only
--    passable values never carries it; where the C module is missing it
--    is the whole codec. Its file states the format's rules in detail.
-- 3. `marshal.reference` is the Lua codec's own interface (makeMarshal,
--    serializeData, unserializeData), for comparing the two.

local M = {}

local pass = require 'ocap.pass'

local type = type
local byte = string.byte
local error = error

local reference
local function ref()
  local r = reference
  if r == nil then
    r = require 'ocap.marshal.reference'
    reference = r
  end
  return r
end

local codec = pass.codec

if codec == nil then
  local r = ref()
  M.serializeData = r.serializeData
  M.unserializeData = r.unserializeData
  M.makeMarshal = r.makeMarshal
  M.formatNumber = r.formatNumber
  M.jsonString = r.jsonString
  M.reference = r
  return M
end

local c_encode, c_encodeCall, c_decode = codec.encode, codec.encodeCall, codec.decode

--- JSON.stringify of a string (without the smallcaps `!` escape).
---@param s string
---@return string
function M.jsonString(s)
  return ref().jsonString(s)
end

--- Formats a number as JavaScript's `Number.prototype.toString` does
--- (`1e+21`, `1.5e-7`, `0.000001`, `-0` is `0`, `NaN`, `Infinity`).
---@param x number
---@return string
function M.formatNumber(x)
  return ref().formatNumber(x)
end

-- The checks the Lua decoder makes first, with its messages.
local function checkCapdata(capdata)
  if type(capdata) ~= 'table' then
    error('capdata must be a table, got ' .. type(capdata), 0)
  end
  local body, slots = capdata.body, capdata.slots
  if type(body) ~= 'string' then error('capdata body must be a string', 0) end
  if byte(body, 1) ~= 35 then error('capdata body must start with "#" (smallcaps)', 0) end
  if slots ~= nil and type(slots) ~= 'table' then error('capdata slots must be a table', 0) end
  return body, slots
end

local function unserializeWith(capdata, slotToVal)
  local body, slots = checkCapdata(capdata)
  local ok, v = c_decode(body, slots, slotToVal)
  if ok then return v end
  return ref().unserialize(capdata, slotToVal)
end

--- Serializes slot-free data; a remotable or promise is an error.
---@param v any a passable without capabilities
---@return { body: string, slots: string[] }
function M.serializeData(v)
  return c_encode(v) or ref().serialize(v, nil)
end

--- Unserializes capdata that has no slot references.
---@param capdata { body: string, slots?: string[] }
---@return any
function M.unserializeData(capdata)
  return unserializeWith(capdata, nil)
end

---@alias ocap.ValToSlot fun(v: any, style: 'remotable'|'promise'): string
---@alias ocap.SlotToVal fun(slot: string, iface: string|nil, style: 'remotable'|'promise'): any

--- Makes a marshaller. Within one `serialize` call, each remotable or
--- promise gets one slot (`valToSlot` is called once per object); within one
--- `unserialize` call, `slotToVal` is called once per slot index, with the
--- iface the body gives it (nil for promises).
---@param valToSlot ocap.ValToSlot
---@param slotToVal ocap.SlotToVal
---@return { serialize: fun(v: any): { body: string, slots: string[] }, unserialize: fun(capdata: table): any }
function M.makeMarshal(valToSlot, slotToVal)
  if type(valToSlot) ~= 'function' or type(slotToVal) ~= 'function' then
    error('makeMarshal(valToSlot, slotToVal): both must be functions', 2)
  end
  return {
    serialize = function(v)
      return c_encode(v, valToSlot) or ref().serialize(v, valToSlot)
    end,
    unserialize = function(capdata)
      return unserializeWith(capdata, slotToVal)
    end,
    --- unserialize of { body = body } (no slots), with no capdata table:
    --- a durable store's value that holds no refs, read at every get.
    unserializeBody = function(body)
      if type(body) == 'string' then
        local ok, v = c_decode(body, nil, slotToVal)
        if ok then return v end
      end
      return unserializeWith({ body = body }, slotToVal)
    end,
    --- serialize of the methargs array {method, args}, for sends.
    serializeCall = function(method, args)
      return c_encodeCall(method, args, valToSlot) or ref().serializeCall(method, args, valToSlot)
    end,
  }
end

-- marshal.reference loads the Lua codec when first read.
return setmetatable(M, {
  __index = function(t, k)
    if k ~= 'reference' then return nil end
    local r = ref()
    rawset(t, k, r)
    return r
  end,
})
