--- Durable MapStores (baggage and ocap.makeScalarMapStore) kept in the
--- vat's part of the kernel database through the vatstore syscalls, so
--- their writes commit or roll back with the crank.
---
--- Layout under the vat's prefix (see docs/storage.md):
---   vc.<id>.<encoded key>  -> "<slots>\n<body>" of the value
---   vc.<id>|size           -> number of entries
---   vc.<id>|label          -> the store's label
---   storeNext              -> next store id (1 is baggage)
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'

local M = {}

local type, error, tostring, setmetatable, tonumber, pcall, next = type, error, tostring,
  setmetatable, tonumber, pcall, next
local spack, sunpack, sfmt, ssub, sbyte = string.pack, string.unpack, string.format, string.sub, string.byte
local concat = table.concat
local mtype = math.type
-- The C codec's encoder of plain data, where the state has it (always in
-- a vat): the body the marshaller makes, without its capdata tables.
local cEncodeParts = pass.codec and pass.codec.encodeParts

-- 2^53: integers within it are safe (exact as doubles).
local SAFE <const> = 9007199254740992

local BAGGAGE_ID = 1

-- Counts are read as liveslots reads its id counters, which it does
-- without this module (loaded on a vat's first touch of a store).
M.storedCount = require('ocap.liveslots.kits').storedCount
local storedCount = M.storedCount

--- Encodes a key so that byte order sorts keys: booleans ("b"), then
--- numbers ("n"), then remotables ("r"), then strings ("s"), each in its
--- natural order. Numbers are their IEEE double made sortable; an integer
--- beyond 2^53, which shares its double with neighbours, also carries its
--- exact value (offset by 2^63, so the decimal digits sort too).
local function encodeNumber(n)
  local u = sunpack('>I8', spack('>d', n))
  if u < 0 then
    u = ~u                  -- a negative double: every bit flipped
  else
    u = u ~ math.mininteger -- a positive one: the sign bit flipped
  end
  return sfmt('%016x', u)
end

local function decodeNumber(hex)
  local u = tonumber(hex, 16) -- 64 bits: the top one makes it negative
  if u < 0 then
    u = u ~ math.mininteger
  else
    u = ~u
  end
  local n = sunpack('>d', spack('>i8', u))
  local i = math.tointeger(n)
  return i or n
end

--- A value as stored: "<slots>\n<body>" of its capdata through marshaller m.
local function encodeValue(m, v)
  local cd = m.serialize(v)
  local slots = cd.slots
  if slots[1] == nil then return '\n' .. cd.body end
  return concat(slots, ' ') .. '\n' .. cd.body
end
M.encodeValue = encodeValue

-- Raised by the durable marshaller's valToSlot when it meets a promise.
local PROMISE_FOUND = setmetatable({}, { __tostring = function() return 'promise in durable state' end })

local function keyPath(k)
  if type(k) == 'string' then
    if k:match('^[%a_][%w_]*$') then return '.' .. k end
    return sfmt('[%q]', k)
  end
  return '[' .. tostring(k) .. ']'
end

--- The path from root to the first promise inside it ("" for root itself),
--- searched depth first through plain tables only.
local function promisePath(root)
  local seen = {}
  local function visit(v)
    if pass.isPromise(v) then return '' end
    if type(v) ~= 'table' or seen[v] or pass.isRemotable(v) then return nil end
    seen[v] = true
    for k, x in next, pass.contents(v) do
      local rest = visit(x)
      if rest then return keyPath(k) .. rest end
    end
  end
  return visit(root)
end

--- Makes the encoder of durable state for one liveslots instance: it
--- encodes as the instance's marshaller does, but refuses a promise
--- anywhere in the value before exporting it. A promise kept in durable
--- state could never settle after a restart (the vat that was to decide it
--- is gone, and nothing subscribes again), so, as Endo's durable stores
--- do, ocap refuses it when it is stored rather than hang later.
---@param ls table the liveslots instance (exports remotables)
---@return fun(v: any, where: string): string encode raises "cannot store a promise in <where> ..."
function M.durableEncoder(ls)
  local dm = marshal.makeMarshal(function(v, style)
    if style == 'promise' then error(PROMISE_FOUND, 0) end
    -- Storing a ref does not export it: a virtual object the kernel has
    -- never seen stays collectable (ocap.vom).
    return ls.refOf(v) or ls.export(v)
  end, function() error('the durable encoder does not decode', 0) end)
  return function(v, where)
    -- Only a table can hold a promise, and only a userdata be one:
    -- anything else is encoded without the pcall (a vat's pcall is
    -- metered, and most values stored are plain), raising what encoding
    -- raises as the pcall would. The C codec encodes it as the marshaller
    -- would (it leaves what it cannot encode, errors included, to the
    -- marshaller).
    local tv = type(v)
    if tv ~= 'table' and tv ~= 'userdata' then
      local body = cEncodeParts and cEncodeParts(v)
      if body then return '\n' .. body end
      return encodeValue(dm, v)
    end
    local ok, enc = pcall(encodeValue, dm, v)
    if ok then return enc end
    if enc ~= PROMISE_FOUND then error(enc, 0) end
    local path = promisePath(v)
    error(('cannot store a promise in %s%s: durable state cannot hold promises (a promise '
      .. 'would never settle after a restart); await it and store its value'):format(
      where, (path and path ~= '') and (' (at ' .. path .. ')') or ''), 0)
  end
end

--- Whether v is a value whose encoding holds no refs and decodes to v
--- itself: a boolean, a short string or a safe integer.
local function plain(v)
  local t = type(v)
  if t == 'boolean' then return true end
  if t == 'string' then return #v <= 64 end
  return mtype(v) == 'integer' and v <= SAFE and v >= -SAFE
end

--- The inverse of encodeValue.
local function decodeValue(m, s)
  -- Most values hold no refs: "\n<body>", with no slots to parse.
  if sbyte(s, 1) == 10 then
    local body = ssub(s, 2)
    -- The reference codec (no C core) has no unserializeBody.
    if m.unserializeBody then return m.unserializeBody(body) end
    return m.unserialize({ body = body })
  end
  local nl = s:find('\n', 1, true)
  local slots = {}
  for slot in s:sub(1, nl - 1):gmatch('%S+') do slots[#slots + 1] = slot end
  return m.unserialize({ body = s:sub(nl + 1), slots = slots })
end
M.decodeValue = decodeValue

--- Makes the store kit of one liveslots instance.
---@param syscall table the vat's syscalls (vatstoreGet/Set/Delete/Next)
---@param m table the instance's marshaller
---@param ls table the liveslots instance (for refs of remotable keys)
---@param bag table|nil the baggage liveslots made before this kit, if any
---@param bagMeta table|nil its metatable, which becomes a store's
function M.make(syscall, m, ls, bag, bagMeta)
  local kit = {}
  -- Representatives the heap holds, as for durable instances: a store
  -- nobody uses is collected and made again from its id.
  local byId = setmetatable({}, { __mode = 'v' })
  local idOf = setmetatable({}, { __mode = 'k' })
  local get, set, del, nextKey = syscall.vatstoreGet, syscall.vatstoreSet, syscall.vatstoreDelete,
    syscall.vatstoreNext
  local vom = ls.vom()

  local function encodeKey(k)
    local t = type(k)
    if t == 'string' then return 's' .. k end
    if t == 'number' then
      if k ~= k then error('store keys cannot be NaN', 3) end
      local e = 'n' .. encodeNumber(k)
      if math.type(k) == 'integer' and (k > 2 ^ 53 or k < -2 ^ 53) then
        e = e .. '.' .. sfmt('%016x', k ~ math.mininteger)
      end
      return e
    end
    if t == 'boolean' then return k and 'b1' or 'b0' end
    if pass.isRemotable(k) then
      local ref = ls.refOf(k) or ls.export(k)
      return 'r' .. ref
    end
    error(('invalid store key %s: keys are strings, numbers, booleans or remotables'):format(
      tostring(k)), 3)
  end

  local function decodeKey(e)
    local c = ssub(e, 1, 1)
    if c == 's' then return ssub(e, 2) end
    if c == 'n' then
      if #e > 17 then return tonumber(ssub(e, 19), 16) ~ math.mininteger end
      return decodeNumber(ssub(e, 2, 17))
    end
    if c == 'b' then return e == 'b1' end
    return ls.presenceFor(ssub(e, 2))
  end

  local function describe(k)
    if type(k) == 'string' then return sfmt('%q', k) end
    return tostring(k)
  end

  local storeMT = bagMeta and bagMeta.__metatable or {}
  -- Raises, without a position as marshal errors do, when a value cannot
  -- be stored.
  local encodeFor = M.durableEncoder(ls)

  -- The plain values (see plain) this heap last stored under a few keys,
  -- with their encodings: a get that finds the same encoding in the store
  -- returns the value without decoding it, and a set over it knows the old
  -- value held no refs (a counter in baggage, read and written at every
  -- call). The store stays the truth: only an exact match of what it
  -- holds is taken, so a write by anyone else is simply decoded.
  local plainEnc, plainVal, nplain = {}, {}, 0
  local PLAIN_KEYS = 64
  -- How many string keys a store remembers the store keys of (keyOf).
  local MEMO_KEYS <const> = 32
  local function remember(key, enc, v)
    if plainEnc[key] == nil then
      if nplain >= PLAIN_KEYS then
        plainEnc, plainVal, nplain = {}, {}, 0
      end
      nplain = nplain + 1
    end
    plainEnc[key], plainVal[key] = enc, v
  end

  local function makeStore(id, label, obj, meta)
    local prefix = 'vc.' .. id .. '.'
    local sizeKey = 'vc.' .. id .. '|size'
    local store = {}
    local function size() return storedCount(get, sizeKey, 0) end
    -- The store keys of the last few short string keys used, made on
    -- first use: a key read and written at every call (a counter in
    -- baggage) is built once.
    local keys, nkeys = nil, 0
    local function keyOf(k)
      local key = keys and keys[k]
      if key then return key end
      key = prefix .. encodeKey(k)
      if type(k) == 'string' and #k <= 64 then
        if not keys or nkeys >= MEMO_KEYS then keys, nkeys = {}, 0 end
        keys[k] = key
        nkeys = nkeys + 1
      end
      return key
    end
    function store.has(_, k)
      return get(keyOf(k)) ~= nil
    end
    function store.init(_, k, v)
      local key = keyOf(k)
      if get(key) ~= nil then
        error(('key %s already registered in %s'):format(describe(k), label), 2)
      end
      local enc = encodeFor(v, label)
      set(key, enc)
      set(sizeKey, tostring(size() + 1))
      if plain(v) then
        remember(key, enc, v)
      else
        vom.changed(nil, enc)
      end
      if ssub(key, #prefix + 1, #prefix + 1) == 'r' then vom.keyRef(ssub(key, #prefix + 2), 1) end
    end
    function store.get(_, k)
      local key = keyOf(k)
      local s = get(key)
      if s == nil then error(('key %s not found in %s'):format(describe(k), label), 2) end
      if s == plainEnc[key] then return plainVal[key] end
      return decodeValue(m, s)
    end
    function store.set(_, k, v)
      local key = keyOf(k)
      local old = get(key)
      if old == nil then error(('key %s not found in %s'):format(describe(k), label), 2) end
      local enc = encodeFor(v, label)
      set(key, enc)
      if plain(v) then
        -- A plain value over a plain one changes no counts of refs.
        if old ~= plainEnc[key] then vom.changed(old, enc) end
        remember(key, enc, v)
      else
        if plainEnc[key] ~= nil then plainEnc[key] = nil end
        vom.changed(old, enc)
      end
    end
    function store.delete(_, k)
      local key = keyOf(k)
      local old = get(key)
      if old == nil then error(('key %s not found in %s'):format(describe(k), label), 2) end
      del(key)
      set(sizeKey, tostring(size() - 1))
      vom.changed(old, nil)
      if ssub(key, #prefix + 1, #prefix + 1) == 'r' then vom.keyRef(ssub(key, #prefix + 2), -1) end
    end
    function store.getSize() return size() end
    local function iter(which)
      local after
      return function()
        local key = nextKey(prefix, after)
        if key == nil then return nil end
        after = key
        local k = decodeKey(ssub(key, #prefix + 1))
        if which == 'keys' then return k end
        local v = decodeValue(m, get(key))
        if which == 'values' then return v end
        return k, v
      end
    end
    function store.keys() return iter('keys') end
    function store.values() return iter('values') end
    function store.entries() return iter('entries') end
    meta = meta or {}
    meta.__index = store
    meta.__newindex = function() error('cannot modify a store object', 2) end
    meta.__tostring = function() return 'MapStore(' .. label .. ')' end
    meta.__metatable = storeMT
    if not obj then
      obj = setmetatable({}, meta)
      pass.registerRemotable(obj, 'Alleged: mapStore')
    end
    byId[id] = obj
    idOf[obj] = id
    ls.bindVref(obj, 'o+d1/' .. id)
    return obj
  end

  --- The store of that id, or nil when it does not exist (any more).
  local function provide(id)
    local s = byId[id]
    if s then return s end
    local label = get('vc.' .. id .. '|label')
    if not label then return nil end
    return makeStore(id, label)
  end

  --- The vat's baggage (store 1).
  function kit.baggage()
    if get('vc.' .. BAGGAGE_ID .. '|label') == nil then
      set('vc.' .. BAGGAGE_ID .. '|label', 'baggage')
    end
    return provide(BAGGAGE_ID)
  end

  --- A new durable store; it persists as long as it is reachable from baggage.
  function kit.makeScalarMapStore(label)
    label = label or 'mapStore'
    if type(label) ~= 'string' then error('makeScalarMapStore: label must be a string', 2) end
    local id = storedCount(get, 'storeNext', 2)
    set('storeNext', tostring(id + 1))
    set('vc.' .. id .. '|label', label)
    vom.created('o+d1/' .. id)
    return makeStore(id, label)
  end

  --- Whether the heap still holds the store "o+d1/<id>".
  function kit.hasRep(vref)
    return byId[tonumber(vref:sub(6))] ~= nil
  end

  --- Deletes a store nothing holds any more (ocap.vom), releasing what
  --- its entries held, keys and values: at most budget entries at a
  --- time. Returns whether the store is gone, and the work done (entries
  --- deleted, at least 1).
  ---@return boolean done
  ---@return integer used
  function kit.deleteStore(vref, budget)
    local id = tonumber(vref:sub(6))
    if id == BAGGAGE_ID then return true, 1 end
    local prefix = 'vc.' .. id .. '.'
    local used = 0
    while true do
      local key = nextKey(prefix, nil)
      if not key then break end
      if used >= budget then return false, used end
      local old = get(key)
      del(key)
      vom.changed(old, nil)
      if ssub(key, #prefix + 1, #prefix + 1) == 'r' then vom.keyRef(ssub(key, #prefix + 2), -1) end
      used = used + 1
    end
    del('vc.' .. id .. '|size')
    del('vc.' .. id .. '|label')
    byId[id] = nil
    return true, math.max(used, 1)
  end

  --- The vref of a store ("o+d1/<id>"), or nil when v is not one of ours.
  function kit.vrefOf(v)
    local id = idOf[v]
    if id then return 'o+d1/' .. id end
  end

  --- The store a vref designates, or nil.
  function kit.fromVref(vref)
    local id = vref:match('^o%+d1/(%d+)$')
    if id then return provide(tonumber(id)) end
  end

  kit.isStore = function(v) return idOf[v] ~= nil end
  if bag then makeStore(BAGGAGE_ID, get('vc.' .. BAGGAGE_ID .. '|label') or 'baggage', bag, bagMeta) end
  return kit
end

return M
