-- Virtual objects (lua/ocap/durable.lua, stores.lua, vom.lua): durable
-- instances and stores live in the vat's store and are paged in on use,
-- so a vat holds many with bounded Lua memory; the virtual object manager
-- deletes those nothing holds any more at the vat's reap point.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local liveslots = require 'ocap.liveslots'

local VAT = 'spec/vats/virtual.lua'
local MIB = 1024 * 1024

local function send(kernel, target, method, ...)
  return kernel:queueMessage(target, method, table.pack(...)):await()
end

--- The number of keys under prefix in a vat's part of the kernel store.
local function countKeys(kernel, vatId, prefix)
  local K = kernel.K
  K:commit()
  local full = 'vs.' .. vatId .. '.' .. prefix
  local n, after = 0, nil
  while true do
    local key = K:kvNext(full, after)
    if not key then return n end
    n, after = n + 1, key
  end
end

describe('virtual objects in a vat', function()
  local kernel, root, vatId

  local function launch(memoryLimit)
    kernel = testing.makeKernel { database = testing.tempDir() }
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = VAT,
      creationOptions = { memoryLimit = memoryLimit } } } }):await()
    root, vatId = r.rootKref, kernel:getSubcluster(r.subclusterId).vats.v
  end

  after_each(function()
    if kernel then kernel:stop() end
    kernel = nil
    testing.cleanup()
  end)

  -- 100,000 counters held as representatives would take about 100 MiB of
  -- Lua heap; paged, the vat needs a few hundred KiB whatever their number.
  -- The 8 MiB memoryLimit ends the vat (MEMORY_EXHAUSTED) if they stay.
  it('holds 100,000 durable instances with bounded Lua memory', function()
    launch(8 * MIB)
    local N, BATCH = 100000, 5000
    local most = 0
    for first = 1, N, BATCH do
      assert.equal(first + BATCH - 1, send(kernel, root, 'makeMany', first, BATCH))
      most = math.max(most, kernel.K:vatMemory(vatId))
    end
    assert.is_true(most < 2 * MIB, ('the vat held %d bytes'):format(most))
    assert.equal(N, countKeys(kernel, vatId, 'durable.state.'))
    -- Every counter is paged in again, each with its own state.
    assert.equal(N * (N + 1) // 2, send(kernel, root, 'sum', 1, N))
    assert.is_true(kernel.K:vatMemory(vatId) < 2 * MIB)
  end)

  it('keeps state across paging out and in, a restart and an upgrade', function()
    launch()
    send(kernel, root, 'makeMany', 1, 3000)
    assert.equal(107, send(kernel, root, 'add', 7, 100))
    -- Pages every other counter in and out again.
    assert.equal(3000 * 3001 // 2 + 100, send(kernel, root, 'sum', 1, 3000))
    assert.equal(117, send(kernel, root, 'add', 7, 10))
    kernel = testing.restart(kernel)
    assert.equal(117, send(kernel, root, 'get', 7))
    assert.equal(3000 * 3001 // 2 + 110, send(kernel, root, 'sum', 1, 3000))
    assert.same({ incarnation = 2 }, kernel:upgradeVat(vatId, { sourceSpec = VAT }):await())
    assert.equal(118, send(kernel, root, 'add', 7, 1))
    assert.equal(2999, send(kernel, root, 'get', 2999))
  end)

  it('gives one representative per vref while it is held, and one kref always', function()
    launch()
    send(kernel, root, 'makeMany', 1, 200)
    assert.is_true(send(kernel, root, 'same', 5))
    local a = send(kernel, root, 'counter', 5)
    send(kernel, root, 'sum', 1, 200) -- pages the others in and out
    local b = send(kernel, root, 'counter', 5)
    assert.equal(kernel:krefOf(a), kernel:krefOf(b))
    assert.equal(105, ocap.E(a).add(100):await())
    assert.equal(105, send(kernel, root, 'get', 5))
    -- A store keyed by a representative finds it by vref, whichever
    -- representative asks.
    assert.same({ true, 'five' }, send(kernel, root, 'keyedBy', 5, 'five'))
    local kref = kernel:krefOf(b)
    kernel = testing.restart(kernel)
    assert.same({ true, 'five' }, send(kernel, root, 'keyedBy', 5))
    assert.equal(106, ocap.E(kernel:getPresence(kref)).add(1):await())
  end)

  it('keeps references between instances, and durable kits', function()
    launch()
    send(kernel, root, 'makeMany', 1, 10)
    send(kernel, root, 'link', 1, 2)
    send(kernel, root, 'add', 2, 40)
    send(kernel, root, 'drop', 2) -- counter 2 now lives only in counter 1's state
    local writer = send(kernel, root, 'makePair', 'pair', 'first')
    assert.equal('first', send(kernel, root, 'read', 'pair'))
    ocap.E(writer).write('second'):await()
    local kref = kernel:krefOf(writer)
    kernel = testing.restart(kernel)
    assert.equal(42, send(kernel, root, 'peerOf', 1))
    assert.equal('second', send(kernel, root, 'read', 'pair'))
    ocap.E(kernel:getPresence(kref)).write('third'):await()
    assert.equal('third', send(kernel, root, 'read', 'pair'))
  end)
end)

describe('reaping virtual objects through the kernel', function()
  local kernel, root, vatId

  before_each(function()
    kernel = testing.makeKernel { database = testing.tempDir() }
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = VAT } } }):await()
    root, vatId = r.rootKref, kernel:getSubcluster(r.subclusterId).vats.v
  end)

  after_each(function()
    kernel:stop()
    testing.cleanup()
  end)

  local function states() return countKeys(kernel, vatId, 'durable.state.') end

  it('deletes the state of dropped instances at the reap, not before', function()
    send(kernel, root, 'makeMany', 1, 100)
    kernel:collectGarbage():await()
    assert.equal(100, states())
    assert.equal(60, send(kernel, root, 'dropMany', 1, 40))
    assert.equal(100, states())
    kernel:collectGarbage():await()
    assert.equal(60, states())
    -- No instance stays marked (the store the vat holds in a local does,
    -- until the vat lets go of it).
    assert.equal(0, countKeys(kernel, vatId, 'vom.dirty.o+d3/'))
    assert.equal((41 + 100) * 60 // 2, send(kernel, root, 'sum', 41, 100))
  end)

  it('never deletes one held by baggage, another instance or a store', function()
    send(kernel, root, 'makeMany', 1, 5)
    send(kernel, root, 'add', 2, 40)
    send(kernel, root, 'link', 1, 2)
    send(kernel, root, 'toBaggage', 'three', 3)
    send(kernel, root, 'dropMany', 2, 2) -- 2 and 3 leave the store
    kernel:collectGarbage():await()
    assert.equal(5, states())
    assert.equal(42, send(kernel, root, 'peerOf', 1))
    assert.equal(3, send(kernel, root, 'fromBaggage', 'three'))
    assert.equal(5, send(kernel, root, 'get', 5))
  end)

  it('keeps an instance the host holds, and deletes it once the host drops it', function()
    send(kernel, root, 'makeMany', 1, 3)
    local held = send(kernel, root, 'counter', 2)
    send(kernel, root, 'dropMany', 1, 3)
    kernel:collectGarbage():await()
    assert.equal(1, states())
    assert.equal(7, ocap.E(held).add(5):await())
    held = nil -- luacheck: ignore 311 (dropping it is the point)
    collectgarbage()
    kernel:collectGarbage():await()
    kernel:collectGarbage():await()
    assert.equal(0, states())
  end)

  it('finds what a restart interrupted', function()
    send(kernel, root, 'makeMany', 1, 20)
    send(kernel, root, 'dropMany', 1, 20)
    kernel = testing.restart(kernel)
    assert.equal(20, states())
    send(kernel, root, 'makeMany', 21, 0) -- the vat starts again, then is reaped
    kernel:collectGarbage():await()
    assert.equal(0, states())
    assert.equal(0, countKeys(kernel, vatId, 'vc.2.'))
  end)
end)

