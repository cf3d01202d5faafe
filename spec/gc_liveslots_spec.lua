-- Garbage collection in liveslots (docs/gc.md, "What a vat can rely on"):
-- first through liveslots.make with a fake syscall table that records
-- every syscall (which imports a reap point drops and retires, which
-- exports it retires, and what it never lets go of), then end to end
-- through a kernel, whose figures must come back to where they were.
local liveslots = require 'ocap.liveslots'
local exo = require 'ocap.exo'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local E = liveslots.E

local GC_CALLS = { dropImports = true, retireImports = true, retireExports = true, abandonExports = true }

--- A syscall table that records what liveslots asks of the kernel, with a
--- vat store in a Lua table.
local function fakeSyscall()
  local calls, store = {}, {}
  local sc = { calls = calls, store = store }
  local function record(name)
    return function(...)
      local entry = { name, ... }
      if GC_CALLS[name] then entry[2] = { table.unpack(entry[2]) } end
      calls[#calls + 1] = entry
    end
  end
  for _, name in ipairs({ 'send', 'subscribe', 'resolve', 'dropImports', 'retireImports', 'retireExports',
    'abandonExports' }) do
    sc[name] = record(name)
  end
  function sc.vatstoreGet(k) return store[k] end
  function sc.vatstoreSet(k, v) store[k] = v end
  function sc.vatstoreDelete(k) store[k] = nil end
  function sc.vatstoreNext(prefix, after)
    local best
    for k in pairs(store) do
      if k:sub(1, #prefix) == prefix and (not after or k > after) and (not best or k < best) then best = k end
    end
    return best
  end
  --- The GC syscalls made so far, as { name, vrefs } pairs, and forgets them.
  function sc.gc()
    local out = {}
    for _, c in ipairs(calls) do
      if GC_CALLS[c[1]] then out[#out + 1] = { c[1], c[2] } end
    end
    for i = #calls, 1, -1 do calls[i] = nil end
    return out
  end
  --- The slots of the last resolve syscall.
  function sc.lastResolved()
    for i = #calls, 1, -1 do
      if calls[i][1] == 'resolve' then return calls[i][5], calls[i][2], calls[i][3] end
    end
  end
  return sc
end

local function collect()
  collectgarbage()
  collectgarbage()
end

--- A vat whose root keeps what it is given in `kept` until told to forget.
local function makeVat(sc, kind)
  local ls = liveslots.make({ syscall = sc, vatId = 'v1', kind = kind or 'vat', collect = collect,
    allocObject = kind == 'kernel' and (function()
      local n = 100
      return function()
        n = n + 1
        return 'ko' .. n
      end
    end)() or nil,
    allocPromise = kind == 'kernel' and (function()
      local n = 100
      return function()
        n = n + 1
        return 'kp' .. n
      end
    end)() or nil })
  local vat = { ls = ls, kept = {}, made = {} }
  local root = exo.makeDefaultExo('root', {
    ignore = function() end,
    keep = function(_, x) vat.kept[#vat.kept + 1] = x end,
    forget = function() vat.kept = {} end,
    make = function(_, name) return exo.makeDefaultExo(name or 'thing', {}) end,
    makeKept = function(_, name)
      local t = exo.makeDefaultExo(name or 'kept', {})
      vat.made[#vat.made + 1] = t
      return t
    end,
    forgetMade = function() vat.made = {} end,
    resendMade = function() return vat.made[1] end,
    -- Holds x only on the stack of a coroutine that awaits p.
    awaitWith = function(_, x, p)
      local got = promise.await(p)
      return { x, got }
    end,
    store = function(_, x) vat.baggage:init('kept', x) end,
    unstore = function() vat.baggage:delete('kept') end,
  })
  ls.exportAs(root, kind == 'kernel' and 'ko1' or 'o+0')
  vat.baggage = ls.baggage()
  return vat
end

--- Delivers root.method(...) whose arguments are the given slots (as
--- presences or promises, in order) followed by extra plain values.
local function deliver(vat, method, slots, resultVpid, target)
  local args = {}
  for i, slot in ipairs(slots) do
    args[i] = slot:match('^k?p') and ('"&%d"'):format(i - 1) or ('"$%d.Alleged: thing"'):format(i - 1)
  end
  local body = ('#["%s",[%s]]'):format(method, table.concat(args, ','))
  vat.ls.dispatch('message', target or 'o+0', body, slots, resultVpid)
end

local function boyd(vat, sc)
  vat.ls.dispatch('bringOutYourDead')
  return sc.gc()
end

describe('liveslots GC: imports', function()
  it('drops and retires, at a reap point only, a presence the heap let go of', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'ignore', { 'o-1' })
    collect()
    -- Nothing is reported between reap points, whatever the collector did.
    assert.same({}, sc.gc())
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, boyd(vat, sc))
    -- Once only.
    assert.same({}, boyd(vat, sc))
  end)

  it('keeps a presence the heap holds, and drops it once let go', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'keep', { 'o-1' })
    deliver(vat, 'ignore', { 'o-2' })
    assert.same({ { 'dropImports', { 'o-2' } }, { 'retireImports', { 'o-2' } } }, boyd(vat, sc))
    assert.same({}, boyd(vat, sc))
    deliver(vat, 'forget', {})
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, boyd(vat, sc))
  end)

  it('batches what one reap point finds, sorted', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    for _, vref in ipairs({ 'o-7', 'o-3', 'o-12', 'o-5' }) do deliver(vat, 'ignore', { vref }) end
    local sorted = { 'o-12', 'o-3', 'o-5', 'o-7' }
    assert.same({ { 'dropImports', sorted }, { 'retireImports', sorted } }, boyd(vat, sc))
  end)

  it('drops the imports of a delivery that its body never used or could not decode', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    vat.ls.dispatch('message', 'o+0', '#["ignore",["$0.Alleged: thing"]]', { 'o-1', 'o-2' }, nil)
    vat.ls.dispatch('message', 'o+0', '#["ignore",[', { 'o-3' }, 'p-1')
    local _, vpid, rejected = sc.lastResolved()
    assert.same({ 'p-1', true }, { vpid, rejected })
    local all = { 'o-1', 'o-2', 'o-3' }
    assert.same({ { 'dropImports', all }, { 'retireImports', all } }, boyd(vat, sc))
  end)

  it('keeps a presence that comes back before the reap point', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'ignore', { 'o-1' })
    collect()
    deliver(vat, 'keep', { 'o-1' })
    assert.same({}, boyd(vat, sc))
  end)

  it('keeps a presence captured by a pending await until the await ends', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'awaitWith', { 'o-1', 'p-1' }, 'p-2')
    assert.same({}, boyd(vat, sc))
    assert.same({}, boyd(vat, sc))
    -- The promise settles: the method returns { x, got } as its result,
    -- which is sent on (so the kernel counts it there) and leaves the heap.
    vat.ls.dispatch('notify', { { 'p-1', false, '#1', {} } })
    local slots = sc.lastResolved()
    assert.same({ 'o-1' }, slots)
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, boyd(vat, sc))
  end)

  it('keeps a presence stored in baggage, and drops it once deleted', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'store', { 'o-1' })
    assert.same({}, boyd(vat, sc))
    assert.same({}, boyd(vat, sc))
    deliver(vat, 'unstore', {})
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, boyd(vat, sc))
  end)

  it('forgets an import the exporter retired', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'keep', { 'o-1' })
    vat.ls.dispatch('retireImports', { 'o-1' })
    deliver(vat, 'forget', {})
    assert.same({}, boyd(vat, sc))
  end)
