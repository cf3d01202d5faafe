--- The host side of the kernel: Kernel.make and the management plane
--- (subclusters, vat records, services, status). The hot path (crank loop,
--- c-lists, vats) is C, reached through ocap.core.
local core = require 'ocap.core'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local liveslots = require 'ocap.liveslots'
local logview = require 'ocap.logview'
local config = require 'ocap.config'
local system = require 'ocap.system'
local upgrade = require 'ocap.upgrade'
local loop = require 'ocap.loop'
local ioChannels = require 'ocap.io'
local hex = require 'ocap.hex'

local M = {}

local SCHEMA_VERSION = '5'

local RUNTIME_MODULES = {
  'ocap.pass', 'ocap.pass.boxes', 'ocap.pass.style', 'ocap.promise', 'ocap.promise.combinators', 'ocap.marshal',
  'ocap.marshal.reference', 'ocap.hex', 'ocap.exo', 'ocap.stores', 'ocap.logger', 'ocap.guards', 'ocap.durable',
  'ocap.vom', 'ocap.liveslots', 'ocap.liveslots.gc', 'ocap.liveslots.rare',
  'ocap.liveslots.kits', 'ocap.liveslots.eventual', 'ocap.api', 'ocap.vatboot',
  'ocap.vatboot.endow', 'ocap.vatboot.explain', 'ocap.vatboot.rare',
}

local runtimeCache

