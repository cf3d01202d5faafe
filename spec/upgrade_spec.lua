-- Vat upgrade (issue #13): new code on the same durable state, as one
-- crank queued in order; a failed upgrade leaves no trace.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection

local V1, V2, BAD = 'spec/vats/upgrade_v1.lua', 'spec/vats/upgrade_v2.lua', 'spec/vats/upgrade_bad.lua'

local function cluster(extra)
  local vc = { sourceSpec = V1, parameters = { start = 5 } }
  for k, v in pairs(extra or {}) do vc[k] = v end
  return { bootstrap = 'app', vats = { app = vc, peer = { sourceSpec = V1 } } }
end

--- Every key and value of the kernel's store, once the host's writes so
--- far are committed (the run queue and counters live in memory until then).
local function dump(K)
  K:commit()
  local out, after = {}, nil
  while true do
    local key = K:kvNext('', after)
    if not key then return out end
    out[key] = K:kvGet(key)
    after = key
  end
end

--- The keys whose values differ between two dumps, sorted.
local function diff(a, b)
  local out = {}
  for k, v in pairs(a) do if b[k] ~= v then out[#out + 1] = k end end
  for k in pairs(b) do if a[k] == nil then out[#out + 1] = k end end
  table.sort(out)
  return out
end

local function send(kernel, target, method, ...)
  return kernel:queueMessage(target, method, table.pack(...)):await()
end

local function statusOf(kernel, vatId)
  for _, v in ipairs(kernel:getStatus().vats) do
    if v.id == vatId then return v end
  end
end

describe('vat upgrade', function()
  local kernel, r, app, peer
  local function launch(extra, options)
    kernel = testing.makeKernel(options)
    r = kernel:launchSubcluster(cluster(extra)):await()
    local sc = kernel:getSubcluster(r.subclusterId)
    app, peer = sc.vats.app, sc.vats.peer
  end
  after_each(function() if kernel then kernel:stop() end end)

  it('runs the new code on the same baggage; root, durable objects and stores keep krefs and state', function()
    launch()
    assert.equal(1, statusOf(kernel, app).incarnation)
    assert.equal(6, send(kernel, r.rootKref, 'increment'))
    send(kernel, r.rootKref, 'put', 'k', 'v')
    local clock = send(kernel, r.rootKref, 'clock')
    local account = send(kernel, r.rootKref, 'open', 'alice', 10)
    assert.equal(1, ocap.E(clock).tick():await())
    assert.equal(15, ocap.E(account).deposit(5):await())

    local res = kernel:upgradeVat(app, { sourceSpec = V2, parameters = { label = 'two' } }):await()
    assert.same({ incarnation = 2 }, res)
    assert.equal(2, send(kernel, r.rootKref, 'version'))
    assert.same({ label = 'two' }, send(kernel, r.rootKref, 'parameters'))
    assert.equal(8, send(kernel, r.rootKref, 'increment'))        -- v2 adds 2 to v1's 6
    assert.same({ k = 'v' }, send(kernel, r.rootKref, 'things'))
    assert.equal(1, send(kernel, r.rootKref, 'bootstraps'))       -- bootstrap was not called
    assert.equal(kernel:krefOf(clock), kernel:krefOf(send(kernel, r.rootKref, 'clock')))
    assert.equal(11, ocap.E(clock).tick():await())                -- v2's tick on v1's count
    assert.equal(12, ocap.E(account).withdraw(3):await())         -- a method v1's kind lacked
    assert.equal(2, statusOf(kernel, app).incarnation)
    assert.equal(1, statusOf(kernel, peer).incarnation)
    assert.equal(V2, kernel:getSubcluster(r.subclusterId).config.vats.app.sourceSpec)
    -- Omitted parameters are kept; a restart is not an upgrade.
    assert.same({ incarnation = 3 }, kernel:upgradeVat(app, { sourceSpec = V2 }):await())
    assert.same({ label = 'two' }, send(kernel, r.rootKref, 'parameters'))
    kernel:restartVat(app):await()
    assert.equal(3, statusOf(kernel, app).incarnation)
  end)

  it('rejects what the old incarnation decided with VAT_UPGRADED; ephemeral exports are deleted', function()
    launch()
    local waiting = kernel:queueMessage(r.rootKref, 'wait', {})
    local eph = send(kernel, r.rootKref, 'ephemeral')
    assert.equal('hi', ocap.E(eph).hi():await())
    kernel:upgradeVat(app, { sourceSpec = V2 }):await()
    local err = rejection(waiting)
    assert.equal('[KERNEL:VAT_UPGRADED] vat ' .. app .. ' upgraded to incarnation 2', err.message)
    assert.equal('VAT_UPGRADED', err.code)
    -- The old heap abandoned it (stopVat): the kernel answers for it.
    assert.matches('^%[KERNEL:OBJECT_DELETED%] Target object ko%d+ has been deleted$',
      rejection(ocap.E(eph).hi()).message)
    assert.equal(2, send(kernel, r.rootKref, 'version'))
  end)

  it('is a crank queued behind the messages already queued to the vat', function()
    launch()
    local before = { kernel:queueMessage(r.rootKref, 'increment', {}), kernel:queueMessage(r.rootKref, 'version', {}) }
    local up = kernel:upgradeVat(app, { sourceSpec = V2 })
    local after = { kernel:queueMessage(r.rootKref, 'increment', {}), kernel:queueMessage(r.rootKref, 'version', {}) }
    assert.equal(6, before[1]:await())
    assert.equal(1, before[2]:await())
    assert.same({ incarnation = 2 }, up:await())
    assert.equal(8, after[1]:await())
    assert.equal(2, after[2]:await())
  end)

  it('is offered by the kernel facet to system subclusters', function()
    kernel = testing.makeKernel({ systemSubclusters = { { name = 'admin', config = {
      bootstrap = 'admin', services = { 'kernelFacet' },
      vats = { admin = { sourceSpec = 'spec/vats/upgrade_admin.lua' } } } } } })
    r = kernel:launchSubcluster(cluster()):await()
    app = kernel:getSubcluster(r.subclusterId).vats.app
    local admin = kernel:getSystemSubclusterRoot('admin')
    assert.same({ incarnation = 2 }, send(kernel, admin, 'upgrade', app, { sourceSpec = V2 }))
    assert.equal(2, send(kernel, r.rootKref, 'version'))
    local err = rejection(kernel:queueMessage(admin, 'upgrade',
      { app, { sourceSpec = BAD, parameters = { fail = 'throw' } } }))
    assert.equal('[KERNEL:DELIVERY_FAILED] vat ' .. app .. ' (app) failed to upgrade: buildRootObject failed: '
      .. 'v3 cannot start', err.message)
  end)

  describe('that fails', function()
    local CASES = {
      { 'throw', 'buildRootObject failed: v3 cannot start' },
      { 'kind', 'buildRootObject did not prepare again what the previous incarnation defined: kind "Account" '
        .. '(call prepareExo / prepareExoClass for each)' },
      { 'pending', 'buildRootObject did not finish (it awaits something that never settles)' },
      { 'noroot', 'buildRootObject must return a remotable (use makeDefaultExo)' },
      { 'loop', 'instruction meter exhausted' },
      { 'memory', 'memory limit exceeded' },
    }
    for _, case in ipairs(CASES) do
      it(('(%s) changes nothing: old code, old heap, old state, byte for byte'):format(case[1]), function()
        local db = testing.tempDir()
        launch({ globals = { 'setTimeout' }, creationOptions = { memoryLimit = 16 * 2 ^ 20,
          meter = { instructions = 2e7 } } }, { database = db })
        assert.equal(6, send(kernel, r.rootKref, 'increment'))
        local clock = send(kernel, r.rootKref, 'clock')
        assert.equal(1, ocap.E(clock).tick():await())
        local waiting = kernel:queueMessage(r.rootKref, 'wait', {})
        assert.equal(6, send(kernel, r.rootKref, 'get'))   -- wait has been delivered
        local up = kernel:upgradeVat(app, { sourceSpec = BAD, parameters = { fail = case[1] } })
        local before = dump(kernel.K)
        local err = rejection(up)
        assert.equal(('vat %s (app) failed to upgrade: %s'):format(app, case[2]), err.message)
        kernel:run()
        -- Only the upgrade's own run-queue item is gone, and with it the
        -- reference it held on the kernel's admin object (its refCount).
        local changed = {}
        for _, key in ipairs(diff(before, dump(kernel.K))) do
          if key ~= kernel.K:kvGet('vatAdmin') .. '.refCount' then changed[#changed + 1] = key end
        end
        assert.equal(2, #changed, table.concat(changed, ' '))
        assert.matches('^runQueue%.%d+$', changed[1])
        assert.equal('runQueue.head', changed[2])
        assert.is_nil(dump(kernel.K)[changed[1]])
        -- The old heap runs on: its pending result settles, its code answers.
        assert.equal(1, send(kernel, r.rootKref, 'release', 'done'))
        assert.equal('done', waiting:await())
        assert.equal(1, send(kernel, r.rootKref, 'version'))
        assert.equal(7, send(kernel, r.rootKref, 'increment'))
        assert.equal(2, ocap.E(clock).tick():await())
        assert.equal(0, send(kernel, r.rootKref, 'get') - 7)
        assert.equal(0, send(kernel, kernel.K:krefOf(peer, 'o+0'), 'get'))   -- the bad code's send is gone
        assert.equal(1, statusOf(kernel, app).incarnation)
        -- A kernel restart after the failed upgrade runs the old code.
        kernel = testing.restart(kernel)
        assert.equal(1, send(kernel, r.rootKref, 'version'))
        assert.equal(8, send(kernel, r.rootKref, 'increment'))
        assert.equal(1, statusOf(kernel, app).incarnation)
        assert.equal(V1, kernel:getSubcluster(r.subclusterId).config.vats.app.sourceSpec)
      end)
    end

    it('(code that does not load) rejects with the loader\'s message', function()
      launch()
      local err = rejection(kernel:upgradeVat(app, { sourceSpec = 'spec/vats/bad_syntax.lua' }))
      assert.matches('^vat ' .. app .. ' %(app%) failed to upgrade: error loading module', err.message)
      assert.equal(1, send(kernel, r.rootKref, 'version'))
    end)
  end)

  it('survives a kernel restart: the stored bundle is the new one', function()
    local db, dir = testing.tempDir(), testing.tempDir()
    local copy = dir .. '/v2.lua'
    assert(os.execute(('cp %s %s'):format(V2, copy)))
    launch(nil, { database = db })
    send(kernel, r.rootKref, 'increment')
    kernel:upgradeVat(app, { sourceSpec = copy }):await()
    assert(os.remove(copy))
    kernel = testing.restart(kernel)
    assert.equal(2, send(kernel, r.rootKref, 'version'))
    assert.equal(8, send(kernel, r.rootKref, 'increment'))
    assert.equal(1, send(kernel, r.rootKref, 'bootstraps'))
    assert.equal(2, statusOf(kernel, app).incarnation)
  end)

  it('keeps the old incarnation\'s timers when it fails, and stops them when it succeeds', function()
    launch({ globals = { 'setInterval' } })
    local beats = kernel:queueMessage(r.rootKref, 'beat', { 20 })
    local err = rejection(kernel:upgradeVat(app, { sourceSpec = BAD, parameters = { fail = 'throw' } }))
    assert.matches('failed to upgrade', err.message, 1, true)
    assert.equal(20, beats:await())                 -- the held heap's interval ran on
    assert.is_true(kernel.K:loopAlive())
    beats = kernel:queueMessage(r.rootKref, 'beat', { 1e9 })
    kernel:upgradeVat(app, { sourceSpec = V2 }):await()
    assert.matches('VAT_UPGRADED', rejection(beats).message, 1, true)
    assert.is_false(kernel.K:loopAlive())           -- no timer of the old heap is left
  end)

  it('drops a request still queued when the kernel restarts', function()
    launch(nil, { database = testing.tempDir() })
    kernel:upgradeVat(app, { sourceSpec = V2 })
    kernel = testing.restart(kernel)
    kernel:run()
    assert.equal(1, send(kernel, r.rootKref, 'version'))
    assert.equal(1, statusOf(kernel, app).incarnation)
    assert.same({ incarnation = 2 }, kernel:upgradeVat(app, { sourceSpec = V2 }):await())
    assert.equal(2, send(kernel, r.rootKref, 'version'))
  end)

  it('can give a vat that failed to restart code that starts', function()
    kernel = testing.makeKernel()
    r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'spec/vats/counter.lua' } } })
      :await()
    local c = kernel:getSubcluster(r.subclusterId).vats.c
    send(kernel, r.rootKref, 'increment', 4)
    send(kernel, r.rootKref, 'poison')
    assert.matches('failed to restart: .*poisoned', rejection(kernel:restartVat(c)).message)
    assert.equal('failed', statusOf(kernel, c).state)
    local fixed = testing.tempDir() .. '/fixed.lua'
    local f = assert(io.open(fixed, 'w'))
    f:write([[
      local ocap = require 'ocap'
      return { buildRootObject = function(_, _, baggage)
        return ocap.makeDefaultExo('counter', { get = function() return baggage:get('count') end })
      end }]])
    f:close()
    assert.same({ incarnation = 2 }, kernel:upgradeVat(c, { sourceSpec = fixed }):await())
    assert.equal('running', statusOf(kernel, c).state)
    assert.equal(4, send(kernel, r.rootKref, 'get'))
  end)

  it('keeps revocations', function()
    launch()
    local clock = send(kernel, r.rootKref, 'clock')
    kernel:revoke(kernel:krefOf(clock))
    kernel:upgradeVat(app, { sourceSpec = V2 }):await()
    assert.equal('[KERNEL:OBJECT_REVOKED] Target object has been revoked', rejection(ocap.E(clock).tick()).message)
    assert.is_true(kernel:isRevoked(kernel:krefOf(clock)))
  end)

  describe('of a subcluster', function()
    it('upgrades every vat at once, or none', function()
      launch()
      local cfg = cluster()
      cfg.vats.app.sourceSpec, cfg.vats.peer.sourceSpec = V2, V2
      local res = kernel:upgradeSubcluster(r.subclusterId, cfg):await()
      assert.same({ incarnation = 2, vats = { app = 2, peer = 2 } }, res)
      assert.equal(2, kernel:getSubcluster(r.subclusterId).incarnation)
      assert.equal(2, send(kernel, r.rootKref, 'version'))
      -- app's new code would do, peer's fails: neither changes.
      cfg.vats.app.sourceSpec = V1
      cfg.vats.peer = { sourceSpec = BAD, parameters = { fail = 'throw' } }
      local err = rejection(kernel:upgradeSubcluster(r.subclusterId, cfg))
      assert.equal(('vat %s (peer) failed to upgrade: buildRootObject failed: v3 cannot start'):format(peer),
        err.message)
      assert.equal(2, send(kernel, r.rootKref, 'version'))
      assert.equal(2, statusOf(kernel, app).incarnation)
      assert.equal(V2, kernel:getSubcluster(r.subclusterId).config.vats.app.sourceSpec)
    end)

    it('refuses a config that adds, drops or renames what an upgrade keeps', function()
      launch()
      local before = dump(kernel.K)
      local function refused(cfg) return rejection(kernel:upgradeSubcluster(r.subclusterId, cfg)).message end
      local cfg = cluster()
      cfg.vats.extra = { sourceSpec = V2 }
      assert.equal(('upgradeSubcluster(%s): ClusterConfig.vats.extra: the subcluster has no vat "extra" (an upgrade '
        .. 'cannot add vats)'):format(r.subclusterId), refused(cfg))
      cfg = cluster()
      cfg.vats.peer = nil
      assert.equal(('upgradeSubcluster(%s): ClusterConfig.vats: vat "peer" is missing (an upgrade keeps every vat '
        .. 'of the subcluster)'):format(r.subclusterId), refused(cfg))
      cfg = cluster()
      cfg.bootstrap = 'peer'
      assert.matches('ClusterConfig.bootstrap: is "peer", but the subcluster\'s is "app"', refused(cfg), 1, true)
      cfg = cluster()
      cfg.services = { 'kernelFacet' }
      assert.matches('an upgrade cannot change the services', refused(cfg), 1, true)
      assert.equal('no subcluster "s99"', rejection(kernel:upgradeSubcluster('s99', cluster())).message)
      cfg = cluster()
      cfg.vats.app.sourceSpec = nil
      assert.matches('ClusterConfig.vats.app: exactly one of sourceSpec, bundleSpec, bundleName is required',
        refused(cfg), 1, true)
      assert.same({}, diff(before, dump(kernel.K)))
    end)
  end)

  describe('refuses bad input, changing nothing', function()
    it('an unknown or terminated vat, a spec with zero or two sources or other keys', function()
      launch()
      local before = dump(kernel.K)
      local function refused(vatId, spec) return rejection(kernel:upgradeVat(vatId, spec)).message end
      assert.equal('no vat "v99"', refused('v99', { sourceSpec = V2 }))
      local where = ('upgradeVat(%s)'):format(app)
      assert.equal(where .. ': exactly one of sourceSpec, bundleSpec, bundleName is required', refused(app, {}))
      assert.equal(where .. ': exactly one of sourceSpec, bundleSpec, bundleName is required',
        refused(app, { sourceSpec = V2, bundleSpec = 'x.bundle' }))
      assert.equal(where .. ': unknown key "creationOptions" (an upgrade takes sourceSpec, bundleSpec or '
        .. 'bundleName, and parameters)', refused(app, { sourceSpec = V2, creationOptions = {} }))
      assert.equal(where .. '.bundleName: no bundle named "nope" in the subcluster\'s ClusterConfig.bundles',
        refused(app, { bundleName = 'nope' }))
      assert.equal(where .. ': the upgrade spec must be a table', refused(app, V2))
      assert.equal(where .. '.parameters: must be a table', refused(app, { sourceSpec = V2, parameters = 3 }))
      assert.matches('^' .. where:gsub('%p', '%%%0') .. '%.sourceSpec: cannot read "nope%.lua"',
        refused(app, { sourceSpec = 'nope.lua' }))
      assert.same({}, diff(before, dump(kernel.K)))
      kernel:terminateVat(peer, 'no longer needed'):await()
      assert.equal(('vat %s was terminated (no longer needed): a terminated vat cannot be upgraded'):format(peer),
        refused(peer, { sourceSpec = V2 }))
      assert.equal(1, send(kernel, r.rootKref, 'version'))
    end)

    it('a vat terminated while its upgrade waited in the queue', function()
      launch()
      local up = kernel:upgradeVat(peer, { sourceSpec = V2 })
      kernel:terminateVat(peer, 'gone'):await()
      assert.equal(('vat %s was terminated (gone): a terminated vat cannot be upgraded'):format(peer),
        rejection(up).message)
    end)
  end)
end)