end)

describe('liveslots GC: exports', function()
  --- Delivers root.method() and returns the vref of the object it returned.
  local function made(vat, sc, method, vpid)
    deliver(vat, method, {}, vpid)
    local slots = sc.lastResolved()
    return slots[1]
  end

  it('retires a dropped export once the heap lets go of it', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    local vref = made(vat, sc, 'make', 'p-1')
    assert.equal('o+1', vref)
    -- Held strongly until the kernel says nobody can reach it.
    assert.same({}, boyd(vat, sc))
    vat.ls.dispatch('dropExports', { vref })
    assert.same({}, sc.gc())
    assert.same({ { 'retireExports', { 'o+1' } } }, boyd(vat, sc))
    assert.same({}, boyd(vat, sc))
  end)

  it('keeps a dropped export the heap still holds, and its vref', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    local vref = made(vat, sc, 'makeKept', 'p-1')
    vat.ls.dispatch('dropExports', { vref })
    assert.same({}, boyd(vat, sc))
    -- Sent again: the same vref, and held again.
    assert.equal(vref, made(vat, sc, 'resendMade', 'p-2'))
    deliver(vat, 'forgetMade', {})
    assert.same({}, boyd(vat, sc))
    -- Dropped again, and now let go of.
    vat.ls.dispatch('dropExports', { vref })
    assert.same({ { 'retireExports', { vref } } }, boyd(vat, sc))
  end)

  it('holds a dropped export sent again, so that it outlives the heap letting go', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    local vref = made(vat, sc, 'makeKept', 'p-1')
    local weak = setmetatable({ vat.made[1] }, { __mode = 'v' })
    vat.ls.dispatch('dropExports', { vref })
    assert.same({}, boyd(vat, sc))
    assert.equal(vref, made(vat, sc, 'resendMade', 'p-2'))
    deliver(vat, 'forgetMade', {})
    assert.same({}, boyd(vat, sc))
    collect()
    assert.is_not_nil(weak[1])
  end)

  it('forgets an export the kernel retired: sent again, it gets a new vref', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    local vref = made(vat, sc, 'makeKept', 'p-1')
    vat.ls.dispatch('dropExports', { vref })
    vat.ls.dispatch('retireExports', { vref })
    assert.same({}, boyd(vat, sc))
    local again = made(vat, sc, 'resendMade', 'p-2')
    assert.is_not.equal(vref, again)
    -- The retired vref is never reported again.
    deliver(vat, 'forgetMade', {})
    vat.ls.dispatch('dropExports', { again })
    assert.same({ { 'retireExports', { again } } }, boyd(vat, sc))
  end)

  it('keeps an export a store names, even once dropped', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    local vref = made(vat, sc, 'makeKept', 'p-1')
    vat.baggage:init('it', vat.made[1])
    deliver(vat, 'forgetMade', {})
    vat.ls.dispatch('dropExports', { vref })
    assert.same({}, boyd(vat, sc))
    -- Still the same object behind the stored vref.
    assert.is_true(pass.isRemotable(vat.baggage:get('it')))
    assert.equal(vref, vat.ls.refOf(vat.baggage:get('it')))
    vat.baggage:delete('it')
    assert.same({ { 'retireExports', { vref } } }, boyd(vat, sc))
  end)

  it('never lets go of the root', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    vat.ls.dispatch('dropExports', { 'o+0' })
    assert.same({}, boyd(vat, sc))
    deliver(vat, 'ignore', {}, 'p-1')
    local _, vpid, rejected = sc.lastResolved()
    assert.equal('p-1', vpid)
    assert.is_false(rejected)
  end)
end)

