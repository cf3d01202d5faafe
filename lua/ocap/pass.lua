--- Pass styles: what a value is when it crosses a vat boundary.
--
-- This module knows the special values of the passable world (`null`,
-- marked arrays, error values, hardened tables) and which remotables and
-- promises exist, registered by identity in weak-keyed tables by the modules
-- that make them (exos, presences, promises). It never requires those
-- modules, so any of them may require it at load time.
--
-- Conventions:
-- 1. Non-passables are refused with an error whose message starts with
--    `cannot pass`, raised at level 0 (no file position): the message is for
--    the user whose value it is, not about this file.
-- 2. A hardened table is an empty proxy whose contents live in a shadow
--    table; `contents(t)` returns that shadow, and every reader that must see
--    the data raw (marshal, classify) goes through it.
-- 3. Array marks, the error metatable and hardened metatables are ours; any
--    other metatable makes a table non-passable.
-- 4. Arrays: a table whose keys are exactly 1..k, or one with an integer
--    `n` and other keys all integers within 1..n (what `table.pack` makes;
--    missing entries are nil), or one marked by `array()`. A table whose
--    only key is `n` is a record (`{ n = 2 }` is data far more often than
--    `table.pack(nil, nil)`); `array(nil, nil)` is the array of two nils.
--    The empty plain table is the empty record.

local M = {}

local type = type
local next = next
local getmetatable = getmetatable
local setmetatable = setmetatable
local rawset = rawset
local require = require
local tostring = tostring
local select = select
local error = error
local match = string.match

local function weakKeys()
  return setmetatable({}, { __mode = 'k' })
end

local remotables = weakKeys() -- obj -> iface string
local promises = weakKeys()   -- promise -> true
local shadows = weakKeys()    -- hardened proxy -> shadow table holding its contents

local function refuse()
  error('cannot modify hardened table', 2)
end

-- null ---------------------------------------------------------------------

--- The passable JSON `null` (distinct from `nil`, which is `undefined`).
M.null = setmetatable({}, {
  __name = 'ocap.null',
  __tostring = function() return 'null' end,
  __newindex = function() error('cannot modify null', 2) end,
  __metatable = 'null',
})
local NULL = M.null

---@param v any
---@return boolean
function M.isNull(v)
  return v == NULL
end

-- arrays -------------------------------------------------------------------

-- The mark of an array whose shape alone does not say so (the empty array,
-- an array with nils counted by `n`); marshal puts it on every array it
-- decodes. Its fields cannot be added to.
local ARRAY_MT = setmetatable({ __name = 'ocap.array' }, {
  __newindex = function() error('cannot modify the array metatable', 2) end,
  __metatable = false,
})
M.ARRAY_MT = ARRAY_MT

--- Makes a table marked as an array, so that it encodes as a JSON array
--- even when empty. Nil arguments are counted: the table gets `n` when any
--- argument is nil (like `table.pack`).
---@param ... any elements
---@return table
function M.array(...)
  local t = { ... }
  local n = select('#', ...)
  for i = 1, n do
    if t[i] == nil then
      t.n = n
      break
    end
  end
  return setmetatable(t, ARRAY_MT)
end

-- errors -------------------------------------------------------------------

-- What `getmetatable` returns for an error value: a private identity, so the
-- shared metatable cannot be reached or forged.
local ERROR_TAG = setmetatable({}, { __name = 'ocap.error', __metatable = false, __newindex = refuse })
local ERROR_MT = {
  __name = 'ocap.error',
  __metatable = ERROR_TAG,
  __tostring = function(e)
    return tostring(e.name) .. ': ' .. tostring(e.message)
  end,
}

--- The code of a kernel error message `[KERNEL:<CODE>] detail`, or nil.
---@param message string
---@return string|nil code e.g. `OBJECT_REVOKED` or `VAT_FATAL:METER_EXHAUSTED`
function M.kernelErrorCode(message)
  if type(message) ~= 'string' then return nil end
  local code = match(message, '^%[KERNEL:VAT_FATAL:([%u_]+)%]')
  if code then return 'VAT_FATAL:' .. code end
  return match(message, '^%[KERNEL:([%u_]+)%]')
end
local kernelErrorCode = M.kernelErrorCode

