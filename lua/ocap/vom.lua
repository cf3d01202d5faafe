--- The virtual object manager: reference counts, export status and
--- deletion of the virtual objects a vat keeps in its store (durable
--- stores and durable exo class instances), so that those nobody can
--- reach any more are deleted at the vat's reap point.
---
--- A virtual object is kept while any of these holds it:
---   - the state of another virtual object, or an entry of a store
---     (baggage included), as a value or as a remotable key: the count of
---     store-held references liveslots keeps (`gc.rc.<vref>`, through
---     ls.storeRef / ls.storeRefsChanged);
---   - the kernel, while the object is exported and the kernel has not
---     dropped it: its export status, `vom.es.<vref>` = "r" (reachable)
---     or "s" (only recognizable, after dropExports);
---   - an in-memory representative, which the kits keep in weak tables.
--- An object that may have lost its last holder is marked
--- `vom.dirty.<base>`; reap() looks at each marked object and deletes
--- those that no longer have any holder.
---
--- The base of a vref is the object whose state it designates: the vref
--- itself, except for the facets of a durable kit (`o+d4/K:N:F`), whose
--- base is `o+d4/K:N`: a kit is held while any of its facets is.
local M = {}

local ssub, sfind, smatch, sbyte = string.sub, string.find, string.match, string.byte

local ES, DIRTY = 'vom.es.', 'vom.dirty.'

--- Units of work (objects or store entries deleted) per reap.
M.REAP_BUDGET = 10000

--- The base of a vref that can be deleted, or nil (baggage, durable
--- singletons, imports, ephemeral exports, promises).
local function baseOf(vref)
  local p = ssub(vref, 1, 5)
  if p == 'o+d3/' then return vref end
  if p == 'o+d1/' then
    if vref == 'o+d1/1' then return nil end
    return vref
  end
  if p == 'o+d4/' then return smatch(vref, '^(o%+d4/%d+:%d+)') end
end
M.baseOf = baseOf

--- Calls f on each slot of an encoded value ("<slots>\n<body>").
local function eachSlot(enc, f)
  if not enc then return end
  local nl = sfind(enc, '\n', 1, true)
  if not nl or nl == 1 then return end
  for slot in ssub(enc, 1, nl - 1):gmatch('%S+') do f(slot) end
end
M.eachSlot = eachSlot