describe('liveslots GC: stopVat', function()
  it('abandons ephemeral exports and releases imports only the heap held', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc)
    deliver(vat, 'makeKept', {}, 'p-1')
    deliver(vat, 'makeKept', {}, 'p-2')
    deliver(vat, 'keep', { 'o-1' })
    deliver(vat, 'store', { 'o-2' })
    vat.ls.dispatch('stopVat')
    assert.same({ { 'abandonExports', { 'o+1', 'o+2' } }, { 'dropImports', { 'o-1' } },
      { 'retireImports', { 'o-1' } } }, sc.gc())
  end)
end)

describe('liveslots GC: a new heap on the same store', function()
  it('drops at its first reap point the imports the old heap held', function()
    local sc = fakeSyscall()
    local old = makeVat(sc)
    deliver(old, 'keep', { 'o-1' })
    deliver(old, 'keep', { 'o-2' })
    deliver(old, 'ignore', { 'o-3' })
    assert.same({ { 'dropImports', { 'o-3' } }, { 'retireImports', { 'o-3' } } }, boyd(old, sc))
    -- A restart: the new heap holds none of them, and knows them from the store.
    local new = makeVat(sc)
    assert.same({ { 'dropImports', { 'o-1', 'o-2' } }, { 'retireImports', { 'o-1', 'o-2' } } }, boyd(new, sc))
    assert.same({}, boyd(makeVat(sc), sc))
  end)

  it('keeps an import baggage holds, and drops it once deleted', function()
    local sc = fakeSyscall()
    local old = makeVat(sc)
    deliver(old, 'store', { 'o-1' })
    local new = makeVat(sc)
    assert.same({}, boyd(new, sc))
    deliver(new, 'unstore', {})
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, boyd(new, sc))
  end)

  it('does not drop again what the old heap released when it stopped', function()
    local sc = fakeSyscall()
    local old = makeVat(sc)
    deliver(old, 'keep', { 'o-1' })
    assert.same({}, boyd(old, sc))
    old.ls.dispatch('stopVat')
    assert.same({ { 'dropImports', { 'o-1' } }, { 'retireImports', { 'o-1' } } }, sc.gc())
    assert.same({}, boyd(makeVat(sc), sc))
  end)
