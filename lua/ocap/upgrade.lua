--- Vat upgrade ("Upgrading a vat" in docs/guide.md; docs/api.md §6): a vat
--- gets new code and keeps its durable state, or, when the new code cannot
--- take over, keeps everything it had.
---
--- An upgrade is a crank of its own, queued in order: the request sends a
--- message to `vatAdmin`, an object of the kernel's own endpoint, so that
--- the messages already queued to the vat reach the old incarnation first.
--- When that message is delivered, the upgrade is due, and it runs as soon
--- as that crank has committed (no crank runs in between; a crank that
--- rolls back drops it, and its message comes again): the old Lua state is
--- held aside (K:holdVat), the promises the old incarnation decided are
--- rejected, and the new code starts on the same store. Any failure drops
--- every write of the attempt (K:abort) and puts the held state back, heap,
--- timers and awaits included; success writes the new bundle and vat record
--- and frees the held state.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local exo = require 'ocap.exo'
local config = require 'ocap.config'

local M = {}

local SOURCE_KEYS = { 'sourceSpec', 'bundleSpec', 'bundleName' }

local function rejected(msg)
  return promise.reject(pass.makeError(msg))
end

local function kernelErrorBody(code, detail)
  return marshal.serializeData(pass.makeError(('[KERNEL:%s] %s'):format(code, detail))).body
end

--- The kref of the kernel's vatAdmin object, which upgrade requests are
--- sent to; made on first need, and kept (store key `vatAdmin`) so that a
--- request still queued when the kernel restarts finds an object there.
---@param kernel table
---@return string kref
function M.adminKref(kernel)
  local K = kernel.K
  local kref = K:kvGet('vatAdmin')
  if kref and kernel.vatAdmin.kref == kref then return kref end
  if kref then
    kernel.ls.exportAs(kernel.vatAdmin.object, kref)
  else
    kref = kernel.ls.export(kernel.vatAdmin.object)
    kernel.ls.pin(kref)
    K:kvSet('vatAdmin', kref)
    K:pin(kref) -- named by that key for good: GC must never take it
  end
  kernel.vatAdmin.kref = kref
  return kref
end

--- Sets up a kernel's upgrade machinery; a vatAdmin kref stored by an
--- earlier run is bound again at once.
---@param kernel table the host-side kernel object
function M.install(kernel)
  local pending = {}
  kernel.vatAdmin = {
    pending = pending, -- request id -> job, until its crank has committed
    nextId = 1,
    object = exo.makeDefaultExo('vatAdmin', {
      -- A request made by a previous run of the kernel is not pending
      -- here: its promise was rejected with the host's others.
      upgrade = function(_, id)
        if not pending[id] then return end
        kernel:_afterCrank(function()
          local job = pending[id]
          if job then
            pending[id] = nil
            M.run(kernel, job)
          end
        end)
      end,
    }),
  }
  if kernel.K:kvGet('vatAdmin') then M.adminKref(kernel) end
end

--- Queues job as a crank and returns the promise of its result.
local function request(kernel, job)
  local va = kernel.vatAdmin
  local id = va.nextId
  va.nextId = id + 1
  job.kit = promise.makePromiseKit()
  va.pending[id] = job
  kernel.ls.sendTo(M.adminKref(kernel), 'upgrade', table.pack(id), false)
  return job.kit.promise
end

--- The record of a vat that can be upgraded, or nil and why not.
local function upgradable(kernel, vatId)
  if type(vatId) ~= 'string' then return nil, ('no vat %q'):format(tostring(vatId)) end
  local rec = kernel:_get('vat.' .. vatId)
  if rec then return rec end
  local t = kernel:_get('terminated.' .. vatId)
  if t then
    return nil, ('vat %s was terminated (%s): a terminated vat cannot be upgraded'):format(vatId,
      tostring(t.reason))
  end
  return nil, ('no vat %q'):format(vatId)
end

