-- The store target: a kernel opened on a store whose values were damaged,
-- then run. Once, at start, a kernel is given a state that uses every key
-- family the kernel reads (c-lists, promise records with subscribers and
-- parked messages, run-queue items, counters, vat records, bundles, vat
-- stores) and its keys and values are copied. Each input then edits that
-- copy and opens a kernel on it with Kernel.make, the way a restart opens
-- a database, runs cranks, sends a message, reads the status and
-- terminates the vats.
--
-- An input is a list of edits separated by NUL bytes: `<key>=<value>` sets
-- a key, `<key>` alone deletes it, and a key written `@<n>` is the n-th key
-- of the copy (modulo their number), so that mutations reach every key.
--
-- A failure must be a clean error: raised as a message (not a crash, a
-- hang or a Lua error inside ocap's own code), after which the kernel
-- still stops. It raises, which fails the run, otherwise.
local Kernel = require 'ocap.kernel'
local core = require 'ocap.core'
local ocap = require 'ocap'

local SOURCE = assert(os.getenv('OCAP_SOURCE_DIR'), 'OCAP_SOURCE_DIR is not set')
local COUNTER = SOURCE .. '/spec/vats/counter.lua'
local FUZZ_DB = 'fuzz:seeded-memory-store'
local CRANKS = 200

local function silent() end

-- The seeded state -------------------------------------------------------

-- Every vat runs on a small budget (40 ms of CPU a delivery), so that an
-- input which turns a vat's code into a loop is stopped by the meter in
-- a moment, not after the default 2 s, which a loaded machine under ASan
-- stretches past the driver's -timeout.
local SMALL = { meter = { instructions = 2000000 } }

local function buildBase()
  local kernel = Kernel.make({ database = false, logger = silent })
  local r = kernel:launchSubcluster({
    bootstrap = 'a',
    vats = { a = { sourceSpec = COUNTER, creationOptions = SMALL },
      other = { sourceSpec = COUNTER, creationOptions = SMALL } },
  }):await()
  local a = r.rootKref
  kernel:queueMessage(a, 'increment', { 2 }):await()
  kernel:queueMessage(a, 'storeThing', { 'k', { x = 1, list = { 1, 2 } } }):await()
  kernel:queueMessage(a, 'callOther', { 'increment', 3 }):await()
  kernel:queueMessage(a, 'storeThing', { 'self', kernel:getPresence(a) }):await()
  -- A terminated vat and a revoked object.
  local gone = kernel:launchSubcluster({ bootstrap = 'c',
    vats = { c = { sourceSpec = COUNTER, creationOptions = SMALL } } }):await()
  kernel:terminateSubcluster(gone.subclusterId):await()
  kernel:revoke(kernel:krefOf(kernel:queueMessage(a, 'makeEphemeral', {}):await()))
  -- A promise the host decides with a message parked on it, and one the
  -- vat subscribed to, settled but not yet told.
  local K = kernel.K
  local parked = K:allocPromise('kernel')
  K:send(parked, '#["increment",[1]]', {}, nil)
  local told = K:allocPromise('kernel')
  K:send(a, '#["storeThing",["p","&0"]]', { told }, nil)
  K:commit()
  kernel:run()
  K:resolve(told, false, '#["done",{"n":1}]', {})
  -- Messages still in the run queue, one with a result the host awaits.
  kernel:queueMessage(a, 'increment', { 5 })
  kernel:queueMessage(a, 'callOther', { 'get' })
  K:commit()
  K:flush()
  local keys, values = {}, {}
  local key
  repeat
    key = K:kvNext('', key)
    if key then
      keys[#keys + 1] = key
      values[key] = K:kvGet(key)
    end
  until not key
  kernel:stop()
  return keys, values
end

local baseKeys, baseValues = buildBase()

-- Kernel.make opens its store through core.open: for FUZZ_DB it gets a
-- memory store seeded with the edited copy.
local seed
local realOpen = core.open
core.open = function(options)
  if options.database ~= FUZZ_DB then return realOpen(options) end
  local K = assert(realOpen({}))
  for key, value in pairs(seed) do K:kvSet(key, value) end
  K:commit()
  return K
end

local function keyOf(k)
  local n = k:match('^@(%d+)$')
  if n then return baseKeys[tonumber(n) % #baseKeys + 1] end
  return k
end

local function edit(input)
  local values = {}
  for k, v in pairs(baseValues) do values[k] = v end
  for record in (input .. '\0'):gmatch('([^%z]*)%z') do
    local k, v = record:match('^([^=]*)=(.*)$')
    if k then
      if k ~= '' then values[keyOf(k)] = v end
    elseif record ~= '' then
      values[keyOf(record)] = nil
    end
  end
  return values
end

-- Clean failures ---------------------------------------------------------

-- A Lua runtime error inside ocap's own code (`kernel.lua:392: attempt to
-- index a nil value`) is a fault of ocap, not a refusal of bad data: it
-- names no key and no value, only a line of code that trusted one.
local FAULTS = {
  'attempt to ', 'bad argument', 'stack overflow', 'table index is', "invalid key to 'next'",
  'has no integer representation', 'expected, got', 'a nil value', 'out of memory',
}

local function clean(err)
  if type(err) == 'table' and type(err.message) == 'string' then err = err.message end
  if type(err) ~= 'string' then return false end
  -- A vat that fails on its own damaged store is reported by the kernel,
  -- which keeps it apart from everything else: its reason may be any
  -- error of the vat's code.
  if err:find('^%[KERNEL:') or err:find('^vat v%d+ failed to restart: ') then return true end
  for _, f in ipairs(FAULTS) do
    if err:find(f, 1, true) then return false end
  end
  return true
end

local failures = 0

-- Runs f(...) and returns true when it returned; a clean error returns
-- false; any other failure raises.
local function try(what, f, ...)
  local ok, err = pcall(f, ...)
  if ok then return true end
  if not clean(err) then
    error(('%s failed with a fault, not a clean error: %s'):format(what, tostring(
      type(err) == 'table' and err.message or err)), 0)
  end
  failures = failures + 1
  return false
end

local function crank(kernel)
  for _ = 1, CRANKS do
    local ok, did = pcall(kernel.step, kernel)
    if not ok then
      if not clean(did) then error('a crank failed with a fault: ' .. tostring(did), 0) end
      return false
    end
    if not did then return true end
  end
  return true
end

-- The target -------------------------------------------------------------

return function(input)
  seed = edit(input)
  local kernel
  if not try('Kernel.make', function() kernel = Kernel.make({ database = FUZZ_DB, logger = silent }) end) then
    return false
  end
  local healthy = crank(kernel)
  local subclusters
  healthy = try('getSubclusters', function() subclusters = kernel:getSubclusters() end) and healthy
  healthy = try('getStatus', kernel.getStatus, kernel) and healthy
  for _, sc in ipairs(subclusters or {}) do
    if type(sc.rootKref) == 'string' then
      healthy = try('queueMessage', function()
        local p = kernel:queueMessage(sc.rootKref, 'get', {})
        crank(kernel)
        local ok, err = pcall(ocap.await, p)
        if not ok and not clean(err) then error(err, 0) end
      end) and healthy
    end
  end
  for _, sc in ipairs(subclusters or {}) do
    for _, vatId in pairs(type(sc.vats) == 'table' and sc.vats or {}) do
      healthy = try('restartVat', function() kernel:restartVat(vatId):await() end) and healthy
      healthy = try('pingVat', function() kernel:pingVat(vatId):await() end) and healthy
      healthy = try('terminateVat', function() kernel:terminateVat(vatId, 'fuzz'):await() end) and healthy
    end
  end
  healthy = crank(kernel) and healthy
  -- New ids come from the counters; reset keeps them and drops the rest.
  healthy = try('launchSubcluster', function()
    kernel:launchSubcluster({ bootstrap = 'a', vats = { a = { sourceSpec = COUNTER } } }):await()
  end) and healthy
  healthy = try('reset', kernel.reset, kernel) and healthy
  try('stop', kernel.stop, kernel)
  return healthy
end