end)

describe('liveslots GC: the host (kind kernel)', function()
  it('drops a kref presence the host let go of, and retires a dropped export', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc, 'kernel')
    deliver(vat, 'keep', { 'ko7' }, nil, 'ko1')
    assert.same({}, boyd(vat, sc))
    deliver(vat, 'forget', {}, nil, 'ko1')
    assert.same({ { 'dropImports', { 'ko7' } }, { 'retireImports', { 'ko7' } } }, boyd(vat, sc))
    deliver(vat, 'make', {}, 'kp9', 'ko1')
    local slots = sc.lastResolved()
    assert.same({ 'ko101' }, slots)
    vat.ls.dispatch('dropExports', { 'ko101' })
    assert.same({ { 'retireExports', { 'ko101' } } }, boyd(vat, sc))
  end)

  it('reports only the krefs the kernel delivered to it, not those host code named', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc, 'kernel')
    vat.ls.presenceFor('ko7')
    assert.same({}, boyd(vat, sc))
    -- Named first, then delivered: from then on the kernel counts it.
    local p = vat.ls.presenceFor('ko8')
    deliver(vat, 'ignore', { 'ko8' }, nil, 'ko1')
    assert.same({}, boyd(vat, sc))
    assert.is_not_nil(p)
    p = nil -- luacheck: ignore 311 (letting go of it is the point)
    assert.same({ { 'dropImports', { 'ko8' } }, { 'retireImports', { 'ko8' } } }, boyd(vat, sc))
  end)

  it('never lets go of a pinned export (a service), whatever the kernel says', function()
    local sc = fakeSyscall()
    local vat = makeVat(sc, 'kernel')
    local kref = vat.ls.export(exo.makeDefaultExo('service', { ignore = function() end }))
    vat.ls.pin(kref)
    vat.ls.dispatch('dropExports', { kref })
    assert.same({}, boyd(vat, sc))
    vat.ls.dispatch('retireExports', { kref })
    assert.same({}, boyd(vat, sc))
    -- Still the service behind its kref.
    deliver(vat, 'ignore', {}, 'kp50', kref)
    local _, vpid, rejected = sc.lastResolved()
    assert.same({ 'kp50', false }, { vpid, rejected })
  end)

  it('reports nothing while the kernel lacks the GC syscalls', function()
    local sc = fakeSyscall()
    sc.dropImports, sc.retireImports, sc.retireExports = nil, nil, nil
    local vat = makeVat(sc, 'kernel')
    vat.ls.presenceFor('ko7')
    assert.same({}, boyd(vat, sc))
  end)
end)