--- A vat store in memory with the vatstore syscalls, for driving a
--- liveslots instance (and its heap, collected with collectgarbage) alone;
--- kv, when given, is what the store holds at the start.
local function fakeVat(kv)
  kv = kv or {}
  local sent, retired = {}, {}
  local function sorted()
    local keys = {}
    for k in pairs(kv) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
  end
  local syscall = {
    vatstoreGet = function(k) return kv[k] end,
    vatstoreSet = function(k, v) kv[k] = v end,
    vatstoreDelete = function(k) kv[k] = nil end,
    vatstoreNext = function(prefix, after)
      for _, k in ipairs(sorted()) do
        if k:sub(1, #prefix) == prefix and (after == nil or k > after) then return k end
      end
    end,
    send = function(target, body, slots) sent[#sent + 1] = { target, body, slots } end,
    retireExports = function(vrefs)
      for i = 1, #vrefs do retired[#retired + 1] = vrefs[i] end
    end,
    dropImports = function() end,
    retireImports = function() end,
    resolve = function() end,
    subscribe = function() end,
  }
  local ls = liveslots.make({ syscall = syscall, vatId = 'v1', kind = 'vat', collect = function()
    collectgarbage()
    collectgarbage()
  end })
  local vat = { ls = ls, kv = kv, sent = sent, baggage = ls.baggage(), durable = ls.durable() }
  --- The keys with that prefix.
  function vat.keys(prefix)
    local out = {}
    for _, k in ipairs(sorted()) do
      if k:sub(1, #prefix) == prefix then out[#out + 1] = k end
    end
    return out
  end
  --- A reap point (the heap is collected, then the manager runs); returns
  --- the vrefs it retired.
  function vat.reap()
    for i = #retired, 1, -1 do retired[i] = nil end
    ls.dispatch('bringOutYourDead')
    return { table.unpack(retired) }
  end
  vat.makeThing = vat.durable.prepareExoClass(vat.baggage, 'Thing', nil,
    function(n, other) return { n = n, other = other or false } end, {
      n = function(ctx) return ctx.state.n end,
      other = function(ctx) return ctx.state.other end,
      setOther = function(ctx, o) ctx.state.other = o end,
    })
  return vat
end

describe('the virtual object manager', function()
  it('deletes an instance nothing holds at the reap point, and what only it held', function()
    local vat = fakeVat()
    do
      local b = vat.makeThing(2)
      vat.makeThing(1, b)
    end
    assert.equal(2, #vat.keys('durable.state.'))
    assert.same({}, vat.reap())
    assert.same({}, vat.keys('durable.state.'))
    assert.same({}, vat.keys('vom.es.'))
    assert.same({}, vat.keys('vom.dirty.'))
    assert.same({}, vat.keys('gc.rc.'))
  end)

  it('never deletes one held by baggage, a store, another instance or the heap', function()
    local vat = fakeVat()
    local held = vat.makeThing(4)
    do
      local inBaggage, inStore, inState = vat.makeThing(1), vat.makeThing(2), vat.makeThing(3)
      vat.baggage:init('t', inBaggage)
      local store = vat.ls.stores().makeScalarMapStore('s')
      store:init('t', inStore)
      vat.baggage:init('s', store)
      inBaggage:setOther(inState)
    end
    vat.reap()
    assert.equal(4, #vat.keys('durable.state.'))
    assert.equal(3, vat.baggage:get('t'):other():n())
    assert.equal(2, vat.baggage:get('s'):get('t'):n())
    assert.equal(4, held:n())
    -- Letting go of the store releases what its entries held.
    vat.baggage:delete('s')
    vat.reap()
    assert.equal(3, #vat.keys('durable.state.'))
    assert.same({}, vat.keys('vc.2'))
    vat.baggage:get('t'):setOther(false)
    held = nil -- luacheck: ignore 311 (dropping it is the point)
    vat.reap()
    assert.same({ 'durable.state.1:3' }, vat.keys('durable.state.')) -- the one in baggage
  end)

  it('keeps an exported instance until the kernel drops it, then retires it', function()
    local vat = fakeVat()
    local vref
    do
      local t = vat.makeThing(1)
      vat.ls.sendTo('o-1', 'take', { t }, false) -- the kernel now holds it
      vref = vat.ls.refOf(t)
    end
    assert.equal(vref, vat.sent[1][3][1])
    assert.same({}, vat.reap())
    assert.equal(1, #vat.keys('durable.state.'))
    vat.ls.dispatch('dropExports', { vref })
    assert.same({ vref }, vat.reap())
    assert.same({}, vat.keys('durable.state.'))
    assert.same({}, vat.keys('vom.es.'))
    assert.same({}, vat.keys('vom.dirty.'))
  end)

  it('deletes a kit only when no facet is held', function()
    local vat = fakeVat()
    local makePair = vat.durable.prepareExoClassKit(vat.baggage, 'Pair', nil,
      function(v) return { v = v } end, {
        reader = { read = function(ctx) return ctx.state.v end },
        writer = { write = function(ctx, v) ctx.state.v = v end },
      })
    do
      local kit = makePair('a')
      vat.baggage:init('reader', kit.reader)
      kit.writer:write('b')
    end
    vat.reap()
    assert.equal('b', vat.baggage:get('reader'):read())
    vat.baggage:delete('reader')
    vat.reap()
    assert.same({}, vat.keys('durable.state.'))
  end)

  it('does a bounded amount of work per reap, and finishes in later reaps', function()
    local vat = fakeVat()
    vat.ls.vom().budget = 4
    do
      local store = vat.ls.stores().makeScalarMapStore('big')
      for i = 1, 6 do store:init(i, vat.makeThing(i)) end
      vat.baggage:init('big', store)
    end
    vat.reap() -- the instances are held by the store
    assert.equal(6, #vat.keys('durable.state.'))
    vat.baggage:delete('big')
    local states, entries = {}, {}
    for _ = 1, 4 do
      vat.reap()
      states[#states + 1] = #vat.keys('durable.state.')
      entries[#entries + 1] = #vat.keys('vc.2.')
    end
    -- Reap 1 deletes 4 of the store's entries, reap 2 the last 2 and
    -- the store, then 2 of the instances they held, reap 3 the others.
    assert.same({ 2, 0, 0, 0 }, entries)
    assert.same({ 6, 4, 0, 0 }, states)
    assert.same({}, vat.keys('vc.2|'))
    assert.same({}, vat.keys('vom.es.'))
    assert.same({}, vat.keys('vom.dirty.'))
  end)

  it('refuses to prepare a kit kind again with other facets', function()
    local vat = fakeVat()
    local facets = { a = { m = function() end }, b = { m = function() end } }
    vat.durable.prepareExoClassKit(vat.baggage, 'Kit', nil, nil, facets)
    local other = fakeVat()
    other.kv['durable.kind.Kit'] = vat.kv['durable.kind.Kit']
    other.kv['durable.facets.' .. vat.kv['durable.kind.Kit']] = 'a,c'
    assert.has_error(function() other.durable.prepareExoClassKit(other.baggage, 'Kit', nil, nil, facets) end,
      'prepareExoClassKit "Kit": facets are a,b, but the kind was made with a,c (a kind keeps its facets)')
  end)

  it('keeps objects made before export statuses were kept until the kernel drops them', function()
    -- A vat store an older ocap wrote: an instance and a store the kernel
    -- may hold, with no vom.es key saying so.
    local vat = fakeVat({
      ['durable.kind.Thing'] = '1', ['durable.next'] = '3', ['durable.state.1:2'] = '\n#{"n":7,"other":false}',
      ['storeNext'] = '3', ['vc.2|label'] = 'old', ['vc.2|size'] = '0',
      ['vom.dirty.o+d3/1:2'] = '1', ['vom.dirty.o+d1/2'] = '1',
    })
    assert.same({}, vat.reap())
    assert.equal(1, #vat.keys('durable.state.'))
    assert.equal(1, #vat.keys('vc.2|label'))
    vat.ls.dispatch('dropExports', { 'o+d3/1:2', 'o+d1/2' })
    assert.same({ 'o+d1/2', 'o+d3/1:2' }, vat.reap())
    assert.same({}, vat.keys('durable.state.'))
    assert.same({}, vat.keys('vc.2|'))
    -- New objects are not taken for old ones.
    vat.makeThing(1)
    vat.reap()
    assert.same({}, vat.keys('durable.state.'))
  end)
end)