--- Makes an error value: `{ message, name, code }` whose `tostring` is
--- `"<name>: <message>"`. When `code` is not given it is derived from a
--- `[KERNEL:<CODE>] ` message prefix.
---@param message any converted with `tostring` when not a string; nil gives ''
---@param name? string default 'Error'
---@param code? string
---@return table
function M.makeError(message, name, code)
  if message == nil then
    message = ''
  elseif type(message) ~= 'string' then
    message = tostring(message)
  end
  if name == nil then
    name = 'Error'
  elseif type(name) ~= 'string' then
    error('error name must be a string, got ' .. type(name), 2)
  end
  if code == nil then code = kernelErrorCode(message) end
  return setmetatable({ message = message, name = name, code = code }, ERROR_MT)
end

---@param v any
---@return boolean
function M.isError(v)
  return type(v) == 'table' and getmetatable(v) == ERROR_TAG
end

-- OCapN atoms and tagged values ----------------------------------------------

-- Symbols, byte arrays, integers beyond 64 bits and tagged values: empty
-- tables whose contents (`{ style = ..., fields }`) live here, made by
-- ocap.pass.boxes. That module is loaded on first need (M.symbol, ...),
-- so that a vat that never uses them does not carry it.
local boxes = weakKeys()
local boxKit

local BOX_FIELDS = { symbol = true, bytes = true, bigint = true, makeTagged = true, box = true }

local function loadBoxes()
  if boxKit == nil then
    boxKit = require('ocap.pass.boxes')(boxes, M)
    for k in next, BOX_FIELDS do rawset(M, k, boxKit[k]) end
  end
  return boxKit
end

setmetatable(M, {
  __index = function(_, k)
    if BOX_FIELDS[k] then return loadBoxes()[k] end
    return nil
  end,
})

-- remotables and promises --------------------------------------------------

--- Registers `obj` (a table or userdata) as a remotable with interface name
--- `iface` (e.g. `'Alleged: counter'`; default `'Remotable'`, as in Endo).
---@param obj table|userdata
---@param iface? string
---@return table|userdata obj
function M.registerRemotable(obj, iface)
  local t = type(obj)
  if t ~= 'table' and t ~= 'userdata' then
    error('registerRemotable: expected a table or userdata, got ' .. t, 2)
  end
  if iface == nil then
    iface = 'Remotable'
  elseif type(iface) ~= 'string' then
    error('registerRemotable: iface must be a string', 2)
  end
  if M.isPromise(obj) then error('registerRemotable: object is already a promise', 2) end
  remotables[obj] = iface
  return obj
end

--- The interface name a remotable was registered with, or nil.
---@param obj any
---@return string|nil
function M.remotableIface(obj)
  return remotables[obj]
end

---@param v any
---@return boolean
function M.isRemotable(v)
  return remotables[v] ~= nil
end

--- Registers `p` (a table or userdata) as a promise.
---@param p table|userdata
---@return table|userdata p
function M.registerPromise(p)
  local t = type(p)
  if t ~= 'table' and t ~= 'userdata' then
    error('registerPromise: expected a table or userdata, got ' .. t, 2)
  end
  if remotables[p] then error('registerPromise: object is already a remotable', 2) end
  promises[p] = true
  return p
end

---@param v any
---@return boolean
-- Promises made by ocap.promise are recognised by their metatable, which
-- saves a weak-table entry per promise on the hot path.
local promiseMT

--- Declares mt as the metatable of promises (ocap.promise does, once).
function M.registerPromiseMetatable(mt)
  promiseMT = mt
  if M.codec then M.codec.setPromiseMetatable(mt) end
end

function M.isPromise(v)
  return promises[v] == true or (promiseMT ~= nil and type(v) == 'table' and getmetatable(v) == promiseMT)
end
local isPromiseValue = M.isPromise

-- the C codec -----------------------------------------------------------------

-- ocap.smallcaps (core/lsmallcaps.c), when this Lua state has it (vats and
-- hosts built with ocap do), made with the private tables above so that it
-- tells pass styles apart exactly as classify does. ocap.marshal uses it
-- and keeps its Lua codec as the reference. The codec gives no power: it
-- reaches slots only through the caller's valToSlot and slotToVal.
local hasCodec, smallcaps = pcall(require, 'ocap.smallcaps')
if hasCodec and type(smallcaps) == 'table' then
  M.codec = smallcaps.new({
    remotables = remotables,
    promises = promises,
    shadows = shadows,
    arrayMT = ARRAY_MT,
    errorTag = ERROR_TAG,
    null = NULL,
    makeError = M.makeError,
  })