describe('liveslots GC through a kernel', function()
  local testing = require 'ocap.testing'
  local HOLDER, MAKER = 'spec/vats/gc_holder.lua', 'spec/vats/counter.lua'
  local kernel, holder, maker

  before_each(function()
    -- Reaps only when asked, so that each figure below is taken at a
    -- known point.
    kernel = testing.makeKernel({ gc = { reapInterval = false } })
    local r = kernel:launchSubcluster({ bootstrap = 'holder', vats = {
      holder = { sourceSpec = HOLDER }, maker = { sourceSpec = MAKER } } }):await()
    holder = kernel:getPresence(r.rootKref, 'gcHolder')
    local m = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = MAKER } } }):await()
    maker = kernel:getPresence(m.rootKref, 'counter')
  end)
  after_each(function() kernel:stop() end)

  --- Reaps every endpoint twice (the second reap collects what the GC
  --- deliveries of the first released) and returns the kernel's figures.
  local function reaped()
    kernel:reapVats():await()
    kernel:reapVats():await()
    return kernel:stats()
  end

  it('keeps kernel keys and objects flat while a vat makes and drops presences', function()
    E(holder).churn(5):await()
    local s0 = reaped()
    E(holder).churn(100):await()
    local s1 = reaped()
    assert.equal(s0.objects, s1.objects)
    assert.equal(s0.keys, s1.keys)
  end)

  it('never drops a presence the heap keeps, and drops it once let go', function()
    local s0 = reaped()
    E(holder).keepOne():await()
    assert.equal(s0.objects + 1, reaped().objects)
    assert.equal('hi', E(holder).callKept(1):await())
    E(holder).forget():await()
    assert.equal(s0.objects, reaped().objects)
  end)

  it('never drops a presence stored in baggage, and drops it once deleted', function()
    -- A first round writes the keys that stay (the baggage's size, counters).
    E(holder).storeOne('w'):await()
    E(holder).unstore('w'):await()
    local s0 = reaped()
    E(holder).storeOne('a'):await()
    reaped()
    assert.equal(s0.objects + 1, reaped().objects)
    assert.equal('hi', E(holder).callStored('a'):await())
    E(holder).unstore('a'):await()
    local s1 = reaped()
    assert.equal(s0.objects, s1.objects)
    assert.equal(s0.keys, s1.keys)
  end)

  it('never drops a presence captured in a pending await', function()
    local s0 = reaped()
    local p = E(holder).hold()
    kernel:run()
    reaped()
    assert.equal(s0.objects + 1, reaped().objects)
    E(holder).open():await()
    assert.equal('hi', p:await())
    assert.equal(s0.objects, reaped().objects)
  end)

  it('releases the presences host code lets go of', function()
    local s0 = reaped()
    for _ = 1, 20 do
      local t = E(maker).makeEphemeral():await()
      assert.equal('hi', E(t).hi():await())
    end
    local s1 = reaped()
    assert.equal(s0.objects, s1.objects)
    assert.equal(s0.keys, s1.keys)
  end)

  it('reaps the host on its own, as a vat, every reapInterval deliveries', function()
    local k = testing.makeKernel({ gc = { reapInterval = 5 } })
    local m = k:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = MAKER } } }):await()
    local c = k:getPresence(m.rootKref, 'counter')
    local s0 = k:stats()
    for _ = 1, 60 do
      local t = E(c).makeEphemeral():await()
      assert.equal('hi', E(t).hi():await())
    end
    -- Never asked to: what the host let go of was released all the same,
    -- but for what arrived since its last reap.
    assert.is_true(k:stats().objects < s0.objects + 10)
    k:stop()
  end)

  it('lets a new incarnation drop what only the old heap held', function()
    local vatId = kernel:getSubclusters()[1].vats.holder
    -- The new incarnation has no maker: it gets one to keep a thing from.
    local function upgrade()
      kernel:upgradeVat(vatId, { sourceSpec = HOLDER }):await()
      E(holder).bootstrap({ maker = maker }):await()
    end
    upgrade() -- the first upgrade makes the kernel's vatAdmin object
    local s0 = reaped()
    E(holder).keepOne():await()
    assert.equal(s0.objects + 1, reaped().objects)
    upgrade()
    assert.equal(s0.objects, reaped().objects)
  end)

  it('abandons, on upgrade, the ephemeral exports only the old heap held', function()
    local vatId = kernel:getSubclusters()[2].vats.c
    local t = E(maker).makeEphemeral():await()
    assert.equal('hi', E(t).hi():await())
    kernel:upgradeVat(vatId, { sourceSpec = MAKER }):await()
    -- The kernel answers for the object: no message reaches the new
    -- incarnation, which never had it.
    local ok, err = pcall(function() return E(t).hi():await() end)
    assert.is_false(ok)
    assert.matches('%[KERNEL:OBJECT_DELETED%] Target object ko%d+ has been deleted', tostring(err.message or err))
  end)

  it('lets a restarted kernel drop what only the old heap held', function()
    local db = testing.tempDir()
    local k1 = testing.makeKernel({ database = db, gc = { reapInterval = false } })
    local r = k1:launchSubcluster({ bootstrap = 'holder', vats = {
      holder = { sourceSpec = HOLDER }, maker = { sourceSpec = MAKER } } }):await()
    k1:reapVats():await()
    local objects = k1:stats().objects
    E(k1:getPresence(r.rootKref)).keepOne():await()
    k1:reapVats():await()
    assert.equal(objects + 1, k1:stats().objects)
    k1:stop()
    local k2 = testing.makeKernel({ database = db, gc = { reapInterval = false } })
    -- The vat restarts on its first delivery; its first reap drops it.
    E(k2:getPresence(r.rootKref)).forget():await()
    k2:reapVats():await()
    k2:reapVats():await()
    assert.equal(objects, k2:stats().objects)
    k2:stop()
  end)
end)
