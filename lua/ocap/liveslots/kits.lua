--- The cold parts of a liveslots instance that an idle vat never runs:
--- the store, durable and virtual-object kits (ocap.stores, ocap.durable,
--- ocap.vom) and the GC kit (ocap.liveslots.gc), made on first use; the
--- baggage shell's metamethods until the store kit takes it over; the
--- store or durable object behind an "o+d" vref; a dropped export sent
--- again; a presence's metamethods; and the reading of counts kept in the
--- vat's store.
---
--- ocap.liveslots reaches each function through a C trampoline
--- (ocap.smallcaps' lazy), which loads this module on its first call and
--- passes the instance's shared table (cx) first: a Lua function a vat
--- keeps costs it its prototype, a trampoline 96 bytes and no code.
local M = {}

local error, tostring, tonumber, require = error, tostring, tonumber, require
local ssub, sfind, sfmt = string.sub, string.find, string.format
local tointeger = math.tointeger

local COUNT_MAX <const> = 9007199254740991 -- 2^53 - 1

--- Raises what storedCount says of a stored count that is not one: the
--- key is named, with the start of what it holds.
---@param key string
---@param v string
function M.corruptCount(key, v)
  error(sfmt('corrupt database: vat store key %q holds %q, which is not a count (a decimal integer '
    .. 'from 0 to 2^53 - 1)', key, #v > 40 and ssub(v, 1, 40) .. '...' or v), 0)
end

--- Reads a count or id the runtime keeps in the vat's store (dflt when
--- absent). Such values are decimal integers from 0 to 2^53 - 1; anything
--- else means the database was damaged, and the key is named rather than
--- the value used (a garbled id counter would hand out ids again).
---@param get fun(key: string): string|nil the vatstoreGet syscall
---@param key string
---@param dflt integer
---@return integer
function M.storedCount(get, key, dflt)
  local v = get(key)
  if v == nil then return dflt end
  local n = #v <= 16 and not sfind(v, '^0%d') and sfind(v, '^%d+$') and tointeger(tonumber(v))
  if not n or n > COUNT_MAX then M.corruptCount(key, v) end
  return n
end

-- ---- The kits, made on first use (cx.storeKit, durableKit, vomKit, gcKit) ----

--- cx[field], made by make(cx) and kept there on first use.
local function made(cx, field, make)
  local k = cx[field]
  if not k then
    k = make(cx)
    cx[field] = k
  end
  return k
end

local function makeStores(cx)
  return require('ocap.stores').make(cx.syscall, cx.ls.marshal, cx.ls, cx.bag, cx.bagMeta)
end
local function makeDurable(cx) return require('ocap.durable').make(cx.syscall, cx.ls.marshal, cx.ls) end
local function makeVom(cx) return require('ocap.vom').make(cx.syscall, cx.ls) end
local function makeGc(cx) return require('ocap.liveslots.gc').make(cx) end

--- The instance's store kit (ocap.stores), which takes over the baggage
--- shell the instance made (cx.bag, cx.bagMeta).
function M.stores(cx) return made(cx, 'storeKit', makeStores) end

--- The instance's durable kit (ocap.durable).
function M.durable(cx) return made(cx, 'durableKit', makeDurable) end

--- The instance's virtual object manager (ocap.vom): counts what holds
--- each store and durable instance, and deletes those nothing holds at
--- reap points.
function M.vom(cx) return made(cx, 'vomKit', makeVom) end

--- The instance's GC kit (ocap.liveslots.gc): store-held reference
--- counts, the GC deliveries, what a reap reports.
function M.gc(cx) return made(cx, 'gcKit', makeGc) end

--- The store or durable object an "o+d" vref designates, or nil.
function M.durableObject(cx, vref)
  if ssub(vref, 1, 5) == 'o+d1/' then return M.stores(cx).fromVref(vref) end
  local kit = cx.durableKit
  return kit and kit.fromVref(vref)
end

--- Holds an export strongly again (exports), if the heap still has it
--- (weakExports): the kernel has it back, or the host pinned it.
function M.hold(cx, vref)
  local weakExports = cx.weakExports
  local obj = weakExports[vref]
  if obj ~= nil then
    cx.exports[vref] = obj
    weakExports[vref] = nil
  end
end

--- Holds each dropped export among slots strongly again: slots go to the
--- kernel in a message or a resolution, and a dropped export among them
--- is reachable again.
function M.resent(cx, slots)
  local dropped = cx.dropped
  for i = 1, #slots do
    local vref = slots[i]
    if dropped[vref] then
      dropped[vref] = nil
      cx.addDropped(-1)
      M.hold(cx, vref)
    end
  end
end

-- ---- Metamethods ----
-- Each runs behind a trampoline, a C function: an error's level counts
-- it, so level 3 names the code that touched the object.

--- The baggage shell's __index: loads the store kit, which makes the
--- shell a store, and reads the store.
function M.bagIndex(cx, _, k)
  M.stores(cx)
  return cx.bag[k]
end

--- The baggage shell's __newindex, as a store's.
function M.bagRefuse()
  error('cannot modify a store object', 3)
end

--- The baggage shell's __tostring, as a store's.
function M.bagString()
  return 'MapStore(baggage)'
end

--- A presence's __index: its methods are called through E().
function M.presenceIndex(presenceInfo, self, k)
  error(sfmt('cannot call %s on %s directly: use E(presence).%s(...)', tostring(k),
    M.presenceString(presenceInfo, self), tostring(k)), 3)
end

--- A presence's __newindex.
function M.presenceRefuse()
  error('cannot modify a presence', 3)
end

--- A presence's __tostring.
function M.presenceString(presenceInfo, self)
  local info = presenceInfo[self]
  return sfmt('[Presence %s]', info and info.iface or '?')
end

return M
