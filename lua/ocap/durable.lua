--- Durable exos (prepareExo, prepareExoClass): objects whose refs survive
--- a vat restart, because the vat binds them again to the same vrefs.
---
--- Layout in the vat's store (see docs/storage.md):
---   durable.exo.<name>          -> id of the singleton  (vref o+d2/<id>)
---   durable.kind.<kind>         -> id of the class      (vrefs o+d3/<kindId>:<n>,
---                                  or o+d4/<kindId>:<n>:<facet> for a kit)
---   durable.facets.<kindId>     -> a kit kind's facet names, sorted, comma-separated
---   durable.state.<kindId>:<n>  -> the instance's state (capdata "slots\nbody")
---   durable.next                -> next id
local exo = require 'ocap.exo'
local stores = require 'ocap.stores'

local M = {}

local type, error, tostring, setmetatable, pairs, ipairs, pcall, tonumber = type, error, tostring,
  setmetatable, pairs, ipairs, pcall, tonumber

--- Makes the durable kit of one liveslots instance.
---@param syscall table the vat's syscalls
---@param m table the instance's marshaller
---@param ls table the liveslots instance
function M.make(syscall, m, ls)
  local kit = {}
  local get, set = syscall.vatstoreGet, syscall.vatstoreSet
  local kinds = {}                                   -- kindId -> revive(vref) of a class
  local kitKinds = {}                                -- kindId -> { revive(base), names } of a kit
  local prepared = {}                                -- store key -> true, in this incarnation
  -- Representatives the heap holds: vref (a kit's base) -> instance (kit).
  -- Nothing else holds them strongly, so one nobody uses is collected and
  -- made again from the store when its vref comes back.
  local instances = setmetatable({}, { __mode = 'v' })
  local del = syscall.vatstoreDelete
  local vom = ls.vom()
  -- The representatives used last, held so that a hot instance is not
  -- made again at each use: a ring of RECENT entries, emptied before the
  -- heap is collected at a reap point, so that it never keeps an object
  -- from being deleted.
  local RECENT = 32
  local recent, nrecent = {}, 0 -- luacheck: ignore 241 (it only holds them)
  local function touch(rep)
    nrecent = nrecent % RECENT + 1
    recent[nrecent] = rep
    return rep
  end
  vom.onFlush(function()
    for i = 1, RECENT do recent[i] = nil end
  end)

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

  -- State records as stored, for the instances used last: a new
  -- representative of a hot instance needs no read from the store. Two
  -- generations of at most CACHE_SIZE entries each approximate an LRU.
  local CACHE_SIZE = 64
  local young, old, nyoung = {}, {}, 0
  local function cacheGet(skey)
    local s = young[skey]
    if s then return s end
    s = old[skey]
    if not s then
      s = get(skey)
      if not s then return nil end
    end
    if nyoung >= CACHE_SIZE then young, old, nyoung = {}, young, 0 end
    young[skey] = s
    nyoung = nyoung + 1
    return s
  end
  local function cachePut(skey, s)
    if young[skey] == nil then
      if nyoung >= CACHE_SIZE then young, old, nyoung = {}, young, 0 end
      nyoung = nyoung + 1
    end
    young[skey] = s
    old[skey] = nil
  end
  local function cacheForget(skey)
    if young[skey] ~= nil then nyoung = nyoung - 1 end
    young[skey], old[skey] = nil, nil
  end

  --- The state of one instance (or kit) as context.state: fields read
  --- from the record decoded when its representative was made, each
  --- assignment written to the store at once.
  local function stateFor(kind, skey, enc)
    local record = decode(enc)
    return setmetatable({}, {
      __index = function(_, k) return record[k] end,
      __newindex = function(_, k, v)
        if record[k] == nil then
          error(('%s state has no field %q'):format(kind, tostring(k)), 2)
        end
        local prev = record[k]
        record[k] = v
        local ok, new = pcall(encode, record, kind .. ' state')
        if not ok then
          record[k] = prev -- memory and store stay the same
          error(new, 2)
        end
        vom.changed(cacheGet(skey), new)
        set(skey, new)
        cachePut(skey, new)
      end,
      __pairs = function() return pairs(record) end,
    })
  end

  local function kindIdOf(kind)
    local key = 'durable.kind.' .. kind
    local kindId = get(key)
    if not kindId then
      kindId = tostring(nextId())
      set(key, kindId)
    end
    prepared[key] = true
    return kindId
  end

  --- Makes a new instance's state record and base ref; returns the base.
  local function create(kind, kindId, init, ...)
    local state = init and init(...) or {}
    if type(state) ~= 'table' then error(('%s: init must return a table'):format(kind), 3) end
    local enc = encode(state, kind .. ' state')
    local n = nextId()
    local skey = 'durable.state.' .. kindId .. ':' .. n
    set(skey, enc)
    cachePut(skey, enc)
    vom.changed(nil, enc)
    return n, skey
  end

  --- A durable exo class: instances keep their state in the vat's store,
  --- and come back on demand (after a restart, or once the heap no longer
  --- holds a representative). State fields are read and assigned through
  --- context.state; each assignment is written at once.
  function kit.prepareExoClass(_baggage, kind, guard, init, methods, options)
    if type(kind) ~= 'string' then error('prepareExoClass: kind must be a string', 2) end
    local guards = require 'ocap.guards'
    local kindId = kindIdOf(kind)
    -- options.finish runs each time a representative is made: when the
    -- instance is made, and each time it is paged in again.
    local makeRaw = guards.defineExoClass(kind, guard, function(state) return state end, methods, options)

    local function revive(vref)
      local inst = instances[vref]
      if inst then return touch(inst) end
      local skey = 'durable.state.' .. vref:sub(6)
      local enc = cacheGet(skey)
      if not enc then return nil end
      inst = makeRaw(stateFor(kind, skey, enc))
      ls.bindVref(inst, vref)
      instances[vref] = inst
      return touch(inst)
    end
    kinds[kindId] = revive

    return function(...)
      local n = create(kind, kindId, init, ...)
      local vref = 'o+d3/' .. kindId .. ':' .. n
      vom.created(vref)
      return revive(vref)
    end
  end

  --- The durable form of defineExoClassKit: each kit is one state record,
  --- its facets the vrefs o+d4/<kindId>:<n>:<i>, i numbering the facet
  --- names in sorted order. A kit and its facets live and die together.
  function kit.prepareExoClassKit(_baggage, kind, guardsOf, init, facets, options)
    if type(kind) ~= 'string' then error('prepareExoClassKit: kind must be a string', 2) end
    if type(facets) ~= 'table' then error('prepareExoClassKit: facets must be a table', 2) end
    local guards = require 'ocap.guards'
    local kindId = kindIdOf(kind)
    local names = {}
    for name in pairs(facets) do
      if type(name) ~= 'string' then error('prepareExoClassKit: facet names must be strings', 2) end
      names[#names + 1] = name
    end
    table.sort(names)
    local fkey = 'durable.facets.' .. kindId
    local list = table.concat(names, ',')
    local was = get(fkey)
    if was and was ~= list then
      error(('prepareExoClassKit %q: facets are %s, but the kind was made with %s (a kind keeps '
        .. 'its facets)'):format(kind, list, was), 2)
    end
    if not was then set(fkey, list) end
    local makeRaw = guards.defineExoClassKit(kind, guardsOf, function(state) return state end, facets, options)

    local function revive(base)
      local k = instances[base]
      if k then return touch(k) end
      local skey = 'durable.state.' .. base:sub(6)
      local enc = cacheGet(skey)
      if not enc then return nil end
      k = makeRaw(stateFor(kind, skey, enc))
      for i, name in ipairs(names) do ls.bindVref(k[name], base .. ':' .. i) end
      instances[base] = k
      return touch(k)
    end
    kitKinds[kindId] = { revive = revive, names = names }

    return function(...)
      local n = create(kind, kindId, init, ...)
      local base = 'o+d4/' .. kindId .. ':' .. n
      vom.created(base)
      return revive(base)
    end
  end

  --- The number of facets of the kit base ("o+d4/<kindId>:<n>").
  function kit.facetCount(base)
    local kindId = base:match('^o%+d4/(%d+):')
    local list = kindId and get('durable.facets.' .. kindId)
    if not list then return 0 end
    local n = 1
    for _ in list:gmatch(',') do n = n + 1 end
    return n
  end

  --- Whether the heap still holds a representative of base.
  function kit.hasRep(base)
    return instances[base] ~= nil
  end

  --- Deletes the state of an instance or kit (the manager found nothing
  --- holding it), releasing what the state held.
  function kit.deleteInstance(base)
    local skey = 'durable.state.' .. base:sub(6)
    local enc = get(skey)
    cacheForget(skey)
    if not enc then return end
    del(skey)
    vom.changed(enc, nil)
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
    if inst then return touch(inst) end
    local kindId = vref:match('^o%+d3/(%d+):%d+$')
    if kindId then
      return kinds[kindId] and kinds[kindId](vref)
    end
    local n, i
    kindId, n, i = vref:match('^o%+d4/(%d+):(%d+):(%d+)$')
    local kk = kindId and kitKinds[kindId]
    local name = kk and kk.names[tonumber(i)]
    if not name then return nil end
    local k = kk.revive('o+d4/' .. kindId .. ':' .. n)
    return k and k[name]
  end

  return kit
end

return M