end

-- harden -------------------------------------------------------------------

local function hardenedLen(t)
  return #shadows[t]
end

local function hardenedPairs(t)
  return next, shadows[t], nil
end

local function hardenTable(t)
  if shadows[t] or remotables[t] or isPromiseValue(t) or t == NULL then return end
  local mt = getmetatable(t)
  if mt ~= nil and mt ~= ARRAY_MT then return end -- errors, foreign objects
  local shadow = {}
  -- Clearing fields while traversing is allowed by `next`.
  for k, v in next, t do
    shadow[k] = v
    t[k] = nil
  end
  if mt == ARRAY_MT then setmetatable(shadow, ARRAY_MT) end
  -- Registered before recursing, so that cycles terminate.
  shadows[t] = shadow
  setmetatable(t, {
    __name = 'ocap.hardened',
    __index = shadow,
    __newindex = refuse,
    __len = hardenedLen,
    __pairs = hardenedPairs,
    __metatable = 'hardened',
  })
  for _, v in next, shadow do
    if type(v) == 'table' then hardenTable(v) end
  end
end

--- Deep-freezes plain data in place and returns it. A hardened table reads
--- as before (indexing, `#`, `pairs`, `ipairs`), but any assignment raises
--- `cannot modify hardened table` and `setmetatable` on it fails. `next`
--- and `rawget` see it empty (use `contents`); `rawset` cannot be stopped.
--- Remotables, promises, errors, null and tables with a foreign metatable
--- are left as they are. Idempotent; cycles terminate.
---@generic T
---@param v T
---@return T
function M.harden(v)
  if type(v) == 'table' then hardenTable(v) end
  return v
end

--- True for a hardened table, a remotable or promise, null, a symbol,
--- byte array, big integer or tagged value, and any
--- non-table value (those cannot be changed through the value itself).
---@param v any
---@return boolean
function M.isFrozen(v)
  if type(v) ~= 'table' then return true end
  return shadows[v] ~= nil or remotables[v] ~= nil or isPromiseValue(v) or v == NULL or boxes[v] ~= nil
end

--- The table holding the contents of a hardened table, or `t` itself.
---@param t table
---@return table
function M.contents(t)
  return shadows[t] or t
end

-- classification -----------------------------------------------------------

-- The code that classifies tables (classify, passStyleOf, isArray) is
-- ocap.pass.style, loaded on first use: the C codec classifies what a vat
-- sends, so a vat that never asks for a pass style does not carry it. It
-- gets the private tables above from here, through the require captured
-- when this module loaded (a vat that replaces its global require cannot
-- change what loads).
local styleKit
local function style()
  if not styleKit then
    styleKit = require('ocap.pass.style').make({
      remotables = remotables, shadows = shadows, boxes = boxes, loadBoxes = loadBoxes,
      isPromise = isPromiseValue, arrayMT = ARRAY_MT, errorTag = ERROR_TAG, null = NULL,
    })
  end
  return styleKit
end

--- Classifies a table or userdata. Returns one of:
--- `'copyArray', length, contents` (length counts nils when `n` is set);
--- `'copyRecord', keys, contents` (keys unsorted, nil when there are none);
--- `'remotable'`, `'promise'`, `'error'`, `'null'`;
--- `'symbol'`, `'byteArray'`, `'bigint'` or `'tagged'` with the box's
--- contents (see `box`);
--- or `nil, message` for a non-passable. `contents` is the table to read
--- (the shadow of a hardened table).
---@param t table|userdata
---@return string|nil style
---@return any
---@return table|nil contents
function M.classify(t) return style().classify(t) end

--- The pass style of `v`: `'undefined'`, `'null'`, `'boolean'`, `'number'`,
--- `'bigint'` (an integer beyond ±2^53, or a `bigint` box), `'string'`,
--- `'symbol'`, `'byteArray'`, `'copyArray'`, `'copyRecord'`, `'tagged'`,
--- `'remotable'`, `'promise'` or `'error'`. Raises
--- `cannot pass ...` for anything else. Does not look inside containers
--- beyond their keys and does not detect cycles (marshal does).
---@param v any
---@return string
function M.passStyleOf(v) return style().passStyleOf(v) end

--- True when `v` passes as an array (marked or by its shape).
---@param v any
---@return boolean
function M.isArray(v) return style().isArray(v) end

return M
