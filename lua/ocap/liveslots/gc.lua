--- The garbage-collection side of a liveslots instance (docs/gc.md): the
--- counts of references the vat's store holds, the GC deliveries and the
--- work of a reap point. It loads on first use: an idle vat, or one that
--- never receives a GC delivery, an export drop or a store write, never
--- carries this code. ocap.liveslots makes one kit per instance and shares
--- its tables with it.
local M = {}

local ssub = string.sub
local sfind = string.find
local tsort = table.sort
local pairs, ipairs, next, error, tostring, require = pairs, ipairs, next, error, tostring, require

--- Makes the kit of one liveslots instance.
---@param cx table what the instance shares: { syscall,
---  exports, weakExports, valToVref, imports, pinned, reachable, unsaved,
---  dropped, addDropped = function(delta) -> ndropped, SAVED }
function M.make(cx)
  local kits = require('ocap.liveslots.kits')
  local storedCount = kits.storedCount
  local syscall, addDropped = cx.syscall, cx.addDropped
  local exports, weakExports, valToVref, imports = cx.exports, cx.weakExports, cx.valToVref, cx.imports
  local pinned, reachable, unsaved, dropped = cx.pinned, cx.reachable, cx.unsaved, cx.dropped
  local SAVED = cx.SAVED
  local kit = {}

  --- Holds a dropped export strongly again, if the heap still has it.
  local function hold(vref) kits.hold(cx, vref) end

  local vget, vset, vdel = syscall.vatstoreGet, syscall.vatstoreSet, syscall.vatstoreDelete
  -- References held in the vat's store (a store entry, a durable object's
  -- state) hold an import or export as the heap would: the Lua collector
  -- cannot see them, as the store keeps only the vref. Their count per vref
  -- is kept in the store itself, under this prefix, so that it survives a
  -- restart with the data it counts.
  local STORE_REFS = 'gc.rc.'

  --- How many store-held references name vref.
  local function storeRefs(vref)
    if not vget then return 0 end
    return storedCount(vget, STORE_REFS .. vref, 0)
  end

  --- Writes the unsaved imports to the store.
  local function saveImports()
    if not vset or next(unsaved) == nil then return end
    local list = {}
    for vref in pairs(unsaved) do list[#list + 1] = vref end
    tsort(list)
    for i = 1, #list do
      vset(SAVED .. list[i], '1')
      unsaved[list[i]] = nil
    end
  end

  --- Forgets, in the store too, that the kernel counts vref reachable.
  local function unreachable(vref)
    if unsaved[vref] then
      unsaved[vref] = nil
    elseif reachable[vref] and vdel then
      vdel(SAVED .. vref)
    end
    reachable[vref] = nil
  end

  --- Stops holding an export the kernel had us drop: it stays known (and
  --- keeps its vref) for as long as something in the heap holds it. The
  --- root, and an export a store names, stay held: the store keeps only
  --- its vref, which must still lead to the object when the store is read.
  local function release(vref)
    local obj = exports[vref]
    if obj == nil or pinned[vref] or storeRefs(vref) > 0 then return end
    exports[vref] = nil
    weakExports[vref] = obj
  end

  --- Counts a reference to vref that the vat's store gains (delta 1) or
  --- loses (delta -1): the store and durable kits call this for every slot
  --- of a value they write or delete. Promise refs are not counted (durable
  --- state cannot hold promises).
  ---@param vref string
  ---@param delta integer
  function kit.storeRef(vref, delta)
    if ssub(vref, 1, 1) == 'p' or ssub(vref, 1, 2) == 'kp' then return end
    local n = storeRefs(vref) + delta
    if n < 0 then
      error(('store reference count of %s would go below zero'):format(vref), 0)
    end
    if n == 0 then vdel(STORE_REFS .. vref) else vset(STORE_REFS .. vref, tostring(n)) end
    if delta > 0 then
      hold(vref)
      -- A new heap must know an import that only a store may hold.
      if unsaved[vref] then
        vset(SAVED .. vref, '1')
        unsaved[vref] = nil
      end
    elseif n == 0 and dropped[vref] then
      release(vref)
    end
  end
  local storeRef = kit.storeRef

  --- The slots of a stored value ("<slots>\n<body>", as the store kit
  --- encodes it), as a set.
  local function storedSlots(encoded, into)
    if encoded then
      local nl = sfind(encoded, '\n', 1, true) or #encoded + 1
      for slot in ssub(encoded, 1, nl - 1):gmatch('%S+') do into[slot] = (into[slot] or 0) + 1 end
    end
    return into
  end

  --- A stored value changes from old to new (either nil when absent, else
  --- "<slots>\n<body>"): counts the references it gains and loses, once
  --- per vref and value. What the store kits call on every write.
  ---@param old string|nil
  ---@param new string|nil
  function kit.storeRefsChanged(old, new)
    if old == nil and new == nil then return end
    local delta = storedSlots(new, {})
    local gone = storedSlots(old, {})
    for slot, n in pairs(gone) do delta[slot] = (delta[slot] or 0) - n end
    local changed = {}
    for slot, n in pairs(delta) do
      if n ~= 0 then changed[#changed + 1] = slot end
    end
    tsort(changed)
    for _, slot in ipairs(changed) do storeRef(slot, delta[slot]) end
  end

  -- ---- GC deliveries and reap points ----

  --- Whether vref is an export of ours that lives only in the heap: not
  --- pinned (the root), not a durable object or store (those outlive the
  --- heap).
  local function ephemeral(vref)
    return not pinned[vref] and ssub(vref, 1, 3) ~= 'o+d'
  end

  --- dropExports: nobody can reach these exports any more. They stay
  --- recognizable: the heap may still hold them, and may send them again.
  function kit.dropExports(vrefs)
    for i = 1, #vrefs do
      local vref = vrefs[i]
      if not dropped[vref] then
        dropped[vref] = true
        addDropped(1)
        release(vref)
      end
    end
  end

  --- retireExports: nobody can even recognize these exports any more:
  --- forget their vrefs. An object the heap still holds gets a new vref if
  --- it is sent again. A durable object keeps its vref, which is its
  --- identity in the store; so does an object a store names.
  function kit.retireExports(vrefs)
    for i = 1, #vrefs do
      local vref = vrefs[i]
      if dropped[vref] then
        dropped[vref] = nil
        addDropped(-1)
      end
      if ephemeral(vref) and storeRefs(vref) == 0 then
        local obj = exports[vref] or weakExports[vref]
        exports[vref], weakExports[vref] = nil, nil
        if obj ~= nil and valToVref[obj] == vref then valToVref[obj] = nil end
      end
    end
  end

  --- retireImports: the exporter retired these objects; nothing can meet
  --- their vrefs again.
  function kit.retireImports(vrefs)
    for i = 1, #vrefs do
      local vref = vrefs[i]
      unreachable(vref)
      imports[vref] = nil
    end
  end

  --- The imports the heap no longer holds, and that no store names, sorted.
  local function deadImports(all)
    local list = {}
    for vref in pairs(reachable) do
      if (all or imports[vref] == nil) and storeRefs(vref) == 0 then list[#list + 1] = vref end
    end
    tsort(list)
    return list
  end

  --- Drops and retires list: the heap cannot reach these imports, nor, as
  --- nothing in Lua can hold a ref without its presence, recognize them.
  local function releaseImports(list)
    if #list == 0 then return end
    local retire = {}
    for i = 1, #list do retire[i] = list[i] end
    syscall.dropImports(list)
    syscall.retireImports(retire)
  end

  --- What a reap point reports once the heap was collected: imports whose
  --- presence was collected and that no store names are dropped and
  --- retired; dropped exports the heap no longer holds are retired. virtual
  --- lists the virtual objects the vom kit deleted that the kernel may
  --- still recognize. Each list is sorted, so that the syscalls depend on
  --- what the heap holds, not on table order.
  ---@param virtual string[]
  function kit.reaped(virtual)
    if #virtual > 0 then
      for i = 1, #virtual do
        if dropped[virtual[i]] then
          dropped[virtual[i]] = nil
          addDropped(-1)
        end
      end
      tsort(virtual)
      if syscall.retireExports then syscall.retireExports(virtual) end
    end
    if syscall.dropImports then
      local list = deadImports(false)
      for i = 1, #list do unreachable(list[i]) end
      releaseImports(list)
      saveImports()
    end
    if syscall.retireExports and addDropped(0) > 0 then
      local list = {}
      for vref in pairs(dropped) do
        if exports[vref] == nil and weakExports[vref] == nil and ephemeral(vref) then list[#list + 1] = vref end
      end
      if #list > 0 then
        tsort(list)
        for i = 1, #list do dropped[list[i]] = nil end
        addDropped(-#list)
        syscall.retireExports(list)
      end
    end
  end

  --- stopVat: this heap is about to go (an upgrade replaces it). Its
  --- ephemeral exports are abandoned, and the imports only it held are
  --- released; what the store holds stays for the next incarnation, which
  --- finds the imports the store names among the saved ones. The tables
  --- are left as they are, so that a heap put back after a failed upgrade
  --- still agrees with the kernel and the store, whose writes are undone.
  function kit.stopVat()
    if syscall.abandonExports then
      local seen, list = {}, {}
      for _, t in ipairs({ exports, weakExports, dropped }) do
        for vref in pairs(t) do
          if not seen[vref] and ssub(vref, 1, 2) == 'o+' and ephemeral(vref) then
            seen[vref] = true
            list[#list + 1] = vref
          end
        end
      end
      tsort(list)
      if #list > 0 then syscall.abandonExports(list) end
    end
    if syscall.dropImports then
      local list = deadImports(true)
      releaseImports(list)
      if vdel then
        for i = 1, #list do
          if not unsaved[list[i]] then vdel(SAVED .. list[i]) end
        end
      end
    end
  end

  return kit
end

return M