--- The runtime modules' sources, read once per host state.
local function runtimeSources()
  if runtimeCache then return runtimeCache end
  local list = {}
  for _, name in ipairs(RUNTIME_MODULES) do
    local path = package.searchpath(name, package.path)
    if path then
      local f = assert(io.open(path, 'rb'))
      list[#list + 1] = { name, f:read('a') }
      f:close()
    elseif name ~= 'ocap.guards' then
      error('ocap: runtime module ' .. name .. ' not found on package.path')
    end
  end
  runtimeCache = list
  return list
end

local function encode(v) return marshal.serializeData(v).body end
local function decode(s) return s and marshal.unserializeData({ body = s, slots = {} }) end

local function kernelErrorBody(code, detail)
  return encode(pass.makeError(('[KERNEL:%s] %s'):format(code, detail)))
end

-- Every kernel alive in this Lua state, so await on the main thread can
-- drive them all.
local liveKernels = setmetatable({}, { __mode = 'k' })

--- Flushes every kernel's cranks and writes what host turns queued for
--- remote peers; true when a remote pump handled something, which may
--- have given a kernel work (a message that came from a peer).
local function flushAll()
  local moved = false
  for kernel in pairs(liveKernels) do
    -- Kernel:_flushIfNeeded, inline: this runs at every host round trip.
    if not kernel.stopped then
      local K = kernel.K
      if K:pending() > 0 then K:flush() end
    end
    -- What host turns queued for remote peers leaves now too.
    if kernel.remote and kernel.remote:pump() then moved = true end
  end
  return moved
end

local BATCH = 64
local GROUP_LIMIT = 512

local function drive(isSettled, wait)
  while true do
    -- Results reach host code only through turns or through the awaited
    -- promise: flush the cranks that made them before either runs (group
    -- commit), and not otherwise.
    if promise.hasTurns() then flushAll() end
    promise.drain()
    if isSettled() then
      flushAll()
      return
    end
    local progressed = false
    for kernel in pairs(liveKernels) do
      -- Cranks run in C, in a bounded batch that ends after the first
      -- crank in which host code ran: only host code can queue a host
      -- turn or settle the awaited promise.
      if not kernel.stopped then
        if kernel.remote and kernel.remote:pump() then progressed = true end
        -- K:drive polls the loop first: what a peer sent may have come
        -- in then, with no crank to run yet. It is handled now, or the
        -- loop below would wait for more IO with the message's crank
        -- queued, and the peer would wait for its answer (a hang).
        local ran, visible = kernel.K:drive(BATCH, GROUP_LIMIT)
        if ran > 0 then progressed = true end
        -- What follows host code and reaps, tested here first: most
        -- batches have neither to do.
        if visible and next(kernel.failing) ~= nil then kernel:_afterHostCode() end
        if kernel.reapWaiters[1] then kernel:_settleReaps() end
        if kernel.remote and kernel.remote:pump() then progressed = true end
      end
    end
    -- The flush pumps the remote comms once more: whatever they handled
    -- then may have queued work, so the loop goes round again.
    if not progressed and not promise.hasTurns() and not flushAll() then
      -- Idle: only the event loop (vat timers) can still change anything.
      if not wait then return end
      local waiting = {}
      for kernel in pairs(liveKernels) do
        if not kernel.stopped and kernel.K:loopAlive() then waiting[#waiting + 1] = kernel end
      end
      if #waiting == 0 then return end
      if #waiting == 1 then
        waiting[1].K:runLoop(true)
      else
        -- Several kernels (remote peers in one process, say): wait on all
        -- their loops at once, then run each one's ready callbacks.
        local fds, timeout = {}, -1
        for i, kernel in ipairs(waiting) do
          local fd, t = kernel.K:loopBackend()
          fds[i] = fd
          if t >= 0 and (timeout < 0 or t < timeout) then timeout = t end
        end
        core.net.wait(fds, timeout)
        for _, kernel in ipairs(waiting) do kernel.K:runLoop(false) end
      end
    end
  end
end

-- The only kernel alive, when there is one and it has no remote layer
-- (weak, as liveKernels is): await on the main thread then drives it in
-- C (K:await), with no Lua call per crank batch. Kernel.make and stop
-- clear it; it is found again at the next await.
local sole = setmetatable({}, { __mode = 'v' })

local function soleKernel()
  local kernel = next(liveKernels)
  if kernel == nil or next(liveKernels, kernel) ~= nil then return nil end
  sole[1] = kernel
  return kernel
end

promise.setMainDriver(function(isSettled)
  local kernel = sole[1] or soleKernel()
  while kernel and not kernel.stopped and not kernel.remote do
    local r = kernel.K:await(isSettled, kernel.failing, kernel.reapWaiters)
    if r == true then return end
    if not r then break end
    -- What follows host code and reaps, as drive does it (K:await
    -- answers 'host' only when there is some).
    if next(kernel.failing) ~= nil then kernel:_afterHostCode() end
    if kernel.reapWaiters[1] then kernel:_settleReaps() end
  end
  return drive(isSettled, true)
end)

local Kernel = {}
Kernel.__index = Kernel

local OPTION_KEYS = {
  database = 'string', resetStorage = 'boolean', logger = 'function', services = 'table',
  systemSubclusters = 'table', allowedGlobalNames = 'table', baseDir = 'string',
  durability = 'string', gc = 'table', remote = 'table',
}

local DEFAULT_REAP_INTERVAL = 200

--- The deliveries per vat between reaps, from options.gc (docs/gc.md), or
--- false when reaping is off. Raises on a bad value, at Kernel.make's caller.
local function reapInterval(gc)
  if gc == nil then return DEFAULT_REAP_INTERVAL end
  for k in pairs(gc) do
    if k ~= 'reapInterval' then error(('Kernel.make: option gc has unknown key %q'):format(tostring(k)), 3) end
  end
  local n = gc.reapInterval
  if n == nil then return DEFAULT_REAP_INTERVAL end
  if n == false then return false end
  if math.type(n) ~= 'integer' or n < 1 then
    error(('Kernel.make: option gc.reapInterval must be a positive integer or false, got %s'):format(
      type(n) == 'string' and ('%q'):format(n) or tostring(n)), 3)
  end
  return n
end

--- The services through which vats issue and redeem sturdyrefs.
local function remoteServices(kernel)
  local exo = require 'ocap.exo'
  kernel:registerKernelServiceObject('ocapURLIssuerService', exo.makeDefaultExo('ocapURLIssuerService', {
    issue = function(_, obj, netlayer) return kernel.remote:issue(obj, nil, netlayer) end,
  }))
  kernel:registerKernelServiceObject('ocapURLRedemptionService', exo.makeDefaultExo('ocapURLRedemptionService', {
    redeem = function(_, url) return kernel.remote:redeem(url) end,
  }))
end

--- Makes a kernel.
---@param options table|nil see docs/api.md §6
function M.make(options)
  options = options or {}
  if M.defaults then options = M.defaults(options) end
  for k, v in pairs(options) do
    local want = OPTION_KEYS[k]
    if not want then error(('Kernel.make: unknown option %q'):format(tostring(k)), 2) end
    if type(v) ~= want and not (k == 'database' and v == false) then
      error(('Kernel.make: option %s must be a %s, got %s'):format(k, want, type(v)), 2)
    end
  end
  if options.durability ~= nil and options.durability ~= 'none' and options.durability ~= 'fsync' then
    error(("Kernel.make: option durability must be 'none' or 'fsync', got %q"):format(options.durability), 2)
  end
  local reapEvery = reapInterval(options.gc)
  local K, err = core.open({ database = options.database or nil, durability = options.durability })
  if not K then error('Kernel.make: ' .. err, 2) end
  local version = K:kvGet('version')
  if options.resetStorage then
    K:clear()
    version = nil
  end
  if version == nil then
    if K:kvNext('') ~= nil then
      K:close()
      error(('Kernel.make: database %s is not an ocap database (no version key)'):format(
        tostring(options.database)), 2)
    end
    K:kvSet('version', SCHEMA_VERSION)
    K:commit()
  elseif version ~= SCHEMA_VERSION then
    K:close()
    error(('Kernel.make: database %s has schema version %s; this ocap uses version %s'):format(
      tostring(options.database), version, SCHEMA_VERSION), 2)
  end
  K:setReapInterval(reapEvery)
  local rtOk, rtErr = pcall(function() K:setRuntime(runtimeSources()) end)
  if not rtOk then
    K:close()
    error('Kernel.make: ' .. tostring(rtErr), 2)
  end

  local self = setmetatable({
    K = K,
    options = options,
    baseDir = options.baseDir or '.',
    logger = options.logger or logview.default(),
    durability = options.durability or 'none',
    reapInterval = reapEvery,
    reapWaiters = {}, -- resolvers of reapVats() promises, until the reaps are done
    services = {},
    failing = {}, -- vatId -> why it failed to restart, until recorded
    afterCrank = {}, -- what host code in the running crank left for after it (Kernel:_afterCrank)
    bundleCache = setmetatable({}, { __mode = 'v' }), -- hash -> decoded bundle (Kernel:_bundle)
    bundleHashes = { n = 0 }, -- encoded bundle -> its hash, the last few (Kernel:_hashOf)
    encodedBundles = {}, -- main module -> a bundle, its encoding and hash, the last few (Kernel:_encodeBundle)
    nEncodedBundles = 0, -- apart from them: any string, `n` too, names a main module
    loneSources = {}, -- path -> a source read there that requires only the runtime (Kernel:_requiresOnlyRuntime)
    nLoneSources = 0,
    knownKrefs = {}, -- kref -> true once checked (Kernel:_krefOf)
    nKnownKrefs = 0,
    stopped = false,
  }, Kernel)

  local function log(level, message, data)
    self.logger({ level = level, tags = { 'kernel' }, vatId = 'kernel', message = message,
      data = data and { data, n = 1 } })
  end
  -- A kernel attached to a host loop (ocap.loop) is woken by the host's
  -- sends, wherever they come from.
  local function wake()
    if self._attachment then self._attachment:wake() end
  end
  local syscall = {
    send = function(t, body, slots, r)
      K:send(t, body, slots, r)
      if self._attachment then self._attachment:wake() end
    end,
    subscribe = function(p) K:subscribe(p) end,
    -- A promise the host exported may settle after the kernel stopped
    -- (in a later turn): nobody is left to tell, and the turn must not fail.
    resolve = function(p, rejected, body, slots)
      if not self.stopped then
        K:resolve(p, rejected, body, slots)
        wake()
      end
    end,
    vatstoreGet = function(k) return K:kvGet('vs.kernel.' .. k) end,
    vatstoreSet = function(k, v) K:kvSet('vs.kernel.' .. k, v) end,
    vatstoreDelete = function(k) K:kvDelete('vs.kernel.' .. k) end,
    vatstoreNext = function(prefix, after)
      local key = K:kvNext('vs.kernel.' .. prefix, after and ('vs.kernel.' .. after))
      return key and key:sub(#'vs.kernel.' + 1)
    end,
    traceback = debug.traceback,
  }
  -- What the host's liveslots reports at a reap point (docs/gc.md): the
  -- presences host code let go of, and the host's exports the kernel had
  -- it drop. Each goes to the kernel's binding of the same name, on a core
  -- that has it; without one, the host keeps them as before.
  for _, name in ipairs({ 'dropImports', 'retireImports', 'retireExports', 'abandonExports' }) do
    local method = K[name]
    if method then
      syscall[name] = function(vrefs)
        if not self.stopped then method(K, vrefs) end
      end
    end
  end
  self.ls = liveslots.make({
    syscall = syscall, vatId = 'kernel', kind = 'kernel', log = log,
    allocObject = function() return K:allocObject('kernel') end,
    allocPromise = function() return K:allocPromise('kernel') end,
    -- As for a vat, a string loses its position and an error keeps its
    -- name; raised data shows as its smallcaps encoding, as exit reasons do.
    wrapError = function(e)
      e = liveslots.normalizeError(e)
      if pass.isError(e) then
        if e.code then return e end
        return pass.makeError('[KERNEL:DELIVERY_FAILED] ' .. e.message, e.name)
      end
      local ok, cd = pcall(marshal.serializeData, e)
      return pass.makeError('[KERNEL:DELIVERY_FAILED] ' .. (ok and cd.body or tostring(e)))
    end,
  })
  K:setHostDispatch(self.ls.dispatch)
  K:setDrain(promise.drain, promise.hasTurns)
  K:setHostResults(self.ls.trackPromise, self.ls.pending, promise.settleAndResume)
  K:setHostPipelines(self.ls.pipelines)
  upgrade.install(self)
  self:_rejectPreviousHostPromises()
  K:setVatNeeded(function(vatId) return self:_restartVatState(vatId) end)
  K:setTerminated(function(vatId, reason) self:_forgetVat(vatId, reason) end)
  K:setExitHandler(function(vatId, failure, body) self:_vatExited(vatId, failure, body) end)
  K:setAfterCrank(function(committed) self:_runAfterCrank(committed) end)
  K:setLogger(function(vatId, level, payload)
    -- The kernel has bounded the payload's size and shape; what it holds
    -- is still the vat's, so it is checked and escaped before the logger
    -- sees it.
    local ok, fields = pcall(decode, payload)
    if not ok then fields = { message = payload } end
    self.logger(logview.fromVat(vatId, level, fields))
  end)
  liveKernels[self] = true
  sole[1] = nil
  -- Anything failing from here on must not leave the database open.
  local started, startErr = pcall(function()
    system.checkDeclared(options.systemSubclusters)
    self:registerKernelServiceObject('kernelFacet', system.makeKernelFacet(self), { systemOnly = true })
    local names = {}
    for name in pairs(options.services or {}) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      self:registerKernelServiceObject(name, options.services[name])
    end
    if options.remote then
      self.remote = require('ocap.remote').start(self, options.remote)
      remoteServices(self)
    elseif K:kvNext('remote.peer.') then
      -- A run with remote comms crashed with sessions open: their
      -- endpoints are ended here too, or messages routed to them would
      -- wait for ever (the remote layer is loaded only then).
      require('ocap.remote').endStale(K)
    end
    ioChannels.restore(self)
    system.start(self, options.systemSubclusters)
  end)
  if not started then
    self:stop()
    -- Only a position Lua put in front (a chunk name has no spaces) goes:
    -- the message may quote a vat's own file:line, which is the point.
    if type(startErr) == 'string' then startErr = startErr:gsub('^[^%s]-:%d+: ', '') end
    if type(startErr) == 'string' and not startErr:match('^Kernel%.make: ') then
      startErr = 'Kernel.make: ' .. startErr
    end
    error(startErr, 2)
  end
  M.latest = self
  return self
end

function Kernel:_check()
  if self.stopped then error('kernel is stopped', 3) end
end

--- Writes grouped cranks to disk before the host may see their results.
function Kernel:_flushIfNeeded()
  if self.stopped then return end
  if self.K:pending() > 0 then self.K:flush() end
end

--- What the host does after a crank in which its code ran: record the
--- vats that failed to restart.
function Kernel:_afterHostCode()
  self:_recordFailures()
end

-- ---- host work that must wait for the crank to end ----

-- Host code runs inside cranks (a kernel service, a result handler, the
-- kernel facet a system vat calls). What it writes to the store is the
-- crank's: K:commit there commits nothing, and the crank commits or rolls
-- back it all. What it does outside the store (a vat's Lua state started
-- or closed, an IO channel opened) could not be rolled back with the
-- crank, so it waits until the crank has committed (docs/api.md, "Host
-- calls made inside a crank").

--- From host code inside a crank: run() is called right after the crank
--- commits, before any later crank, in the order asked; it is dropped
--- when the crank rolls back, whose delivery then runs again and asks
--- again.
---@param run function
function Kernel:_afterCrank(run)
  local queue = self.afterCrank
  queue[#queue + 1] = run
  self.K:afterCrank()
end

--- The kernel's after-crank handler (K:setAfterCrank).
---@param committed boolean whether the crank committed
function Kernel:_runAfterCrank(committed)
  local queue = self.afterCrank
  if not queue[1] then return end
  self.afterCrank = {}
  if not committed then return end
  -- What this work does reaches beyond the kernel: the crank that asked
  -- for it is written first, as a result is before the host sees it.
  self:_flushIfNeeded()
  for _, run in ipairs(queue) do
    local ok, err = pcall(run)
    if not ok then
      self.logger({ level = 'error', tags = { 'kernel' }, vatId = 'kernel',
        message = 'host work after a crank failed: ' .. tostring(err) })
    end
  end
end

--- Runs fn now and returns what it returns, or, from host code inside a
--- crank, runs it once the crank has committed (Kernel:_afterCrank) and
--- returns a promise of its result: an error fn raises then rejects it.
---@param fn fun(): any
function Kernel:_outsideCrank(fn)
  if not self.K:inCrank() then return fn() end
  local kit = promise.makePromiseKit()
  self:_afterCrank(function()
    local ok, r = pcall(fn)
    if ok then
      kit.resolve(r)
    else
      kit.reject(pass.isError(r) and r or pass.makeError(liveslots.stripPosition(tostring(r))))
    end
  end)
  return kit.promise
end

--- Runs one crank; true when one ran.
function Kernel:step()
  self:_check()
  local did = self.K:step()
  self:_recordFailures()
  self:_settleReaps()
  self:_flushIfNeeded()
  promise.drain()
  return did
end

--- Drives the kernel until it is idle.
function Kernel:run()
  self:_check()
  drive(function() return false end)
end

--- Runs one bounded batch (promise turns and at most maxCranks cranks);
--- true when there may be more to do at once. For a host's own loop.
function Kernel:pump(maxCranks)
  self:_check()
  return loop.pump(self, maxCranks)
end

--- When the next batch is due: 0 now, nil never (until the host calls
--- in), else milliseconds until the kernel's next timer (-1: none) and
--- the descriptor that becomes readable when its IO is ready.
function Kernel:nextWakeup() return loop.nextWakeup(self) end

--- Runs the kernel from luv's loop; returns the attachment (:detach()).
function Kernel:attach(uv, opts) return loop.attach(self, uv, opts) end

--- Promises the previous host decided (its exported promises, results of
--- service calls in progress) can never be resolved by this one: reject
--- them, so that nothing waits on them forever.
function Kernel:_rejectPreviousHostPromises()
  local K, after, lost = self.K, nil, {}
  while true do
    local key = K:kvNext('kp', after)
    if not key then break end
    after = key
    if key:match('^kp%d+%.decider$') and K:kvGet(key) == 'kernel' then
      lost[#lost + 1] = key:match('^(kp%d+)')
    end
  end
  if #lost == 0 then return end
  local body = kernelErrorBody('VAT_TERMINATED', 'the host that decided this promise was restarted')
  for _, kpid in ipairs(lost) do K:resolve(kpid, true, body, {}) end
  K:commit()
end

-- ---- records ----

-- Records are checked whole when they are read back, so that a damaged
-- one is reported as corruption naming its key, never met later as a Lua
-- error in code that trusted its shape.
local function stringValues(t)
  for _, v in pairs(t) do
    if type(v) ~= 'string' then return false end
  end
  return true
end

local RECORDS = {
  ['vat.'] = { 'a vat record', function(key, r)
    return key:match('^vat%.v%d+$') and type(r.name) == 'string' and type(r.subclusterId) == 'string'
      and type(r.config) == 'table' and (r.incarnation == nil or math.type(r.incarnation) == 'integer')
      and type(r.bundle) == 'string' and #r.bundle == 64 and r.bundle:match('^[0-9a-f]+$') ~= nil
  end },
  ['bundle.'] = { 'a bundle', function(key, b)
    return key:match('^bundle%.[0-9a-f]+$') and type(b.main) == 'string' and type(b.modules) == 'table'
      and type(b.modules[b.main]) == 'string'
  end },
  ['subcluster.'] = { 'a subcluster record', function(_, sc)
    return type(sc.id) == 'string' and sc.id:match('^s%d+$') and type(sc.config) == 'table'
      and type(sc.vats) == 'table' and stringValues(sc.vats)
      and (sc.incarnation == nil or math.type(sc.incarnation) == 'integer')
  end },
  ['terminated.'] = { 'a termination record', function(_, t)
    return t.reason == nil or type(t.reason) == 'string'
  end },
}

-- The message the C kernel gives for a damaged value, in the same words.
local function corrupt(key, value, what)
  local shown = (#value > 60 and value:sub(1, 60) .. '...' or value):gsub('[^\32-\126]', '?')
  return ("corrupt database: key '%s' holds '%s' (%d bytes), which is not %s"):format(key, shown, #value,
    what)
end

--- The record `raw` stored under `key` decoded (nil for nil), or an error
--- naming the key when it is not what its key family holds.
local function decodeRecord(key, raw)
  if raw == nil then return nil end
  local ok, v = pcall(decode, raw)
  local check = RECORDS[key:match('^%a+%.')]
  if not ok or (check and (type(v) ~= 'table' or not check[2](key, v))) then
    error(corrupt(key, raw, check and check[1] or 'a record'), 0)
  end
  return v
end

function Kernel:_get(key)
  return decodeRecord(key, self.K:kvGet(key))
end

function Kernel:_put(key, v) self.K:kvSet(key, encode(v)) end

function Kernel:_scan(prefix)
  local out, after = {}, nil
  while true do
    local key = self.K:kvNext(prefix, after)
    if not key then return out end
    out[#out + 1] = key
    after = key
  end
end

-- ---- bundles ----

-- Each distinct bundle is stored once, under the SHA-256 of its encoding
-- (`bundle.<hex>`), with the number of vat records that name it
-- (`bundle.<hex>.refCount`); a vat record names its bundle by that hash.
-- Vats of the same code share one copy, so a database of many of them
-- holds the code once, and a restart replays it once.
local sha256 = core.crypto.sha256

--- The hash of an encoded bundle. Hashing costs about 50 instructions a
--- byte, more than the rest of storing a bundle, and launches come in runs
--- of one code (ten vats of a subcluster, many subclusters alike): the
--- last few hashes are kept, keyed by the bytes they were made from.
function Kernel:_hashOf(raw)
  local memo = self.bundleHashes
  local hash = memo[raw]
  if hash then return hash end
  hash = hex.encode(sha256(raw))
  if memo.n == 16 then
    memo = { n = 0 }
    self.bundleHashes = memo
  end
  memo[raw], memo.n = hash, memo.n + 1
  return hash
end

-- How many bundles' encodings a kernel remembers (Kernel:_encodeBundle).
local ENCODED_BUNDLES = 16

--- A copy of bundle, and its number of fields and of modules, when its
--- fields are strings and a `modules` table of strings by name, all plain
--- tables (what sources and bundle files make); nil for any other shape.
local function plainBundle(bundle)
  if getmetatable(bundle) ~= nil then return nil end
  local copy, nFields, nModules = {}, 0, 0
  for k, v in pairs(bundle) do
    if k == 'modules' then
      if type(v) ~= 'table' or getmetatable(v) ~= nil then return nil end
      local modules = {}
      for name, src in pairs(v) do
        if type(name) ~= 'string' or type(src) ~= 'string' then return nil end
        modules[name], nModules = src, nModules + 1
      end
      v = modules
    elseif type(k) ~= 'string' or type(v) ~= 'string' then
      return nil
    end
    copy[k], nFields = v, nFields + 1
  end
  return copy, nFields, nModules
end

--- Whether bundle has exactly the fields and modules of a remembered one.
--- Comparing strings equal in length is a memcmp, a small part of what
--- encoding or hashing them costs.
local function sameBundle(entry, bundle)
  if getmetatable(bundle) ~= nil then return false end
  local copy, nFields = entry.copy, 0
  for k, v in pairs(bundle) do
    local c = copy[k]
    if k == 'modules' then
      if type(v) ~= 'table' or getmetatable(v) ~= nil then return false end
      local nModules = 0
      for name, src in pairs(v) do
        if c[name] ~= src then return false end
        nModules = nModules + 1
      end
      if nModules ~= entry.nModules then return false end
    elseif c ~= v then
      return false
    end
    nFields = nFields + 1
  end
  return nFields == entry.nFields
end

--- The encoding of a bundle and its hash. A launch reads its vats'
--- sources afresh, and encoding them (smallcaps quotes every byte), then
--- finding the hash of the encoding by its bytes, cost about 25
--- instructions a byte: the last few bundles are remembered by their main
--- module, with a copy of their fields, and a bundle whose fields are the
--- same strings gets the same encoding again. What is stored does not
--- change: the encoding of equal fields is the same.
---@return string raw, string hash
function Kernel:_encodeBundle(bundle)
  local memo, main = self.encodedBundles, bundle.main
  local entry = type(main) == 'string' and memo[main]
  if entry and sameBundle(entry, bundle) then return entry.raw, entry.hash end
  local raw = encode(bundle)
  local hash = self:_hashOf(raw)
  local copy, nFields, nModules = plainBundle(bundle)
  if copy and type(main) == 'string' then
    if self.nEncodedBundles == ENCODED_BUNDLES then
      memo = {}
      self.encodedBundles, self.nEncodedBundles = memo, 0
    end
    if not memo[main] then self.nEncodedBundles = self.nEncodedBundles + 1 end
    memo[main] = { copy = copy, nFields = nFields, nModules = nModules, raw = raw, hash = hash }
  end
  return raw, hash
end

--- Stores `bundle` unless a copy is there already and counts one more vat
--- naming it; returns its hash, for the vat record.
function Kernel:_holdBundle(bundle)
  local raw, hash = self:_encodeBundle(bundle)
  local key = 'bundle.' .. hash
  local n = self:_count(key .. '.refCount', 0)
  if n == 0 or self.K:kvGet(key) == nil then self.K:kvSet(key, raw) end
  self.K:kvSet(key .. '.refCount', tostring(n + 1))
  return hash
end

--- One vat less names the bundle `hash`: the last one takes it away.
function Kernel:_releaseBundle(hash)
  local key = 'bundle.' .. hash
  local n = self:_count(key .. '.refCount', 0)
  if n > 1 then
    self.K:kvSet(key .. '.refCount', tostring(n - 1))
  else
    self.K:kvDelete(key)
    self.K:kvDelete(key .. '.refCount')
  end
end

--- The bundle a vat record names. Its bytes are checked against the hash
--- when they are read: a copy that does not match is a damaged database,
--- never code run in the vat's place. Decoded bundles are cached by hash
--- (the content of a hash never changes), weakly, so that a restart of
--- many vats of one code checks and decodes it once while they start.
function Kernel:_bundle(vatId, hash)
  local b = self.bundleCache[hash]
  if b then return b end
  local key = 'bundle.' .. hash
  local raw = self.K:kvGet(key)
  if raw == nil then
    error(("corrupt database: vat %s names bundle %s, and there is no key '%s'"):format(vatId, hash, key), 0)
  end
  if self:_hashOf(raw) ~= hash then error(corrupt(key, raw, 'a bundle of that SHA-256 hash'), 0) end
  b = decodeRecord(key, raw)
  self.bundleCache[hash] = b
  return b
end

local bundling = require 'ocap.bundle'
local readFile = bundling.readFile

-- How many vat sources a kernel remembers as requiring only the runtime.
local LONE_SOURCES = 16

--- Whether the vat source src, read from path, requires only ocap's
--- runtime (requiresOnlyRuntime of ocap.bundle). Finding a source's
--- requires costs about 6 instructions a byte, and launches come in runs
--- of one code: a yes is remembered for the last few paths, with the
--- exact text it was given for.
function Kernel:_requiresOnlyRuntime(path, src)
  local memo = self.loneSources
  if memo[path] == src then return true end
  if not bundling.requiresOnlyRuntime(src) then return false end
  if memo[path] == nil then
    if self.nLoneSources == LONE_SOURCES then
      memo = {}
      self.loneSources, self.nLoneSources = memo, 0
    end
    self.nLoneSources = self.nLoneSources + 1
  end
  memo[path] = src
  return true
end

function Kernel:_resolvePath(p)
  if p:sub(1, 1) == '/' then return p end
  return self.baseDir .. '/' .. p
end

--- Loads a vat's code: { main = name, modules = { name = source } }.
--- Errors name the field at `where` (ClusterConfig.vats.<name> by default).
function Kernel:_loadBundle(name, vc, clusterConfig, where)
  where = where or ('ClusterConfig.vats.' .. name)
  if vc.sourceSpec then
    local path = self:_resolvePath(vc.sourceSpec)
    local src, err = readFile(path)
    if not src then
      return nil, ('%s.sourceSpec: cannot read %q: %s'):format(where, vc.sourceSpec, tostring(err))
    end
    -- The vat's own modules next to it come along. The build is lenient:
    -- a syntax error, or a module that is not there, is reported by the
    -- vat when it starts or requires it, with the vat's name. A vat that
    -- requires only the runtime has none, and needs no build.
    local modules = {}
    if not self:_requiresOnlyRuntime(path, src) then
      local ok, b = pcall(bundling.build, path, { lenient = true, source = src })
      modules = ok and b and b.modules or {}
      if ok and b then modules[b.main] = nil end
    end
    modules[vc.sourceSpec] = src
    return { main = vc.sourceSpec, modules = modules }
  end
  local bundleSpec = vc.bundleSpec
  if vc.bundleName then
    local b = clusterConfig.bundles and clusterConfig.bundles[vc.bundleName]
    if not b then
      return nil, ('%s.bundleName: no bundle named %q in ClusterConfig.bundles'):format(where, vc.bundleName)
    end
    bundleSpec = b.bundleSpec
    if not bundleSpec and b.sourceSpec then
      return self:_loadBundle(name, { sourceSpec = b.sourceSpec }, clusterConfig, where)
    end
  end
  local path = self:_resolvePath(bundleSpec)
  local text, err = readFile(path)
  if not text then
    return nil, ('%s: cannot read bundle %q: %s'):format(where, bundleSpec, tostring(err))
  end
  local bundle, berr = require('ocap.bundle').decode(text)
  if not bundle then
    return nil, ('%s: %q is %s'):format(where, bundleSpec, berr)
  end
  return bundle
end

local function limitsOf(vc)
  local co = vc.creationOptions or {}
  return co.memoryLimit, co.meter and co.meter.instructions
end

-- The kernel-side budgets of creationOptions, passed to createVat as is.
local BUDGET_KEYS = {
  'maxMessageBytes', 'maxMessageSlots', 'maxCrankBytes', 'maxQueuedBytes', 'maxLogBytes', 'maxTimers',
}

-- The parameters of a vat that has none, encoded.
local NO_PARAMETERS = encode({})

--- A vat's parameters as it gets them: the config's plain data, and the
--- references of rec.parameterRefs as vrefs under the key '$ocap.refs',
--- which vatboot turns into presences.
function Kernel:_parametersOf(vatId, rec)
  local params = rec.config.parameters or {}
  if not rec.parameterRefs then return params end
  local out, refs = {}, {}
  for k, v in pairs(params) do out[k] = v end
  for pname, kref in pairs(rec.parameterRefs) do refs[pname] = self.K:import(vatId, kref) end
  out['$ocap.refs'] = refs
  return out
end

--- Starts a vat's Lua state and runs startVat (for a new incarnation when
--- upgrading). Returns true or nil, msg.
function Kernel:_startVat(vatId, rec, bundle, upgrading)
  local vc = rec.config
  local options = {
    info = vatId .. ' ' .. rec.name,
    main = bundle.main,
    modules = bundle.modules,
    -- Most vats have no parameters: theirs are encoded once.
    parameters = (vc.parameters == nil and not rec.parameterRefs) and NO_PARAMETERS
      or encode(self:_parametersOf(vatId, rec)),
    globals = vc.globals and table.concat(vc.globals, ' ') or '',
    upgrade = upgrading or nil,
  }
  local co = vc.creationOptions
  if co then
    local memory, instructions = limitsOf(vc)
    options.memory = memory and math.tointeger(memory)
    options.instructions = instructions and math.tointeger(instructions)
    options.meterMode = co.meter and co.meter.mode
    for _, k in ipairs(BUDGET_KEYS) do options[k] = co[k] and math.tointeger(co[k]) end
  end
  local ok, res, err = pcall(self.K.createVat, self.K, vatId, options)
  if not ok then return nil, res end
  return res, err
end

--- The message a delivery to a vat that failed to restart is refused with.
local function failedMessage(vatId, rec, reason)
  return ('[KERNEL:VAT_FAILED] vat %s (%s) failed to restart: %s'):format(vatId, rec.name, tostring(reason))
end

--- Rebuilds a vat's state lazily (kernel restart, restartVat). Returns
--- nothing once the vat runs, else the message its deliveries are refused
--- with: a vat that fails to restart is kept, with its data, in the
--- 'failed' state until the host restarts or terminates it.
function Kernel:_restartVatState(vatId)
  local rec = self:_get('vat.' .. vatId)
  if not rec then return end
  local failed = rec.failed or self.failing[vatId]
  if failed then return failedMessage(vatId, rec, failed) end
  -- The heap that would have resolved the previous incarnation's promises
  -- is gone: their callers learn it now instead of waiting forever.
  self:_rejectPreviousIncarnation(vatId)
  -- The new heap learns every import the kernel counts reachable from the
  -- vat, in the keys its runtime keeps them under (`gc.i.<vref>`, which
  -- it writes only at reap points): at its first reap point it drops
  -- those it does not hold, even those the previous heap took in after
  -- its last reap (docs/gc.md).
  local K = self.K
  for _, vref in ipairs(K:reachableImports(vatId)) do
    local key = 'vs.' .. vatId .. '.gc.i.' .. vref
    if not K:kvGet(key) then K:kvSet(key, '1') end
  end
  local ok, err = self:_startVat(vatId, rec, self:_bundle(vatId, rec.bundle))
  if not ok then
    local msg = ('vat %s (%s) failed to restart: %s'):format(vatId, rec.name, tostring(err))
    self.logger({ level = 'error', tags = { 'kernel' }, vatId = vatId, message = msg })
    -- The crank that asked for the vat is rolled back with whatever this
    -- wrote, so the failure is recorded once it ends (_recordFailures).
    self.failing[vatId] = tostring(err)
    return failedMessage(vatId, rec, err)
  end
end

function Kernel:_rejectPreviousIncarnation(vatId)
  self.K:rejectDecided(vatId, kernelErrorBody('VAT_TERMINATED',
    ('vat %s restarted: the promises its previous incarnation decided are lost'):format(vatId)))
end

--- Records the vats that failed to restart during the last crank: the
--- vat record says 'failed' and why, the promises the previous incarnation
--- decided are rejected, and the vat's store and c-list are kept.
function Kernel:_recordFailures()
  if next(self.failing) == nil then return end
  local failing = self.failing
  self.failing = {}
  for vatId, reason in pairs(failing) do
    local rec = self:_get('vat.' .. vatId)
    if rec and not rec.failed then
      rec.failed = reason
      self:_put('vat.' .. vatId, rec)
      self:_rejectPreviousIncarnation(vatId)
    end
  end
  self.K:commit()
end

function Kernel:_forgetVat(vatId, reasonBody)
  local rec = self:_get('vat.' .. vatId)
  if not rec then return end
  if self.K:kvGet('terminated.' .. vatId) == nil then
    local ok, reason = pcall(decode, reasonBody)
    local msg = ok and type(reason) == 'table' and reason.message or tostring(reasonBody)
    self.K:kvSet('terminated.' .. vatId, encode({ reason = msg }))
    -- A vat the kernel kills (meter, memory, illegal syscall) is news the
    -- host's log must carry: its callers only see rejections.
    local fatal = type(msg) == 'string' and msg:match('%[VAT_FATAL:[%u_]+%].*$')
    if fatal then
      self.logger({ level = 'error', tags = { 'kernel' }, vatId = vatId,
        message = ('vat %s (%s) killed: %s'):format(vatId, tostring(rec.name), fatal) })
    end
  end
  self.K:kvDelete('vat.' .. vatId)
  self:_releaseBundle(rec.bundle)
  local sc = self:_get('subcluster.' .. rec.subclusterId)
  if sc then
    for name, id in pairs(sc.vats) do
      if id == vatId then sc.vats[name] = nil end
    end
    if next(sc.vats) == nil then
      self.K:kvDelete('subcluster.' .. rec.subclusterId)
      ioChannels.detach(self, rec.subclusterId)
    else
      self:_put('subcluster.' .. rec.subclusterId, sc)
    end
  end
end

-- ---- services ----

--- Registers a kernel service object.
function Kernel:registerKernelServiceObject(name, object, opts)
  self:_check()
  if type(name) ~= 'string' or name == '' then
    error('registerKernelServiceObject: name must be a non-empty string', 2)
  end
  if self.services[name] then
    error(('registerKernelServiceObject: a service named %q is already registered'):format(name), 2)
  end
  if not pass.isRemotable(object) then
    error('registerKernelServiceObject: the service must be an exo (use makeDefaultExo)', 2)
  end
  local systemOnly = opts and opts.systemOnly or false
  local key = 'kernelService.' .. name
  local kref = self.K:kvGet(key)
  if kref then
    self.ls.exportAs(object, kref)
  else
    kref = self.ls.export(object)
    self.ls.pin(kref)
    self.K:kvSet(key, kref)
    -- Vats find a service by name at any time: GC must never take it.
    self.K:pin(kref)
  end
  -- Inside a crank this commits nothing: the registration is the crank's.
  self.K:commit()
  local info = { name = name, kref = kref, systemOnly = systemOnly }
  self.services[name] = { object = object, info = info }
  return info
end

-- ---- subclusters ----

-- Ids and counts in the database are decimal integers from 0 to 2^53 - 1,
-- as the C kernel writes them; anything else is a damaged database, which
-- is reported by key rather than turned into nonsense ids.
local COUNT_MAX = 9007199254740991

--- The count stored under key, or dflt when there is none.
function Kernel:_count(key, dflt)
  local v = self.K:kvGet(key)
  if v == nil then return dflt end
  local n = #v <= 16 and v:match('^%d+$') and not v:match('^0%d') and math.tointeger(tonumber(v))
  if not n or n > COUNT_MAX then
    error(('corrupt database: key %q holds %q, which is not a count (a decimal integer from 0 to 2^53 - 1)')
      :format(key, #v > 40 and v:sub(1, 40) .. '...' or v), 0)
  end
  return n
end

function Kernel:_allocSubclusterId()
  local n = self:_count('nextSubclusterId', 1)
  if n >= COUNT_MAX then error('corrupt database: counter nextSubclusterId is exhausted', 0) end
  self.K:kvSet('nextSubclusterId', tostring(n + 1))
  return 's' .. n
end

local function rejected(msg)
  return promise.reject(pass.makeError(msg))
end

--- Launches a subcluster; returns a promise of { subclusterId, rootKref, bootstrapResult }.
function Kernel:launchSubcluster(clusterConfig, opts)
  self:_check()
  if self.K:inCrank() then
    return self:_outsideCrank(function() return self:launchSubcluster(clusterConfig, opts) end)
  end
  local ok, err = config.validateCluster(clusterConfig, self.options.allowedGlobalNames)
  if not ok then return rejected(err) end
  -- IO channels are opened first, so that a bad one fails the launch
  -- naming it; a launch that fails closes them (ocap.io).
  local chans, ioErr = ioChannels.openAll(self, clusterConfig.io)
  if not chans then return rejected(ioErr) end
  local p = self:_launch(clusterConfig, opts or {}, chans)
  if promise.state(p) == 'rejected' then ioChannels.close(chans) end
  return p
end

function Kernel:_launch(clusterConfig, opts, chans)
  local serviceRefs = {}
  for name, c in pairs(chans) do serviceRefs[name] = c.object end
  for _, sname in ipairs(clusterConfig.services or {}) do
    local svc = chans[sname] and { info = {}, object = chans[sname].object } or self.services[sname]
    if not svc or (svc.info.systemOnly and not opts.system) then
      return rejected(("no registered kernel service '%s'"):format(sname))
    end
    serviceRefs[sname] = svc.object
  end
  -- References for the bootstrap vat's parameters (opts.parameterRefs,
  -- name -> presence or kref): kept as krefs in its vat record, and put in
  -- its c-list each time it starts.
  local parameterRefs
  if opts.parameterRefs then
    parameterRefs = {}
    local given = clusterConfig.vats[clusterConfig.bootstrap].parameters or {}
    for pname, ref in pairs(opts.parameterRefs) do
      local kok, kref = pcall(self._krefOf, self, ref)
      if type(pname) ~= 'string' or not kok or not kref:match('^ko') then
        return rejected(('parameter reference %s is not a presence of this kernel'):format(tostring(pname)))
      end
      if given[pname] ~= nil then
        return rejected(('parameter "%s" is both in the config and a reference'):format(pname))
      end
      parameterRefs[pname] = kref
    end
  end
  local names = {}
  for name in pairs(clusterConfig.vats) do names[#names + 1] = name end
  table.sort(names)
  local bundles = {}
  for _, name in ipairs(names) do
    local b, berr = self:_loadBundle(name, clusterConfig.vats[name], clusterConfig)
    if not b then return rejected(berr) end
    bundles[name] = b
  end
  -- Only once the config, services and bundles are known to be good.
  if clusterConfig.forceReset and not opts.system then
    -- Persisted state is reset before the launch: every ordinary
    -- subcluster (vats, stores) goes; system subclusters and services stay.
    for _, sc in ipairs(self:getSubclusters()) do
      if not self:_get('subcluster.' .. sc.id).system then
        self:_terminateSubclusterNow(sc.id, 'forceReset by a new launch')
      end
    end
  end
  local K = self.K
  K:commit()
  local subclusterId = self:_allocSubclusterId()
  local vats, started = {}, {}
  for _, name in ipairs(names) do
    local vatId = K:allocVatId()
    local rec = { name = name, subclusterId = subclusterId, config = clusterConfig.vats[name],
      parameterRefs = name == clusterConfig.bootstrap and parameterRefs or nil }
    local sok, serr = self:_startVat(vatId, rec, bundles[name])
    if not sok then
      K:abort()
      for _, id in ipairs(started) do K:stopVat(id) end
      return rejected(('vat %q failed to start: %s'):format(name, tostring(serr)))
    end
    started[#started + 1] = vatId
    vats[name] = vatId
    rec.bundle = self:_holdBundle(bundles[name])
    self:_put('vat.' .. vatId, rec)
  end
  -- Parameter references are put in the vat's c-list at each start: GC
  -- must never take them. One that is gone already stays gone.
  for _, kref in pairs(parameterRefs or {}) do pcall(K.pin, K, kref) end
  local roots = {}
  for _, name in ipairs(names) do
    roots[name] = K:export(vats[name], 'o+0')
    -- A vat's root is named by its subcluster record and handed out by
    -- the host at any time (getPresence): GC must never take it.
    K:pin(roots[name])
  end
  local sc = { id = subclusterId, config = clusterConfig, vats = vats, name = opts.name,
    rootKref = roots[clusterConfig.bootstrap], system = opts.system or nil }
  self:_put('subcluster.' .. subclusterId, sc)
  K:commit()
  ioChannels.attach(self, subclusterId, chans)
  local rootKref = roots[clusterConfig.bootstrap]
  local vatPresences = {}
  for _, name in ipairs(names) do
    vatPresences[name] = self.ls.presenceFor(roots[name], 'Alleged: vatRoot')
  end
  local bootP = self.ls.sendTo(rootKref, 'bootstrap', table.pack(vatPresences, serviceRefs), true)
  K:commit()
  return bootP:next(function(result)
    return { subclusterId = subclusterId, rootKref = rootKref, bootstrapResult = result }
  end, function(reason)
    -- This runs in a turn, which may be inside a crank (the one that told
    -- the host): the vats are closed once it is over.
    local msg = type(reason) == 'table' and reason.message or tostring(reason)
    return promise.resolve(self:_outsideCrank(function()
      self:_terminateSubclusterNow(subclusterId, 'bootstrap failed')
    end)):next(function()
        error(pass.makeError(('subcluster %s: bootstrap of vat %q failed: %s'):format(
          subclusterId, clusterConfig.bootstrap, tostring(msg))), 0)
      end)
  end)
end

--- A vat called vatPowers.exitVat or exitVatWithFailure.
function Kernel:_vatExited(vatId, failure, body)
  local ok, completion = pcall(decode, body)
  if not ok then completion = nil end
  local reason
  if failure then
    local msg
    if pass.isError(completion) then
      msg = completion.message
    elseif ok then
      msg = marshal.serializeData(completion).body -- plain data, shown as smallcaps
    else
      msg = tostring(body)
    end
    reason = 'exited with failure: ' .. tostring(msg)
  else
    reason = 'exited'
  end
  self.K:kvSet('terminated.' .. vatId, encode({ reason = reason, failure = failure,
    completion = ok and completion or nil }))
  self:_terminateVatNow(vatId, reason, true)
end

function Kernel:_terminateVatNow(vatId, reason, keepRecord)
  local body = kernelErrorBody('VAT_TERMINATED', ('vat %s was terminated: %s'):format(vatId, reason))
  if not keepRecord then self.K:kvSet('terminated.' .. vatId, encode({ reason = reason })) end
  self.K:terminate(vatId, body)
  self.K:commit()
end

function Kernel:_terminateSubclusterNow(id, reason)
  local sc = self:_get('subcluster.' .. id)
  if not sc then return false end
  local ids = {}
  for _, vatId in pairs(sc.vats) do ids[#ids + 1] = vatId end
  table.sort(ids)
  for _, vatId in ipairs(ids) do self:_terminateVatNow(vatId, reason) end
  self.K:kvDelete('subcluster.' .. id)
  ioChannels.detach(self, id)
  self.K:commit()
  return true
end

function Kernel:terminateSubcluster(id)
  self:_check()
  if self.K:inCrank() then return self:_outsideCrank(function() return self:terminateSubcluster(id) end) end
  if not self:_terminateSubclusterNow(id, 'subcluster ' .. tostring(id) .. ' terminated') then
    return rejected(('no subcluster %q'):format(tostring(id)))
  end
  return promise.resolve(nil)
end

function Kernel:terminateVat(vatId, reason)
  self:_check()
  if self.K:inCrank() then return self:_outsideCrank(function() return self:terminateVat(vatId, reason) end) end
  if not self:_get('vat.' .. tostring(vatId)) then
    return rejected(('no vat %q'):format(tostring(vatId)))
  end
  self:_terminateVatNow(vatId, reason and tostring(reason) or 'terminated by the host')
  return promise.resolve(nil)
end

--- Rebuilds a vat from its stored bundle and baggage, keeping its root.
--- A vat that cannot be rebuilt is kept, with its data, in the 'failed'
--- state (getStatus), and the promise rejects with the reason.
function Kernel:restartVat(vatId)
  self:_check()
  if self.K:inCrank() then return self:_outsideCrank(function() return self:restartVat(vatId) end) end
  local rec = self:_get('vat.' .. tostring(vatId))
  if not rec then
    return rejected(('no vat %q'):format(tostring(vatId)))
  end
  self.K:commit()
  self.K:stopVat(vatId)
  if rec.failed or self.failing[vatId] then
    -- The host asks for another try.
    rec.failed = nil
    self.failing[vatId] = nil
    self:_put('vat.' .. vatId, rec)
  end
  self:_restartVatState(vatId)
  if not self.K:vatLive(vatId) then
    local reason = self.failing[vatId]
    self:_recordFailures()
    return rejected(('vat %s failed to restart: %s'):format(vatId, tostring(reason)))
  end
  self.K:commit()
  return promise.resolve(nil)
end

--- Replaces a vat's code, keeping its durable state; returns a promise of
--- { incarnation }. The upgrade is a crank queued behind the messages
--- already queued (ocap.upgrade).
---@param vatId string
---@param spec table { sourceSpec | bundleSpec | bundleName, parameters }
function Kernel:upgradeVat(vatId, spec)
  self:_check()
  if self.K:inCrank() then return self:_outsideCrank(function() return self:upgradeVat(vatId, spec) end) end
  return upgrade.upgradeVat(self, vatId, spec)
end

--- Upgrades every vat of a subcluster at once, all or none; returns a
--- promise of { incarnation, vats = { name = incarnation } }.
---@param id string the subcluster id
---@param clusterConfig table the new ClusterConfig (same vats and bootstrap)
function Kernel:upgradeSubcluster(id, clusterConfig)
  self:_check()
  if self.K:inCrank() then
    return self:_outsideCrank(function() return self:upgradeSubcluster(id, clusterConfig) end)
  end
  return upgrade.upgradeSubcluster(self, id, clusterConfig)
end

function Kernel:pingVat(vatId)
  self:_check()
  if not self:_get('vat.' .. tostring(vatId)) then
    return rejected(('no vat %q'):format(tostring(vatId)))
  end
  if not self.K:vatLive(vatId) then
    -- Starting the vat's state is work outside the store.
    if self.K:inCrank() then return self:_outsideCrank(function() return self:pingVat(vatId) end) end
    local failed = self:_restartVatState(vatId)
    self:_recordFailures()
    self.K:commit()
    if failed then return rejected(failed) end
  end
  return promise.resolve('pong')
end

-- How many krefs a kernel remembers as checked (Kernel:_krefOf).
local KNOWN_KREFS = 1024

function Kernel:_krefOf(target)
  if type(target) == 'string' then
    -- A kref checked once stays good (refs are never reused, even across a
    -- reset), so a host that sends to the same few krefs checks each once:
    -- the pattern match and the counter read were about a tenth of a host
    -- round trip. The set is bounded; when full it starts again.
    local known = self.knownKrefs
    if known[target] then return target end
    -- As the kernel writes them: no leading zero (`ko02` names nothing).
    if not (target:match('^k[op][1-9]%d*$') or target:match('^k[op]0$')) then
      error(('invalid kref %q'):format(target), 3)
    end
    -- A kref that was ever allocated is accepted: a deleted object makes
    -- the message reject with OBJECT_DELETED, as it would for a vat.
    if tonumber(target:sub(3)) >= self.K:nextId(target:sub(2, 2)) then
      error(('unknown kref %q'):format(target), 3)
    end
    if self.nKnownKrefs >= KNOWN_KREFS then
      known = {}
      self.knownKrefs = known
      self.nKnownKrefs = 0
    end
    known[target] = true
    self.nKnownKrefs = self.nKnownKrefs + 1
    return target
  end
  local ref, ls = liveslots.refOf(target)
  if ref and ls == self.ls then return ref end
  if ref and ls.stopped then error('queueMessage: ' .. liveslots.stoppedMessage(target, ref), 3) end
  error('queueMessage: target must be a kref or a presence of this kernel', 3)
end

--- Sends a message from the host; returns a promise of the result.
function Kernel:queueMessage(target, method, args)
  if self.stopped then error('kernel is stopped', 2) end
  -- A kref already checked is taken at once (Kernel:_krefOf).
  local kref = self.knownKrefs[target] and target or self:_krefOf(target)
  -- A call the C codec writes flat goes in one C call (K:queueFlat),
  -- which makes the result promise as sendArgs would. It takes only a
  -- string method and a table of arguments, and answers nil for anything
  -- else, which is checked below.
  local p = args and self.K:queueFlat(kref, method, args)
  if p then
    if self._attachment then self._attachment:wake() end
    return p
  end
  if type(method) ~= 'string' then error('queueMessage: method must be a string', 2) end
  args = args or {}
  if type(args) ~= 'table' then error('queueMessage: args must be a sequence', 2) end
  -- Without a count, the arguments are args[1..#args], as table.pack of
  -- them would give; sendArgs encodes them from the stack, no copy made.
  if args.n == nil then return self.ls.sendArgs(kref, method, true, table.unpack(args)) end
  return self.ls.sendTo(kref, method, args, true)
end

--- The promise getPresence gives for kref, a promise the kernel gave out
--- and no longer has (freed once settled and let go), whose subscription
--- the kernel refused (err): rejected as a message sent to it is. The
--- host's liveslots had made it pending for ever (and it raised a
--- `kernel subscribed to unknown promise` of the kernel's own).
function Kernel:_deletedPromise(kref, err)
  local p = self.ls.pending[kref]
  if not p or not tostring(err):find('subscribed to unknown promise', 1, true) then error(err, 0) end
  self.ls.pending[kref] = nil
  promise.rejectPromise(p, pass.makeError('[KERNEL:OBJECT_DELETED] Target promise has been deleted'))
  return p
end

function Kernel:getPresence(kref, iface)
  self:_check()
  self:_krefOf(kref)
  if kref:sub(1, 2) == 'kp' then
    local ok, p = pcall(self.ls.promiseFor, kref)
    if ok then return p end
    return self:_deletedPromise(kref, p)
  end
  return self.ls.presenceFor(kref, iface and ('Alleged: ' .. iface) or nil)
end

function Kernel:krefOf(v)
  local ref = self.ls.refOf(v)
  if ref then return ref end
  error('krefOf: not a presence or promise of this kernel', 2)
end

-- Orders records by the number in their id ("v12", "s3"); an id without
-- one (only a damaged database has them) sorts last instead of raising.
local function byNumber(a, b)
  local x, y = tonumber(tostring(a.id):sub(2)) or math.huge, tonumber(tostring(b.id):sub(2)) or math.huge
  if x ~= y then return x < y end
  return tostring(a.id) < tostring(b.id)
end

function Kernel:getSubclusters()
  local out = {}
  for _, key in ipairs(self:_scan('subcluster.')) do
    local sc = self:_get(key)
    out[#out + 1] = { id = sc.id, config = sc.config, vats = sc.vats, name = sc.name, rootKref = sc.rootKref,
      incarnation = sc.incarnation or 1 }
  end
  table.sort(out, byNumber)
  return out
end

function Kernel:getSubcluster(id)
  local sc = self:_get('subcluster.' .. tostring(id))
  if not sc then return nil end
  return { id = sc.id, config = sc.config, vats = sc.vats, name = sc.name, rootKref = sc.rootKref,
    incarnation = sc.incarnation or 1 }
end

function Kernel:getStatus()
  local vats = {}
  for _, key in ipairs(self:_scan('vat.')) do
    local id = key:sub(5)
    local rec = self:_get(key)
    vats[#vats + 1] = { id = id, name = rec.name, config = rec.config, subclusterId = rec.subclusterId,
      state = rec.failed and 'failed' or 'running', reason = rec.failed, incarnation = rec.incarnation or 1 }
  end
  table.sort(vats, byNumber)
  local terminated = {}
  for _, key in ipairs(self:_scan('terminated.')) do
    local rec = self:_get(key)
    terminated[#terminated + 1] = { id = key:sub(12), reason = rec.reason, failure = rec.failure,
      completion = rec.completion }
  end
  return {
    vats = vats,
    subclusters = self:getSubclusters(),
    terminatedVats = terminated,
    remoteComms = self.remote and self.remote:status() or { state = 'disconnected' },
  }
end

function Kernel:_remote(what)
  self:_check()
  if not self.remote then
    error(what .. ': remote comms are not configured (Kernel.make { remote = { ... } })', 3)
  end
  return self.remote
end

--- Registers obj (a kref, a presence or a host remotable) under a swiss
--- number and returns its sturdyref URL (docs/remote.md).
---@param obj any
---@param swiss string|nil a swiss number to use instead of a random one
---@param netlayer string|nil the netlayer of the URL (default the first)
function Kernel:issueOcapURL(obj, swiss, netlayer)
  return self:_remote('issueOcapURL'):issue(obj, swiss, netlayer)
end

--- A promise of the object a sturdyref URL designates, on another kernel.
---@param url string|table an ocapn:// sturdyref URL, or an ocapn-sturdyref record
function Kernel:redeemOcapURL(url)
  return self:_remote('redeemOcapURL'):redeem(url)
end

--- The root kref of a system subcluster declared in Kernel.make.
function Kernel:getSystemSubclusterRoot(name)
  self:_check()
  return system.root(self, name)
end

--- Terminates every vat and wipes the kernel's state (for debugging).
function Kernel:reset()
  self:_check()
  -- From inside a crank, the terminations and the wipe below would free
  -- what the running crank holds.
  if self.K:inCrank() then error('cannot reset the kernel while a crank is running', 2) end
  upgrade.dropPending(self, 'kernel reset')
  -- The sessions' endpoints go with the rest: their peers are told.
  if self.remote then self.remote:endSessions('kernel reset') end
  for _, sc in ipairs(self:getSubclusters()) do
    self:_terminateSubclusterNow(sc.id, 'kernel reset')
  end
  local K = self.K
  K:commit()
  -- Refs are never reused, so the counters outlive the reset; so does the
  -- kernel's identity on each netlayer, which its remote layer goes on
  -- answering for and its URLs name (remote.lua).
  local kept = {}
  for _, key in ipairs({ 'nextVatId', 'nextObjectId', 'nextPromiseId', 'nextSubclusterId', 'nextPeerId',
    'remote.designator', 'remote.tls.key' }) do
    kept[key] = K:kvGet(key)
  end
  K:clear()
  K:kvSet('version', SCHEMA_VERSION)
  for key, v in pairs(kept) do K:kvSet(key, v) end
  for name, svc in pairs(self.services) do
    K:kvSet('kernelService.' .. name, svc.info.kref)
  end
  K:commit()
end

--- Resolves the reapVats() promises once every reap and GC action they
--- started is done (docs/gc.md); called by the drivers after cranks.
function Kernel:_settleReaps()
  if self.reapWaiters[1] and not self.stopped and self.K:gcWork() == 0 then
    local waiters = self.reapWaiters
    self.reapWaiters = {}
    -- What the reaps released may include imports from remote peers.
    if self.remote then self.remote:afterReap() end
    for _, resolve in ipairs(waiters) do resolve(nil) end
  end
end

--- Reaps every running vat and the host's own endpoint now: each gets
--- bringOutYourDead before the run queue's next item, and the GC actions
--- that follow run too. The promise resolves when they are done.
function Kernel:reapVats()
  self:_check()
  self.K:reapAll()
  local kit = promise.makePromiseKit()
  self.reapWaiters[#self.reapWaiters + 1] = kit.resolve
  return kit.promise
end

--- The same as reapVats (a reap collects a heap when that can change what
--- it reports, docs/gc.md).
function Kernel:collectGarbage()
  self:_check()
  return self:reapVats()
end

function Kernel:revoke(kref)
  self:_check()
  if type(kref) ~= 'string' or not kref:match('^k[op]%d+$') then
    error(('revoke: invalid kref %q'):format(tostring(kref)), 2)
  end
  if kref:sub(1, 2) == 'kp' then error(('revoke: cannot revoke promise %s'):format(kref), 2) end
  local ok, err = pcall(self.K.revoke, self.K, kref)
  if not ok then error('revoke: ' .. liveslots.stripPosition(tostring(err)), 2) end
  self.K:commit()
end

function Kernel:isRevoked(kref)
  return self.K:isRevoked(kref)
end

--- Number of keys in the kernel's store (for storage-growth checks).
function Kernel:keyCount()
  return self.K:kvCount()
end

--- Number of keys under prefix whose name ends with suffix (nil: all).
--- A scan of the store, as stats() is for diagnostics and specs, not for
--- a hot path.
function Kernel:_countKeys(prefix, suffix)
  local n, after = 0, nil
  while true do
    local key = self.K:kvNext(prefix, after)
    if not key then return n end
    if not suffix or key:sub(-#suffix) == suffix then n = n + 1 end
    after = key
  end
end

--- objects: kernel objects with an owner (`ko<N>.owner`: an object whose
--- owner was terminated is deleted and no longer counts); promises: those
--- the kernel still keeps (`kp<N>.state`: unsettled, or settled and still
--- referenced); vats: vat records (`vat.<vatId>`).
function Kernel:stats()
  return {
    cranks = self.K:cranks(),
    keys = self.K:kvCount(),
    queue = self.K:queueLength(),
    objects = self:_countKeys('ko', '.owner'),
    promises = self:_countKeys('kp', '.state'),
    vats = self:_countKeys('vat.'),
  }
end

function Kernel:stop()
  if self.stopped then return end
  -- Refused before anything is closed (K:close would refuse it after).
  if self.K:inCrank() then error('cannot stop the kernel while a crank is running', 2) end
  -- A kernel that cannot write its last cranks (a failed store, a damaged
  -- database) is closed all the same, so that it stops taking part in the
  -- loop that drives every kernel; the failure is raised afterwards.
  local ok, err = pcall(function()
    if self.remote then self.remote:close() end
    ioChannels.stop(self)
    self.K:commit()
    self.K:flush()
  end)
  self.K:close()
  -- Only once the kernel is closed (K:close refuses during a crank): the
  -- loop's handles stop calling it.
  if self._attachment then self._attachment:detach() end
  self.stopped = true
  self.ls.stopped = true
  liveKernels[self] = nil
  sole[1] = nil
  if not ok then error(err, 2) end
end

--- The kernel made last in this Lua state, if it is still running (for
--- ocap.marshal.serialize on the host).
function M.current()
  local k = M.latest
  if k and not k.stopped then return k end
end

--- Set by `ocap run` (ocap.cli): a function that takes the options a
--- script passes to Kernel.make and returns a copy with the command
--- line's choices (database, reset) applied.
---@type (fun(options: table): table)|nil
M.defaults = nil

--- Stops every kernel still running in this Lua state.
function M.stopAll()
  local list = {}
  for kernel in pairs(liveKernels) do list[#list + 1] = kernel end
  for _, kernel in ipairs(list) do kernel:stop() end
end

return M