--- Checks an upgradeVat spec; returns true or nil and a message naming
--- the field.
local function checkSpec(where, spec, bundles)
  if type(spec) ~= 'table' then return nil, where .. ': the upgrade spec must be a table' end
  for k in pairs(spec) do
    if k ~= 'parameters' and k ~= 'sourceSpec' and k ~= 'bundleSpec' and k ~= 'bundleName' then
      return nil, ('%s: unknown key %q (an upgrade takes sourceSpec, bundleSpec or bundleName, and '
        .. 'parameters)'):format(where, tostring(k))
    end
  end
  local n = 0
  for _, k in ipairs(SOURCE_KEYS) do
    if spec[k] ~= nil then
      if type(spec[k]) ~= 'string' then return nil, ('%s.%s: must be a string'):format(where, k) end
      n = n + 1
    end
  end
  if n ~= 1 then return nil, where .. ': exactly one of sourceSpec, bundleSpec, bundleName is required' end
  if spec.bundleName and not (bundles and bundles[spec.bundleName]) then
    return nil, ('%s.bundleName: no bundle named %q in the subcluster\'s ClusterConfig.bundles'):format(where,
      spec.bundleName)
  end
  if spec.parameters ~= nil then
    if type(spec.parameters) ~= 'table' then return nil, where .. '.parameters: must be a table' end
    local ok, err = pcall(marshal.serializeData, spec.parameters)
    if not ok then return nil, ('%s.parameters: not plain data: %s'):format(where, tostring(err)) end
  end
  return true
end

--- A deep copy of plain data (configs are kept and compared as data).
local function copy(v)
  return marshal.unserializeData(marshal.serializeData(v))
end

--- kernel:upgradeVat(vatId, spec): see docs/api.md.
function M.upgradeVat(kernel, vatId, spec)
  local rec, err = upgradable(kernel, vatId)
  if not rec then return rejected(err) end
  local where = ('upgradeVat(%s)'):format(vatId)
  local sc = kernel:_get('subcluster.' .. rec.subclusterId)
  local clusterConfig = sc and sc.config or {}
  local ok, serr = checkSpec(where, spec, clusterConfig.bundles)
  if not ok then return rejected(serr) end
  local bundle, berr = kernel:_loadBundle(rec.name, spec, clusterConfig, where)
  if not bundle then return rejected(berr) end
  -- The new config: the old one with the new source and parameters.
  local vc = copy(rec.config)
  for _, k in ipairs(SOURCE_KEYS) do vc[k] = nil end
  for k, v in pairs(copy(spec)) do vc[k] = v end
  return request(kernel, { vats = { { vatId = vatId, config = vc, bundle = bundle } } })
end

local function sortedKeys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

