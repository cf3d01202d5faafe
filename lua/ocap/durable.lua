--- Durable exos (prepareExo, prepareExoClass): objects whose refs survive
--- a vat restart, because the vat binds them again to the same vrefs.
---
--- Layout in the vat's store (see docs/storage.md):
---   durable.exo.<name>          -> id of the singleton  (vref o+d2/<id>)
---   durable.kind.<kind>         -> id of the class      (vrefs o+d3/<kindId>:<n>)
---   durable.state.<kindId>:<n>  -> the instance's state (capdata "slots\nbody")
---   durable.next                -> next id
local exo = require 'ocap.exo'
local stores = require 'ocap.stores'

local M = {}

local type, error, tostring, setmetatable, pairs = type, error, tostring, setmetatable, pairs

--- Makes the durable kit of one liveslots instance.
---@param syscall table the vat's syscalls
---@param m table the instance's marshaller
---@param ls table the liveslots instance
function M.make(syscall, m, ls)
  local kit = {}
  local get, set = syscall.vatstoreGet, syscall.vatstoreSet
  local kinds = {}                                   -- kindId -> { make = fn(vref) }
  local prepared = {}                                -- store key -> true, in this incarnation
  local instances = setmetatable({}, { __mode = 'v' }) -- vref -> instance

  local function nextId()
    local id = stores.storedCount(get, 'durable.next', 1)
    set('durable.next', tostring(id + 1))
    return id
  end

  -- Durable state refuses promises, as durable stores do (stores.lua).
  local encode = stores.durableEncoder(ls)
  local function decode(s) return stores.decodeValue(m, s) end

  --- A durable singleton exo: the same vref in every incarnation.
  function kit.prepareExo(_baggage, name, methods)
    if type(name) ~= 'string' then error('prepareExo: name must be a string', 2) end
    local key = 'durable.exo.' .. name
    local id = get(key)
    if not id then
      id = tostring(nextId())
      set(key, id)
    end
    prepared[key] = true
    local vref = 'o+d2/' .. id
    local old = instances[vref]
    if old then return old end
    local obj = exo.makeDefaultExo(name, methods)
    ls.exportAs(obj, vref)
    instances[vref] = obj
    return obj
  end

  --- A durable exo class: instances keep their state in the vat's store,
  --- and come back on demand after a restart. State fields are read and
  --- assigned through context.state; each assignment is written at once.
  function kit.prepareExoClass(_baggage, kind, guard, init, methods, options)
    if type(kind) ~= 'string' then error('prepareExoClass: kind must be a string', 2) end
    local guards = require 'ocap.guards'
    local key = 'durable.kind.' .. kind
    local kindId = get(key)
    if not kindId then
      kindId = tostring(nextId())
      set(key, kindId)
    end
    prepared[key] = true
    local makeRaw = guards.defineExoClass(kind, guard, function(state) return state end, methods, options)

    local function stateFor(vref)
      local skey = 'durable.state.' .. vref:sub(6)
      local current = get(skey)
      local record = decode(current or '\n#{}')
      return setmetatable({}, {
        __index = function(_, k) return record[k] end,
        __newindex = function(_, k, v)
          if record[k] == nil then
            error(('%s state has no field %q'):format(kind, tostring(k)), 2)
          end
          local old = record[k]
          record[k] = v
          local ok, enc = pcall(encode, record, kind .. ' state')
          if not ok then
            record[k] = old -- memory and store stay the same
            error(enc, 2)
          end
          set(skey, enc)
          -- The objects the state names are held by it (liveslots, docs/gc.md).
          ls.storeRefsChanged(current, enc)
          current = enc
        end,
        __pairs = function() return pairs(record) end,
      })
    end

    local function revive(vref)
      local inst = instances[vref]
      if inst then return inst end
      if not get('durable.state.' .. vref:sub(6)) then return nil end
      inst = makeRaw(stateFor(vref))
      ls.exportAs(inst, vref)
      instances[vref] = inst
      return inst
    end
    kinds[kindId] = revive

    return function(...)
      local state = init and init(...) or {}
      if type(state) ~= 'table' then error(('%s: init must return a table'):format(kind), 2) end
      local enc = encode(state, kind .. ' state')
      local vref = 'o+d3/' .. kindId .. ':' .. nextId()
      set('durable.state.' .. vref:sub(6), enc)
      ls.storeRefsChanged(nil, enc)
      return revive(vref)
    end
  end

  --- The durable singletons and kinds an earlier incarnation defined that
  --- this one has not prepared yet, as `exo "<name>"` / `kind "<kind>"`,
  --- in store order. An upgrade fails unless this is empty once
  --- buildRootObject returns: an object of such a kind would otherwise be
  --- unreachable in the new incarnation while its holders keep its ref.
  ---@return string[]
  function kit.unprepared()
    local out = {}
    for _, family in ipairs({ { 'durable.exo.', 'exo' }, { 'durable.kind.', 'kind' } }) do
      local prefix, after = family[1], nil
      while true do
        local key = syscall.vatstoreNext(prefix, after)
        if not key then break end
        after = key
        if not prepared[key] then out[#out + 1] = ('%s %q'):format(family[2], key:sub(#prefix + 1)) end
      end
    end
    return out
  end

  --- The durable object a vref designates, if its kind has been prepared.
  function kit.fromVref(vref)
    local inst = instances[vref]
    if inst then return inst end
    local kindId = vref:match('^o%+d3/(%d+):%d+$')
    if kindId and kinds[kindId] then return kinds[kindId](vref) end
  end

  return kit
end

return M
