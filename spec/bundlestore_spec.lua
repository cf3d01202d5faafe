-- Vat code stored once per distinct bundle (docs/storage.md): vat records
-- name their bundle by its SHA-256 hash, the last vat naming a bundle
-- takes it away, and a restart runs every vat from those copies.
local testing = require 'ocap.testing'
local support = require 'support'
local rejection = support.rejection

local COUNTER = 'spec/vats/counter.lua'
local V1, V2 = 'spec/vats/upgrade_v1.lua', 'spec/vats/upgrade_v2.lua'

--- Every key under `prefix` and its value, as the store holds them.
local function scan(kernel, prefix)
  local K, out, after = kernel.K, {}, nil
  while true do
    local key = K:kvNext(prefix, after)
    if not key then return out end
    out[key] = K:kvGet(key)
    after = key
  end
end

--- The stored bundles: hash -> { main = <main module>, refCount = n }.
local function bundles(kernel)
  local out = {}
  for key, value in pairs(scan(kernel, 'bundle.')) do
    local hash, field = key:match('^bundle%.(%x+)(.*)$')
    assert(hash and #hash == 64, 'a bundle key ends with a SHA-256 hash: ' .. key)
    out[hash] = out[hash] or {}
    if field == '.refCount' then
      out[hash].refCount = tonumber(value)
    else
      assert.equal('', field)
      out[hash].main = kernel:_get(key).main
    end
  end
  return out
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

--- The hash the vat record of `vatId` names.
local function bundleOf(kernel, vatId) return kernel:_get('vat.' .. vatId).bundle end

local function counters(n, source)
  local vats = {}
  for i = 1, n do vats['c' .. i] = { sourceSpec = source or COUNTER } end
  return { bootstrap = 'c1', vats = vats }
end

describe('bundles stored by hash', function()
  local kernel
  after_each(function() if kernel then kernel:stop() end end)

  it('stores one copy for vats of the same code, in any subcluster', function()
    kernel = testing.makeKernel()
    local r1 = kernel:launchSubcluster(counters(3)):await()
    local r2 = kernel:launchSubcluster(counters(2)):await()
    local stored = bundles(kernel)
    assert.equal(1, count(stored))
    local hash, b = next(stored)
    assert.same({ main = COUNTER, refCount = 5 }, b)
    for _, r in ipairs({ r1, r2 }) do
      for _, vatId in pairs(kernel:getSubcluster(r.subclusterId).vats) do
        assert.equal(hash, bundleOf(kernel, vatId))
      end
    end
    -- No vat keeps a copy of its own.
    assert.same({}, scan(kernel, 'vatBundle.'))
  end)

  it('stores one copy per distinct code', function()
    kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = COUNTER }, b = { sourceSpec = V1 }, c = { sourceSpec = COUNTER } } }):await()
    local vats = kernel:getSubcluster(r.subclusterId).vats
    local stored = bundles(kernel)
    assert.equal(2, count(stored))
    assert.same({ main = COUNTER, refCount = 2 }, stored[bundleOf(kernel, vats.a)])
    assert.same({ main = V1, refCount = 1 }, stored[bundleOf(kernel, vats.b)])
    assert.equal(bundleOf(kernel, vats.a), bundleOf(kernel, vats.c))
  end)

  it('deletes a bundle with the last vat that names it', function()
    kernel = testing.makeKernel()
    local r1 = kernel:launchSubcluster(counters(2)):await()
    local r2 = kernel:launchSubcluster(counters(1, V1)):await()
    local vats = kernel:getSubcluster(r1.subclusterId).vats
    local hash = bundleOf(kernel, vats.c1)
    kernel:terminateVat(vats.c2):await()
    assert.equal(1, bundles(kernel)[hash].refCount)
    kernel:terminateSubcluster(r1.subclusterId):await()
    local stored = bundles(kernel)
    assert.is_nil(stored[hash])
    assert.same({}, scan(kernel, 'bundle.' .. hash))
    -- The other code is still there, and so is its vat.
    assert.equal(1, count(stored))
    local other = kernel:getSubcluster(r2.subclusterId).vats.c1
    assert.same({ main = V1, refCount = 1 }, stored[bundleOf(kernel, other)])
    kernel:terminateSubcluster(r2.subclusterId):await()
    assert.same({}, scan(kernel, 'bundle.'))
  end)

  it('counts a vat that failed to launch nowhere', function()
    kernel = testing.makeKernel()
    kernel:launchSubcluster(counters(1)):await()
    rejection(kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = COUNTER }, b = { sourceSpec = 'spec/vats/bad_syntax.lua' } } }))
    local stored = bundles(kernel)
    assert.equal(1, count(stored))
    assert.equal(1, select(2, next(stored)).refCount)
  end)

  it('moves a vat to its new bundle on upgrade, deleting the old one with its last user', function()
    kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = V1 }, b = { sourceSpec = V1 } } }):await()
    local vats = kernel:getSubcluster(r.subclusterId).vats
    local old = bundleOf(kernel, vats.a)
    -- The same code again: the one copy stays, counted once per vat.
    kernel:upgradeVat(vats.a, { sourceSpec = V1 }):await()
    assert.same({ [old] = { main = V1, refCount = 2 } }, bundles(kernel))
    kernel:upgradeVat(vats.a, { sourceSpec = V2 }):await()
    local new = bundleOf(kernel, vats.a)
    assert.are_not.equal(old, new)
    assert.same({ [old] = { main = V1, refCount = 1 }, [new] = { main = V2, refCount = 1 } }, bundles(kernel))
    kernel:upgradeVat(vats.b, { sourceSpec = V2 }):await()
    assert.same({ [new] = { main = V2, refCount = 2 } }, bundles(kernel))
    assert.equal(new, bundleOf(kernel, vats.b))
    assert.equal(2, kernel:queueMessage(r.rootKref, 'version', {}):await())
  end)

  it('keeps the old bundle when an upgrade fails', function()
    kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'a', vats = { a = { sourceSpec = V1 } } }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.a
    local before = bundles(kernel)
    assert.equal(1, count(before))
    rejection(kernel:upgradeVat(vatId, { sourceSpec = 'spec/vats/upgrade_bad.lua', parameters = { fail = 'throw' } }))
    assert.same(before, bundles(kernel))
    assert.equal(next(before), bundleOf(kernel, vatId))
  end)

  it('restarts every vat from the stored copy, its source file gone', function()
    local dir = testing.tempDir()
    local src = assert(io.open(COUNTER, 'rb')):read('a')
    local f = assert(io.open(dir .. '/counter.lua', 'wb'))
    f:write(src)
    f:close()
    kernel = testing.makeKernel({ database = dir .. '/db', baseDir = dir })
    local cfg = { bootstrap = 'c1', vats = {} }
    for i = 1, 3 do cfg.vats['c' .. i] = { sourceSpec = 'counter.lua', parameters = { start = 10 * i } } end
    local roots = {}
    for _ = 1, 2 do
      local r = kernel:launchSubcluster(cfg):await()
      for name, vatId in pairs(kernel:getSubcluster(r.subclusterId).vats) do
        roots[#roots + 1] = { vatId = vatId, start = cfg.vats[name].parameters.start }
      end
    end
    for _, v in ipairs(roots) do v.kref = kernel.K:export(v.vatId, 'o+0') end
    kernel.K:commit()
    os.remove(dir .. '/counter.lua')
    kernel = testing.restart(kernel)
    assert.equal(1, count(bundles(kernel)))
    for _, v in ipairs(roots) do
      assert.equal(v.start + 1, kernel:queueMessage(v.kref, 'increment', {}):await())
    end
    assert.equal(6, #kernel:getStatus().vats)
    for _, v in ipairs(kernel:getStatus().vats) do assert.equal('running', v.state) end
  end)

  it('stores a source changed in place under its new hash, as a launch reads it', function()
    -- A kernel remembers the encoding of the bundles it launched last: a
    -- file rewritten between launches, or a module of it, must not be
    -- taken for the one remembered.
    local dir = testing.tempDir()
    local function write(name, text)
      local f = assert(io.open(dir .. '/' .. name, 'wb'))
      f:write(text)
      f:close()
    end
    -- A helper.lua next to it is bundled; without one, the vat does without.
    local USES_HELPER = "local ocap = require 'ocap'\n"
      .. "local ok, helper = pcall(function() return require 'helper' end)\n"
      .. "return { buildRootObject = function() return ocap.makeDefaultExo('v', {\n"
      .. "  which = function() return ok and helper.name or 'none' end }) end }\n"
    local ALONE = "local ocap = require 'ocap'\n"
      .. "return { buildRootObject = function() return ocap.makeDefaultExo('v', {\n"
      .. "  which = function() return 'alone' end }) end }\n"
    kernel = testing.makeKernel({ database = dir .. '/db', baseDir = dir })
    local cfg = { bootstrap = 'v', vats = { v = { sourceSpec = 'v.lua' } } }
    local launched = {}
    local function launch(main, helper, which)
      write('v.lua', main)
      if helper then
        write('helper.lua', ('return { name = %q }\n'):format(helper))
      else
        os.remove(dir .. '/helper.lua')
      end
      local r = kernel:launchSubcluster(cfg):await()
      local hash = bundleOf(kernel, kernel:getSubcluster(r.subclusterId).vats.v)
      launched[#launched + 1] = { kref = r.rootKref, hash = hash, which = which }
      return hash
    end
    local one = launch(USES_HELPER, 'one', 'one')
    local two = launch(USES_HELPER, 'two', 'two') -- the same main file, a changed module
    local none = launch(USES_HELPER, nil, 'none') -- the same main file, one module less
    local alone = launch(ALONE, nil, 'alone') -- a changed main file
    local aloneAgain = launch(ALONE, nil, 'alone')
    local oneAgain = launch(USES_HELPER, 'one', 'one')
    assert.equal(4, count({ [one] = 1, [two] = 1, [none] = 1, [alone] = 1 }), "four distinct bundles")
    assert.equal(alone, aloneAgain)
    assert.equal(one, oneAgain)
    assert.same({ [one] = { main = 'v.lua', refCount = 2 }, [two] = { main = 'v.lua', refCount = 1 },
      [none] = { main = 'v.lua', refCount = 1 }, [alone] = { main = 'v.lua', refCount = 2 } }, bundles(kernel))
    assert.same({ 'v.lua', 'helper' }, (function()
      local names = {}
      for name in pairs(kernel:_get('bundle.' .. two).modules) do names[#names + 1] = name end
      table.sort(names, function(a, b) return a > b end)
      return names
    end)())
    for _, v in ipairs(launched) do assert.equal(v.which, kernel:queueMessage(v.kref, 'which', {}):await()) end
    -- Each vat restarts from its own stored copy, whose bytes match its hash.
    os.remove(dir .. '/v.lua')
    os.remove(dir .. '/helper.lua')
    kernel = testing.restart(kernel)
    for _, v in ipairs(launched) do assert.equal(v.which, kernel:queueMessage(v.kref, 'which', {}):await()) end
  end)

  it('stores bundle files that differ only in a field of their own apart', function()
    local dir = testing.tempDir()
    local encode = require('ocap.bundle').encode
    local src = assert(io.open(COUNTER, 'rb')):read('a')
    kernel = testing.makeKernel({ baseDir = dir })
    local hashes = {}
    for i, note in ipairs({ 'a', 'b', 'a' }) do
      local f = assert(io.open(('%s/c%d.bundle'):format(dir, i), 'wb'))
      f:write(encode({ format = 'ocap-bundle-1', main = 'counter', modules = { counter = src }, note = note }))
      f:close()
      local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { bundleSpec = ('c%d.bundle'):format(i) } } })
        :await()
      hashes[i] = bundleOf(kernel, kernel:getSubcluster(r.subclusterId).vats.c)
      assert.equal(note, kernel:_get('bundle.' .. hashes[i]).note)
    end
    assert.are_not.equal(hashes[1], hashes[2])
    assert.equal(hashes[1], hashes[3])
  end)

  it('stores a vat whose main module is named like the count of bundles remembered', function()
    -- A kernel remembers the last few bundles by their main module: a
    -- module named `n` (a vat file n.lua) is a name like any other.
    local dir = testing.tempDir()
    local src = assert(io.open(COUNTER, 'rb')):read('a')
    local f = assert(io.open(dir .. '/n.bundle', 'wb'))
    f:write(require('ocap.bundle').encode({ format = 'ocap-bundle-1', main = 'n', modules = { n = src } }))
    f:close()
    kernel = testing.makeKernel({ baseDir = dir })
    local hashes = {}
    for i = 1, 3 do
      local r = kernel:launchSubcluster({ bootstrap = 'n', vats = { n = { bundleSpec = 'n.bundle' } } }):await()
      assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
      hashes[i] = bundleOf(kernel, kernel:getSubcluster(r.subclusterId).vats.n)
    end
    assert.equal(hashes[1], hashes[2])
    assert.equal(hashes[1], hashes[3])
    assert.same({ [hashes[1]] = { main = 'n', refCount = 3 } }, bundles(kernel))
  end)

  it('stores one copy per source, launched from more sources than a kernel remembers', function()
    -- A kernel remembers the last 16 bundles by main module, and the last
    -- 16 sources that require only the runtime by path.
    local dir = testing.tempDir()
    local src = assert(io.open(COUNTER, 'rb')):read('a')
    local names = { 'copy' }
    for i = 1, 17 do names[#names + 1] = 'c' .. i end
    for _, name in ipairs(names) do
      local f = assert(io.open(dir .. '/' .. name, 'wb'))
      f:write(src)
      f:close()
    end
    kernel = testing.makeKernel({ baseDir = dir })
    for _ = 1, 2 do
      for _, name in ipairs(names) do
        local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = name } } }):await()
        assert.equal(1, kernel:queueMessage(r.rootKref, 'increment', {}):await())
      end
    end
    local stored = bundles(kernel)
    assert.equal(#names, count(stored))
    for _, b in pairs(stored) do assert.equal(2, b.refCount) end
  end)

  it('refuses to run a stored bundle whose bytes do not match its hash', function()
    local dir = testing.tempDir()
    kernel = testing.makeKernel({ database = dir })
    local r = kernel:launchSubcluster(counters(1)):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.c1
    local key = 'bundle.' .. bundleOf(kernel, vatId)
    local b = kernel:_get(key)
    b.modules[COUNTER] = b.modules[COUNTER]:gsub('%(by or 1%)', '(by or 2)')
    kernel:_put(key, b)
    kernel = testing.restart(kernel)
    local e = rejection(kernel:queueMessage(r.rootKref, 'increment', {}))
    assert.matches("corrupt database: key '" .. key .. "' holds", tostring(e.message or e), 1, true)
    assert.matches('which is not a bundle of that SHA-256 hash', tostring(e.message or e), 1, true)
  end)

  it('refuses a database of schema version 4, which kept a bundle per vat, and leaves it as it was', function()
    local dir = testing.tempDir()
    kernel = testing.makeKernel({ database = dir })
    local r = kernel:launchSubcluster(counters(1)):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.c1
    -- Made the way version 4 made it: the vat's own copy of its code.
    local K = kernel.K
    local rec = kernel:_get('vat.' .. vatId)
    K:kvSet('vatBundle.' .. vatId, K:kvGet('bundle.' .. rec.bundle))
    K:kvDelete('bundle.' .. rec.bundle)
    K:kvDelete('bundle.' .. rec.bundle .. '.refCount')
    rec.bundle = nil
    kernel:_put('vat.' .. vatId, rec)
    K:kvSet('version', '4')
    kernel:stop()
    kernel = nil
    for _ = 1, 2 do
      local ok, err = pcall(testing.makeKernel, { database = dir })
      assert.is_false(ok)
      assert.matches(('Kernel.make: database %s has schema version 4; this ocap uses version 5'):format(dir),
        err, 1, true)
    end
    -- Nothing was migrated: the old layout is still there.
    local raw = assert(require('ocap.core').open({ database = dir }))
    assert.equal('4', raw:kvGet('version'))
    assert.matches('^#{"main":"' .. COUNTER, raw:kvGet('vatBundle.' .. vatId))
    assert.is_nil(raw:kvNext('bundle.'))
    raw:close()
  end)
end)