--- Makes the virtual object manager of one liveslots instance.
---@param syscall table the vat's syscalls (vatstoreGet/Set/Delete/Next)
---@param ls table the liveslots instance (ls.stores(), ls.durable())
function M.make(syscall, ls)
  local get, set, del, nextKey = syscall.vatstoreGet, syscall.vatstoreSet, syscall.vatstoreDelete,
    syscall.vatstoreNext
  local storedCount = require('ocap.liveslots.kits').storedCount
  local vom = {}
  local RC = 'gc.rc.' -- liveslots' count of store-held references

  local function markDirty(base)
    set(DIRTY .. base, '1')
  end

  -- A database written before this manager existed holds objects whose
  -- export status was never recorded: the kernel may hold any of them.
  -- `vom.since` keeps the durable and store ids handed out when the
  -- manager first ran in this vat; an older object without a status
  -- counts as exported (held) until the kernel drops it, and one the
  -- kernel retired is recorded as "n" (never exported).
  local since = get('vom.since')
  if not since then
    since = storedCount(get, 'durable.next', 1) .. ' ' .. storedCount(get, 'storeNext', 2)
    set('vom.since', since)
  end
  local durableSince, storeSince = since:match('^(%d+) (%d+)$')
  durableSince, storeSince = tonumber(durableSince), tonumber(storeSince)
  if not durableSince then
    error(('corrupt database: vat store key "vom.since" holds %q, which is not two counts'):format(
      since:sub(1, 40)), 0)
  end

  --- Whether base was made before export statuses were recorded.
  local function legacy(base)
    if ssub(base, 1, 5) == 'o+d1/' then return tonumber(ssub(base, 6)) < storeSince end
    return tonumber(smatch(base, ':(%d+)$')) < durableSince
  end

  --- The export status of vref: "r" (the kernel reaches it), "s" (it can
  --- only recognize it), or nil (the kernel does not know it).
  local function exportStatus(vref, base)
    local es = get(ES .. vref)
    if es == nil then
      if legacy(base) then return 'r' end
      return nil
    end
    if es == 'n' then return nil, true end
    return es, true
  end

  --- The vrefs that share base's fate: its facets for a kit.
  local function vrefsOf(base)
    if ssub(base, 1, 5) ~= 'o+d4/' then return { base } end
    local out = {}
    for i = 1, ls.durable().facetCount(base) do out[i] = base .. ':' .. i end
    return out
  end

  --- The number of references virtual data holds to base (for a kit: to
  --- any of its facets).
  local function refCount(base)
    if ssub(base, 1, 5) ~= 'o+d4/' then return storedCount(get, RC .. base, 0) end
    local n = 0
    local vrefs = vrefsOf(base)
    for i = 1, #vrefs do n = n + storedCount(get, RC .. vrefs[i], 0) end
    return n
  end
  vom.refCount = refCount

  --- Marks the virtual object vref belongs to if nothing in virtual data
  --- holds it any more.
  local function released(vref)
    local base = baseOf(vref)
    if base and refCount(base) == 0 then markDirty(base) end
  end

  --- A stored value changes from old to new (either may be nil: a value
  --- made or deleted): liveslots counts the references gained and lost,
  --- and the objects that lost their last one are marked.
  function vom.changed(old, new)
    if (old == nil or sbyte(old, 1) == 10) and (new == nil or sbyte(new, 1) == 10) then return end
    ls.storeRefsChanged(old, new)
    eachSlot(old, released)
  end

  --- A remotable store key ("r<vref>") gained (delta 1) or lost (-1).
  function vom.keyRef(vref, delta)
    ls.storeRef(vref, delta)
    if delta < 0 then released(vref) end
  end

  --- Caches of representatives register here: they are emptied before
  --- the heap is collected at a reap point (flush).
  local flushers = {}
  function vom.onFlush(f) flushers[#flushers + 1] = f end
  function vom.flush()
    for i = 1, #flushers do flushers[i]() end
  end

  --- A new virtual object: nothing holds it yet, so it is a candidate for
  --- the next reap (which keeps it if something holds it by then).
  function vom.created(base)
    markDirty(base)
  end

  --- The kernel learned vref (it left the vat in a message or a
  --- resolution): the kernel now holds it.
  function vom.exported(vref)
    if not baseOf(vref) then return end
    local key = ES .. vref
    if get(key) ~= 'r' then set(key, 'r') end
  end

  --- dispatch('dropExports'): the kernel no longer reaches these; they
  --- stay recognizable until retired.
  function vom.dropExports(vrefs)
    for i = 1, #vrefs do
      local vref = vrefs[i]
      local base = baseOf(vref)
      if base and exportStatus(vref, base) == 'r' then
        set(ES .. vref, 's')
        markDirty(base)
      end
    end
  end

  --- dispatch('retireExports'): the kernel forgot these altogether.
  function vom.retireExports(vrefs)
    for i = 1, #vrefs do
      local vref = vrefs[i]
      local base = baseOf(vref)
      if base and exportStatus(vref, base) then
        if legacy(base) then set(ES .. vref, 'n') else del(ES .. vref) end
        markDirty(base)
      end
    end
  end

  local function hasRep(base)
    if ssub(base, 1, 5) == 'o+d1/' then return ls.stores().hasRep(base) end
    return ls.durable().hasRep(base)
  end

  --- Deletes base if nothing holds it, within budget units of work (an
  --- instance is one unit, a store one per entry). Returns the units
  --- used, 0 when base is still held (its mark is then removed, or kept
  --- while a representative lives). A store too big for the budget is
  --- deleted over several reaps: it keeps its mark until its last entry
  --- is gone. Vrefs the kernel still recognizes are added to retire.
  local function collect(base, retire, budget)
    if hasRep(base) then return 0 end
    if refCount(base) > 0 then
      del(DIRTY .. base)
      return 0
    end
    local vrefs = vrefsOf(base)
    local status, stored = {}, {}
    for i = 1, #vrefs do
      status[i], stored[i] = exportStatus(vrefs[i], base)
      if status[i] == 'r' then
        del(DIRTY .. base)
        return 0
      end
    end
    for i = 1, #vrefs do
      if status[i] then retire[#retire + 1] = vrefs[i] end
      if stored[i] then del(ES .. vrefs[i]) end
    end
    local used, done = 1, true
    if ssub(base, 1, 5) == 'o+d1/' then
      done, used = ls.stores().deleteStore(base, budget)
    else
      ls.durable().deleteInstance(base)
    end
    if done then del(DIRTY .. base) end
    return used
  end

  --- Units of work one reap may do at most (see collect): the rest waits
  --- for the next reap, so that a reap stays well inside a delivery's
  --- meter however much was dropped.
  vom.budget = M.REAP_BUDGET

  --- The reap point: deletes the marked objects that nothing holds any
  --- more, and the objects only they held, and so on, up to vom.budget
  --- units of work. Call it once the vat's heap has been collected, so
  --- that representatives nobody holds are gone from the kits' weak
  --- tables. Objects still represented in memory stay marked, for a
  --- later reap.
  ---@return string[] vrefs the vat must retire (syscall.retireExports):
  ---  deleted objects the kernel could still recognize
  function vom.reap()
    local retire = {}
    local budget = vom.budget
    -- Deleting marks what the deleted held: scan again until a scan
    -- deletes nothing. Each scan streams the marks, so that a reap of a
    -- million objects holds none of them in memory at once.
    repeat
      local deleted, after = false, nil
      while budget > 0 do
        local key = nextKey(DIRTY, after)
        if not key then break end
        after = key
        local used = collect(ssub(key, #DIRTY + 1), retire, budget)
        if used > 0 then
          deleted = true
          budget = budget - used
        end
      end
    until not deleted or budget <= 0
    return retire
  end

  return vom
end

return M