--- kernel:upgradeSubcluster(id, clusterConfig): see docs/api.md.
function M.upgradeSubcluster(kernel, id, cfg)
  local sc = type(id) == 'string' and kernel:_get('subcluster.' .. id)
  if not sc then return rejected(('no subcluster %q'):format(tostring(id))) end
  local where = ('upgradeSubcluster(%s)'):format(id)
  local ok, err = config.validateCluster(cfg, kernel.options.allowedGlobalNames)
  if not ok then return rejected(where .. ': ' .. err) end
  for _, name in ipairs(sortedKeys(cfg.vats)) do
    if not sc.vats[name] then
      return rejected(('%s: ClusterConfig.vats.%s: the subcluster has no vat %q (an upgrade cannot add vats)')
        :format(where, name, name))
    end
  end
  for _, name in ipairs(sortedKeys(sc.vats)) do
    if not cfg.vats[name] then
      return rejected(('%s: ClusterConfig.vats: vat %q is missing (an upgrade keeps every vat of the '
        .. 'subcluster)'):format(where, name))
    end
  end
  if cfg.bootstrap ~= sc.config.bootstrap then
    return rejected(('%s: ClusterConfig.bootstrap: is %q, but the subcluster\'s is %q (an upgrade keeps it)')
      :format(where, cfg.bootstrap, tostring(sc.config.bootstrap)))
  end
  local before, after = table.concat(sc.config.services or {}, ' '), table.concat(cfg.services or {}, ' ')
  if before ~= after then
    return rejected(('%s: ClusterConfig.services: an upgrade cannot change the services (bootstrap, which '
      .. 'receives them, does not run again)'):format(where))
  end
  if marshal.serializeData(sc.config.io or {}).body ~= marshal.serializeData(cfg.io or {}).body then
    return rejected(('%s: ClusterConfig.io: an upgrade cannot change the IO channels (bootstrap, which '
      .. 'receives them, does not run again)'):format(where))
  end
  if cfg.forceReset then
    return rejected(where .. ': ClusterConfig.forceReset: an upgrade keeps the subcluster\'s state')
  end
  local vats = {}
  for _, name in ipairs(sortedKeys(cfg.vats)) do
    local bundle, berr = kernel:_loadBundle(name, cfg.vats[name], cfg)
    if not bundle then return rejected(where .. ': ' .. berr) end
    vats[#vats + 1] = { vatId = sc.vats[name], config = copy(cfg.vats[name]), bundle = bundle }
  end
  return request(kernel, { subclusterId = id, clusterConfig = copy(cfg), vats = vats })
end

--- Checks, when its crank comes, that a job still applies (a vat may have
--- been terminated while it waited), and returns the plan: per vat its
--- record as it will be written.
local function plan(kernel, job)
  local sc
  if job.subclusterId then
    sc = kernel:_get('subcluster.' .. job.subclusterId)
    if not sc then error(('no subcluster %q'):format(job.subclusterId), 0) end
  end
  for _, v in ipairs(job.vats) do
    local rec, err = upgradable(kernel, v.vatId)
    if not rec then error(err, 0) end
    v.rec = { name = rec.name, subclusterId = rec.subclusterId, config = v.config,
      incarnation = (rec.incarnation or 1) + 1, parameterRefs = rec.parameterRefs }
    v.previousBundle = rec.bundle
    sc = sc or kernel:_get('subcluster.' .. rec.subclusterId)
  end
  return sc
end

--- Runs one due job. Returns its result, or raises the reason it failed
--- once every trace of the attempt is gone.
local function perform(kernel, job)
  local K = kernel.K
  K:commit()
  local sc = plan(kernel, job)
  local ok, err = pcall(function()
    for _, v in ipairs(job.vats) do
      -- The old heap lets go first: the exports only it held are
      -- abandoned, the imports only it held dropped (docs/gc.md).
      local stopped, reason = K:deliverStop(v.vatId)
      if not stopped then
        v.unfit = true
        error(('vat %s (%s) failed to stop for its upgrade: %s'):format(v.vatId, v.rec.name, tostring(reason)), 0)
      end
      K:holdVat(v.vatId)
      v.holding = true
      K:rejectDecided(v.vatId, kernelErrorBody('VAT_UPGRADED',
        ('vat %s upgraded to incarnation %d'):format(v.vatId, v.rec.incarnation)))
      local started, why = kernel:_startVat(v.vatId, v.rec, v.bundle, true)
      if not started then
        error(('vat %s (%s) failed to upgrade: %s'):format(v.vatId, v.rec.name, tostring(why)), 0)
      end
    end
    for _, v in ipairs(job.vats) do
      -- The new bundle is counted before the old one is let go, so that
      -- an upgrade to the same code keeps its one copy.
      v.rec.bundle = kernel:_holdBundle(v.bundle)
      kernel:_releaseBundle(v.previousBundle)
      kernel:_put('vat.' .. v.vatId, v.rec)
    end
    if sc then
      if job.clusterConfig then
        sc.config = job.clusterConfig
        sc.incarnation = (sc.incarnation or 1) + 1
      else
        local v = job.vats[1]
        sc.config.vats[v.rec.name] = v.config
      end
      kernel:_put('subcluster.' .. sc.id, sc)
    end
    K:commit()
  end)
  if not ok then
    K:abort()
    for _, v in ipairs(job.vats) do
      if v.holding then K:releaseHeld(v.vatId, true) end
      -- A heap whose stopVat failed may be half stopped: it goes, and the
      -- vat restarts from its store at its next delivery, as after a crash.
      if v.unfit then K:stopVat(v.vatId) end
    end
    error(err, 0)
  end
  local result = {}
  for _, v in ipairs(job.vats) do
    K:releaseHeld(v.vatId, false)
    kernel.failing[v.vatId] = nil
    result[v.rec.name] = v.rec.incarnation
  end
  if job.clusterConfig then return { incarnation = sc.incarnation, vats = result } end
  return { incarnation = job.vats[1].rec.incarnation }
end

--- Runs an upgrade whose crank has come and committed, settling its
--- promise.
---@param kernel table
---@param job table
function M.run(kernel, job)
  local ok, r = pcall(perform, kernel, job)
  if ok then
    job.kit.resolve(r)
  else
    local msg = type(r) == 'table' and r.message or tostring(r)
    kernel.logger({ level = 'warn', tags = { 'kernel' }, vatId = 'kernel', message = msg })
    job.kit.reject(pass.makeError(msg))
  end
end

--- Rejects every upgrade not run yet (kernel:reset wipes their messages).
function M.dropPending(kernel, why)
  local va = kernel.vatAdmin
  for id, job in pairs(va.pending) do
    va.pending[id] = nil
    job.kit.reject(pass.makeError(why))
  end
  va.kref = nil
end

return M
