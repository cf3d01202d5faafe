-- Benchmarks (make bench). Each scenario prints its figure; the header
-- names the machine. Run with: build/ocap run bench/run.lua [filter]
local testing = require 'ocap.testing'

local filter = arg and arg[1]

local function machine()
  local cpu = io.popen("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"):read('l') or '?'
  local cores = io.popen('nproc'):read('l') or '?'
  local kernelv = io.popen('uname -sr'):read('l') or '?'
  return ('%s, %s cores, %s, %s'):format(cpu:gsub('^%s+', ''), cores, kernelv, _VERSION)
end

local function now()
  -- Wall-clock seconds with sub-millisecond precision.
  local p = io.popen('date +%s.%N')
  local t = tonumber(p:read('l'))
  p:close()
  return t
end

local results = {}
local function report(name, value, unit, note)
  results[#results + 1] = { name = name, value = value, unit = unit }
  print(('%-48s %12.0f %s%s'):format(name, value, unit, note and ('  (' .. note .. ')') or ''))
end

local function scenario(name, fn)
  if filter and not name:find(filter, 1, true) then return end
  collectgarbage()
  fn(name)
end

local ECHO = 'spec/vats/echo.lua'
local COUNTER = 'spec/vats/counter.lua'
local SCENARIO = 'spec/vats/scenario.lua'
local function twoVats()
  return { bootstrap = 'alice', vats = { alice = { sourceSpec = ECHO }, bob = { sourceSpec = ECHO } } }
end

local function makeKernel(db)
  return testing.makeKernel({ database = db })
end

print('ocap benchmarks on ' .. machine())
print(('%-48s %12s %s'):format('scenario', 'figure', 'unit'))

-- The plain-Lua floor of one message (issue #11): what Lua itself needs for
-- a queued dispatch with a resolve callback. Build a message table, push
-- it on a queue, pop it, dispatch by method name, call a resolve closure.
-- Round trips are quoted against it as a ratio, measured in the same run,
-- since the ratio is what carries from one machine to another.
local function floorNs(n)
  local handlers = { ping = function(x) return x end }
  local queue, head, tail = {}, 1, 0
  local got = 0
  local t0 = now()
  for i = 1, n do
    local msg = { method = 'ping', args = { i }, resolve = function(v) got = got + v end }
    tail = tail + 1
    queue[tail] = msg
    local m = queue[head]
    queue[head] = nil
    head = head + 1
    m.resolve(handlers[m.method](m.args[1]))
  end
  local dt = now() - t0
  assert(got == n * (n + 1) / 2)
  return dt / n * 1e9
end

--- The median of a list of numbers (sorts it).
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

-- The machines are shared: one long run of the floor took anything from
-- 234 to 504 ns in one sitting. Five short runs, and their median.
local FLOOR_N, RUNS = 400000, 5
local floors = {}
for i = 1, RUNS do floors[i] = floorNs(FLOOR_N) end
local floor = median(floors)
report('plain-Lua floor: queued dispatch + resolve', floor, 'ns per message',
  ('median of %d runs; the unit the round-trip ratios below are quoted in'):format(RUNS))

-- Prints a rate's cost per operation as a multiple of the floor.
local function ratio(rate)
  return ('%.1fx the floor'):format(1e9 / rate / floor)
end

local function roundTrips(name, db)
  local kernel = makeKernel(db)
  local r = kernel:launchSubcluster(twoVats()):await()
  kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 1000 }):await() -- warm up
  -- RUNS runs, each after a run of the floor of its own: the ratio of
  -- each pair, whose two halves met the same load, and their median.
  local n = db and 10000 or 50000
  local rates, ratios = {}, {}
  for i = 1, RUNS do
    local f = floorNs(FLOOR_N)
    local t0 = now()
    kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', n }):await()
    local dt = now() - t0
    rates[i], ratios[i] = n / dt, dt / n * 1e9 / f
  end
  report(name, median(rates), 'round trips/s', ('median of %d runs of %d; %.1fx the floor, the median of '
    .. 'each run against a floor run just before it'):format(RUNS, n, median(ratios)))
  kernel:stop()
end

scenario('vat-to-vat round trips (memory)', function(name) roundTrips(name, nil) end)
scenario('vat-to-vat round trips (leveldb)', function(name) roundTrips(name, testing.tempDir()) end)

-- What reaping costs a round trip (issue #12): the same round trips with
-- reaping off and at the default interval (each vat's heap fully
-- collected every 200 deliveries), alternated three times so that the
-- machine's noise falls on both; the medians of the differences and of
-- the ratios are printed.
scenario('reaping cost per vat-to-vat round trip (memory)', function(name)
  local function seconds(gc)
    local kernel = testing.makeKernel({ gc = gc })
    local r = kernel:launchSubcluster(twoVats()):await()
    kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 1000 }):await() -- warm up
    local n = 30000
    local t0 = now()
    kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', n }):await()
    local dt = now() - t0
    kernel:stop()
    return dt / n
  end
  local extra, ratios = {}, {}
  for i = 1, 3 do
    local off, on = seconds({ reapInterval = false }), seconds({ reapInterval = 200 })
    extra[i], ratios[i] = (on - off) * 1e9, on / off
  end
  table.sort(extra)
  table.sort(ratios)
  report(name, extra[2], 'ns per round trip', ('%.3fx the time without reaping, medians of 3'):format(ratios[2]))
end)

local function hostMessages(name, db, n, durability, note)
  local kernel = testing.makeKernel({ database = db, durability = durability })
  local r = kernel:launchSubcluster(twoVats()):await()
  local t0 = now()
  for i = 1, n do kernel:queueMessage(r.rootKref, 'ping', { i }):await() end
  local dt = now() - t0
  report(name, n / dt, 'messages/s', (note or ('%d sequential queueMessage'):format(n)) .. ', ' .. ratio(n / dt))
  kernel:stop()
end

scenario('host-to-vat messages (memory)', function(name) hostMessages(name, nil, 50000) end)
scenario('host-to-vat messages (leveldb)', function(name) hostMessages(name, testing.tempDir(), 10000) end)

scenario('launch a two-vat subcluster (memory)', function(name)
  local kernel = makeKernel()
  local n = 200
  local t0 = now()
  for _ = 1, n do kernel:launchSubcluster(twoVats()):await() end
  local dt = now() - t0
  report(name, dt / n * 1e6, 'us per launch', ('%d launches'):format(n))
  kernel:stop()
end)

scenario('kernel keys after 10,000 round trips', function(name)
  local kernel = makeKernel()
  local r = kernel:launchSubcluster(twoVats()):await()
  kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 10 }):await()
  local before = kernel:keyCount()
  kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 10000 }):await()
  local after = kernel:keyCount()
  report(name, after - before, 'keys added', ('%d before, %d after'):format(before, after))
  kernel:stop()
end)

local function baggageMessages(name, db, n, note)
  local kernel = makeKernel(db)
  local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } }):await()
  local t0 = now()
  for _ = 1, n do kernel:queueMessage(r.rootKref, 'increment', {}):await() end
  local dt = now() - t0
  report(name, n / dt, 'messages/s', note)
  kernel:stop()
end

scenario('baggage-writing messages (memory)', function(name)
  baggageMessages(name, nil, 20000, 'each writes baggage')
end)

scenario('baggage-writing messages (leveldb)', function(name)
  baggageMessages(name, testing.tempDir(), 10000, 'each writes baggage, committed before the reply')
end)

scenario('host-to-vat messages (leveldb, fsync)', function(name)
  hostMessages(name, testing.tempDir(), 2000, 'fsync', 'one fsync per acknowledged message')
end)

scenario('pipelined chain of 100 calls', function(name)
  local kernel = makeKernel()
  local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
    alice = { sourceSpec = SCENARIO, parameters = { name = 'alice' } },
    bob = { sourceSpec = SCENARIO, parameters = { name = 'bob' } } } }):await()
  local reps = 200
  local c0, t0 = kernel:stats().cranks, now()
  for _ = 1, reps do kernel:queueMessage(r.rootKref, 'pipelineChain', { 100 }):await() end
  local c1, t1 = kernel:stats().cranks, now()
  for _ = 1, reps do kernel:queueMessage(r.rootKref, 'awaitChain', { 100 }):await() end
  local c2, t2 = kernel:stats().cranks, now()
  report(name .. ', pipelined', (t1 - t0) / reps * 1e6, 'us per chain',
    ('%d cranks per chain'):format((c1 - c0) // reps))
  report(name .. ', awaited one by one', (t2 - t1) / reps * 1e6, 'us per chain',
    ('%d cranks per chain'):format((c2 - c1) // reps))
  kernel:stop()
end)

-- Remote kernels (docs/remote.md): this kernel and another in its own
-- process (bench/remote_peer.lua, an echo vat), talking CapTP over the
-- tcp-testing-only netlayer (or the one given) on loopback. OCAP_BIN is
-- set by `make bench`.
local function withRemotePeer(fn, netlayer)
  local bin = os.getenv('OCAP_BIN') or 'build/ocap'
  local f = assert(io.popen(("BENCH_NETLAYER=%s exec sh -c 'echo $$; exec \"%s\" run bench/remote_peer.lua'"):format(
    netlayer or 'tcp-testing-only', bin), 'r'))
  local pid, url = f:read('l'), f:read('l')
  local ocap = require 'ocap'
  local kernel = ocap.Kernel.make { database = false, logger = function() end,
    remote = { netlayer = netlayer, listen = '127.0.0.1:0' } }
  local ok, err = pcall(fn, kernel, kernel:redeemOcapURL(url):await(), ocap.E)
  kernel:stop()
  os.execute('kill ' .. pid)
  f:close()
  assert(ok, err)
end

scenario('remote round trips (loopback, two processes)', function(name)
  withRemotePeer(function(kernel, echo, E)
    for i = 1, 200 do E(echo).ping(i):await() end -- warm up
    local n = 5000
    local t0 = now()
    for i = 1, n do E(echo).ping(i):await() end
    local dt = now() - t0
    report(name .. ', host to vat', n / dt, 'round trips/s', ('%d in %.2f s, %s'):format(n, dt, ratio(n / dt)))
    local r = kernel:launchSubcluster({ bootstrap = 'echo', vats = { echo = { sourceSpec = ECHO } } }):await()
    t0 = now()
    kernel:queueMessage(r.rootKref, 'pingTarget', { echo, n }):await()
    dt = now() - t0
    report(name .. ', vat to vat', n / dt, 'round trips/s', ('%d in %.2f s, %s'):format(n, dt, ratio(n / dt)))
  end)
end)

-- The same host-to-vat round trips over tcp-tls (TLS 1.3) and over
-- tcp-testing-only, both sessions open at once, measured in turns (plain,
-- TLS, plain, TLS, ...) so that the machine's load weighs on both alike;
-- each figure is the median of its turns. Wall clock, and this process's
-- CPU time per round trip (os.clock: the CPU time of this process, the
-- host side, less sensitive than wall clock to other processes' load).
scenario('remote round trips, tcp-tls against tcp-testing-only', function(name)
  withRemotePeer(function(_, plain)
    withRemotePeer(function(_, tls, E)
      local n, turns = 2000, 3
      for i = 1, 200 do
        E(plain).ping(i):await()
        E(tls).ping(i):await()
      end
      local rates = { plain = {}, tls = {} }
      local cpu = { plain = {}, tls = {} }
      local function measure(target, into, cpuInto)
        local t0, c0 = now(), os.clock()
        for i = 1, n do E(target).ping(i):await() end
        cpuInto[#cpuInto + 1] = (os.clock() - c0) / n * 1e6
        into[#into + 1] = n / (now() - t0)
      end
      for _ = 1, turns do
        measure(plain, rates.plain, cpu.plain)
        measure(tls, rates.tls, cpu.tls)
      end
      local function runs(t)
        local out = {}
        for i, r in ipairs(t) do out[i] = ('%.0f'):format(r) end
        return table.concat(out, ' / ')
      end
      -- (The runs in the order they were measured, before sorting.)
      local rp, rt = runs(rates.plain), runs(rates.tls)
      local mp, mt = median(rates.plain), median(rates.tls)
      report(name .. ', tcp-testing-only', mp, 'round trips/s', 'wall clock, median of ' .. rp)
      report(name .. ', tcp-tls', mt, 'round trips/s', ('wall clock, median of %s; %.2fx tcp-testing-only'):format(
        rt, mt / mp))
      local cp, ct = runs(cpu.plain), runs(cpu.tls)
      local mcp, mct = median(cpu.plain), median(cpu.tls)
      report(name .. ', tcp-testing-only, host CPU', mcp, 'us per round trip', 'median of ' .. cp)
      report(name .. ', tcp-tls, host CPU', mct, 'us per round trip', ('median of %s; %.2fx tcp-testing-only'):format(
        ct, mct / mcp))
    end, 'tcp-tls')
  end)
end)

-- The chain from the host and from a vat of this kernel (whose messages
-- to a remote answer the kernel hands to the host at once, docs/remote.md),
-- pipelined and awaited, alternating; medians of 3 rounds of wall clock.
scenario('remote chain of 100 calls (loopback)', function(name)
  withRemotePeer(function(kernel, echo, E)
    local vat = kernel:launchSubcluster({ bootstrap = 'p', vats = { p = {
      sourceSpec = 'spec/vats/pipeliner.lua', globals = { 'setTimeout', 'clearTimeout' } } } }):await().rootKref
    local reps = 10
    local ways = {
      { 'from the host, pipelined', function()
        local p = echo
        for _ = 1, 100 do p = E(p).itself() end
        p:await()
      end },
      { 'from the host, awaited one by one', function()
        local o = echo
        for _ = 1, 100 do o = E(o).itself():await() end
      end },
      { 'from a vat, pipelined', function() kernel:queueMessage(vat, 'itselfChain', { echo, 100, true }):await() end },
      { 'from a vat, awaited one by one', function()
        kernel:queueMessage(vat, 'itselfChain', { echo, 100, false }):await()
      end },
    }
    ways[3][2]() -- warm up the vat
    local times = {}
    for round = 1, 3 do
      for i, way in ipairs(ways) do
        local t0 = now()
        for _ = 1, reps do way[2]() end
        times[i] = times[i] or {}
        times[i][round] = (now() - t0) / reps * 1e6
      end
    end
    local med = {}
    for i, way in ipairs(ways) do
      local t = times[i]
      table.sort(t)
      med[i] = t[2]
      local note = ('wall clock, median of %.0f / %.0f / %.0f'):format(t[1], t[2], t[3])
      if i % 2 == 0 then note = note .. (', %.1fx the pipelined chain'):format(med[i] / med[i - 1]) end
      report(name .. ', ' .. way[1], med[i], 'us per chain', note)
    end
  end)
end)

-- IO channels (docs/io.md): a vat reading a file line by line, and a
-- client's line echoed by a vat through a Unix socket channel.
scenario('IO channel', function(name)
  local rpc = require('ocap.core').rpc
  local dir = testing.tempDir()
  local n = 20000
  local f = assert(io.open(dir .. '/lines', 'w'))
  for i = 1, n do f:write('line number ', i, ' of the benchmark\n') end
  f:close()
  -- The floor: the same reads from a host service that answers at once.
  local served = 0
  local fake = require('ocap').makeDefaultExo('fake', { read = function()
    served = served + 1
    if served <= n then return 'line number of the benchmark' end
  end })
  local kernel = testing.makeKernel({ database = false, services = { fake = fake } })
  local r = kernel:launchSubcluster({ bootstrap = 'user', vats = { user = { sourceSpec = 'spec/vats/io_user.lua' } },
    services = { 'fake' }, io = { f = { type = 'file', path = dir .. '/lines', direction = 'in' },
      s = { type = 'socket', path = dir .. '/s.sock' } } }):await()
  local t0 = now()
  assert(kernel:queueMessage(r.rootKref, 'count', { 'fake' }):await() == n)
  local serviceRate = n / (now() - t0)
  t0 = now()
  assert(kernel:queueMessage(r.rootKref, 'count', { 'f' }):await() == n)
  local dt = now() - t0
  report(name .. ': file lines read by a vat', n / dt, 'lines/s', ('%d in %.2f s; %.2fx the %d /s of a host service '
    .. 'answering at once'):format(n, dt, (n / dt) / serviceRate, math.floor(serviceRate)))
  local fd = assert(rpc.connect(dir .. '/s.sock'))
  local m = 2000
  t0 = now()
  for i = 1, m do
    rpc.send(fd, 'ping ' .. i .. '\n')
    kernel:queueMessage(r.rootKref, 'echoN', { 's', 1 }):await()
    local got = ''
    while not got:find('\n') do got = got .. assert(rpc.recv(fd)) end
  end
  dt = now() - t0
  report(name .. ': socket line echoed by a vat', m / dt, 'round trips/s',
    ('%d in %.2f s: client -> vat read -> vat write -> client'):format(m, dt))
  rpc.close(fd)
  kernel:stop()
end)

scenario('restart a kernel holding 1,000 idle vats', function(name)
  local db = testing.tempDir()
  local kernel = makeKernel(db)
  local cfg = { bootstrap = 'v1', vats = {} }
  for i = 1, 10 do cfg.vats['v' .. i] = { sourceSpec = COUNTER } end
  for _ = 1, 100 do kernel:launchSubcluster(cfg):await() end
  local vats = #kernel:getStatus().vats
  kernel:stop()
  local t0 = now()
  kernel = makeKernel(db)
  local dt = now() - t0
  report(name, dt * 1e3, 'ms', ('%d vats; they restart lazily on first delivery'):format(vats))
  local r = kernel:getSubclusters()[1]
  local t1 = now()
  kernel:queueMessage(r.rootKref, 'increment', {}):await()
  report('first message to a vat after that restart', (now() - t1) * 1e3, 'ms', 'includes rebuilding the vat')
  kernel:stop()
end)

-- What an idle vat costs: its Lua heap as the kernel's allocator counts it,
-- and the growth of the process's resident memory (malloc's overhead and
-- the kernel's own records included) over 1,000 one-vat subclusters.
local function residentBytes()
  for line in io.lines('/proc/self/status') do
    local kb = line:match('^VmRSS:%s+(%d+)')
    if kb then return tonumber(kb) * 1024 end
  end
end

-- Resident memory only grows where earlier scenarios have not already left
-- freed pages for malloc to reuse, so a full run measures this scenario in a
-- fresh process of its own (OCAP_BIN is set by `make bench`).
local function idleVatsInChild()
  local bin = os.getenv('OCAP_BIN')
  if filter or not bin then return false end
  local p = assert(io.popen(('%q run bench/run.lua %q 2>/dev/null'):format(bin, 'memory per idle vat')))
  for line in p:lines() do
    if line:find('^idle vat') then print(line) end
  end
  return p:close()
end

scenario('memory per idle vat', function()
  if idleVatsInChild() then return end
  local kernel = makeKernel()
  local cfg = { bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/idle.lua' } } }
  kernel:launchSubcluster(cfg):await() -- warm up the kernel's own tables
  collectgarbage()
  local n, heap, rss0 = 1000, 0, residentBytes()
  for _ = 1, n do
    local r = kernel:launchSubcluster(cfg):await()
    heap = heap + kernel.K:vatMemory(kernel:getSubcluster(r.subclusterId).vats.v)
  end
  collectgarbage()
  local rss = residentBytes() - rss0
  report('idle vat, Lua heap', heap / n / 1024, 'KiB per vat', ('mean over %d one-vat subclusters'):format(n))
  report('idle vat, resident memory', rss / n / 1024, 'KiB per vat', ('%.0f MiB for %d vats'):format(rss / 2 ^ 20, n))
  local t0 = now()
  kernel:reapVats():await()
  report('idle vat, one reap', (now() - t0) * 1e6 / n, 'us per vat', ('kernel:reapVats() over %d idle vats'):format(n))
  kernel:stop()
end)

-- Terminating a vat deletes its whole store (`vs.<vatId>.`) in one crank:
-- the time per entry must stay flat as the store grows.
local function terminateWithEntries(name, db, n)
  local kernel = makeKernel(db)
  local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } }):await()
  local vatId = kernel:getSubcluster(r.subclusterId).vats.c
  local K, prefix = kernel.K, 'vs.' .. vatId .. '.bench.'
  for i = 1, n do
    K:kvSet(prefix .. i, 'x')
    if i % 10000 == 0 then K:commit() end
  end
  K:commit()
  K:flush()
  local t0 = now()
  kernel:terminateVat(vatId):await()
  K:commit()
  K:flush()
  local dt = now() - t0
  assert(K:kvNext(prefix) == nil, 'the store was not deleted')
  report(name, dt / n * 1e9, 'ns per entry', ('%d entries in %.2f s'):format(n, dt))
  kernel:stop()
end

for _, n in ipairs({ 10000, 100000, 1000000 }) do
  scenario(('terminate a vat holding %d store entries (memory)'):format(n), function(name)
    terminateWithEntries(name, nil, n)
  end)
end
for _, n in ipairs({ 10000, 100000, 1000000 }) do
  scenario(('terminate a vat holding %d store entries (leveldb)'):format(n), function(name)
    terminateWithEntries(name, testing.tempDir(), n)
  end)
end

-- Decoding capdata on the host: bodies whose remotables name no interface
-- (valid smallcaps) make the decoder look for one; the time per slot must
-- stay flat as the body grows.
local marshal = require 'ocap.marshal'
local function decodeSlots(name, n)
  local parts, slots = {}, {}
  for i = 0, n - 1 do
    parts[#parts + 1] = ('"$%d"'):format(i)
    slots[i + 1] = 'o-' .. (i + 1)
  end
  local capdata = { body = '#[' .. table.concat(parts, ',') .. ']', slots = slots }
  local m = marshal.makeMarshal(function() error('not used') end, function(slot) return { slot = slot } end)
  local reps = math.max(1, 100000 // n)
  local t0 = now()
  for _ = 1, reps do assert(#m.unserialize(capdata) == n) end
  local dt = now() - t0
  report(name, dt / (reps * n) * 1e9, 'ns per slot', ('%d decodes'):format(reps))
end

for _, n in ipairs({ 1000, 10000 }) do
  scenario(('decode a body with %d slots'):format(n), function(name) decodeSlots(name, n) end)
end

-- The smallcaps codec on its own: the C codec (what marshal uses) against
-- the Lua one it replaced (marshal.reference), per operation, on a typical
-- call and on a large record. Timed in CPU seconds (os.clock), which a
-- busy machine disturbs less than the wall clock.
local pass = require 'ocap.pass'
local function codecOps(name, make)
  local objs, slotOf = {}, {}
  for i = 1, 4 do
    objs[i] = pass.registerRemotable({}, 'Alleged: thing')
    slotOf[objs[i]] = 'o-' .. i
  end
  local function valToSlot(v) return slotOf[v] end
  local function slotToVal(slot) return objs[tonumber(slot:sub(3))] end
  local ms = {
    C = marshal.makeMarshal(valToSlot, slotToVal),
    Lua = marshal.reference.makeMarshal(valToSlot, slotToVal),
  }
  local value, encodeOnce, reps = make(objs)
  local figures = {}
  for _, which in ipairs({ 'C', 'Lua' }) do
    local m = ms[which]
    local cd = encodeOnce(m, value)
    local t0 = os.clock()
    for _ = 1, reps do encodeOnce(m, value) end
    local t1 = os.clock()
    for _ = 1, reps do m.unserialize(cd) end
    local t2 = os.clock()
    figures[which] = { (t1 - t0) / reps * 1e9, (t2 - t1) / reps * 1e9, #cd.body }
  end
  local c, l = figures.C, figures.Lua
  report(name .. ', encode', c[1], 'ns per op', ('Lua %.0f ns, %.1fx; %d-byte body'):format(l[1], l[1] / c[1], c[3]))
  report(name .. ', decode', c[2], 'ns per op', ('Lua %.0f ns, %.1fx'):format(l[2], l[2] / c[2]))
end

scenario('smallcaps: a typical call', function(name)
  codecOps(name, function(objs)
    local args = table.pack('transfer', 42, { amount = 1500, memo = 'rent', to = objs[1] }, objs[2])
    return args, function(m, v) return m.serializeCall('deposit', v) end, 100000
  end)
end)

scenario('smallcaps: a record of 1,000 entries', function(name)
  codecOps(name, function()
    local rec = {}
    for i = 1, 1000 do rec['key' .. i] = { id = i, label = 'item ' .. i, price = i * 1.25, tags = { 'a', 'b' } } end
    return rec, function(m, v) return m.serialize(v) end, 200
  end)
end)

-- Arming timers: a vat arms n timers in one delivery (far in the future,
-- so none fires). The time per timer must stay flat as n grows.
local function armTimers(name, n)
  local kernel = testing.makeKernel()
  local r = kernel:launchSubcluster({ bootstrap = 'b', vats = { b = {
    sourceSpec = 'spec/vats/budget.lua', globals = { 'setTimeout', 'clearTimeout' },
    creationOptions = { maxTimers = n, meter = { instructions = 1e10 } } } } }):await()
  local t0 = now()
  assert(kernel:queueMessage(r.rootKref, 'armTimers', { n }):await().armed == n)
  local dt = now() - t0
  report(name, dt / n * 1e9, 'ns per timer', ('%d in %.3f s'):format(n, dt))
  kernel:stop()
end

for _, n in ipairs({ 1000, 10000, 50000 }) do
  scenario(('arm %d timers in one delivery'):format(n), function(name) armTimers(name, n) end)
end

-- One notify telling n promises: a vat's method returns n promises that
-- are settled by the time its result is, so the caller learns all of them
-- in one notify delivery. The time per promise must stay flat.
local function notifyPromises(name, n)
  local kernel = testing.makeKernel()
  local r = kernel:launchSubcluster({ bootstrap = 'a', vats = {
    a = { sourceSpec = 'spec/vats/budget.lua', creationOptions = { meter = { instructions = 1e10 } } },
    b = { sourceSpec = 'spec/vats/budget.lua',
      creationOptions = { meter = { instructions = 1e10 }, maxMessageSlots = n } } } }):await()
  local t0 = now()
  assert(kernel:queueMessage(r.rootKref, 'sumPromises', { 'b', n }):await() == n * (n + 1) // 2)
  local dt = now() - t0
  report(name, dt / n * 1e9, 'ns per promise', ('%d in %.3f s'):format(n, dt))
  kernel:stop()
end

for _, n in ipairs({ 1000, 10000, 30000 }) do
  scenario(('one notify telling %d promises'):format(n), function(name) notifyPromises(name, n) end)
end

-- Vat upgrade (spec/vats/upgrade_v1.lua and _v2.lua, alternately) of a
-- vat holding 1,000 durable instances, against a restart of the same vat:
-- an upgrade does a restart's work plus holding the old heap aside and
-- scanning the durable kinds.
local function upgrades(name, db)
  local kernel = makeKernel(db)
  local r = kernel:launchSubcluster({ bootstrap = 'app', vats = {
    app = { sourceSpec = 'spec/vats/upgrade_v1.lua' }, peer = { sourceSpec = 'spec/vats/upgrade_v1.lua' } } })
    :await()
  local vatId = kernel:getSubcluster(r.subclusterId).vats.app
  for i = 1, 1000 do kernel:queueMessage(r.rootKref, 'open', { 'a' .. i, i }) end
  kernel:run()
  local n = 50
  local t0 = now()
  for i = 1, n do
    local spec = { sourceSpec = i % 2 == 1 and 'spec/vats/upgrade_v2.lua' or 'spec/vats/upgrade_v1.lua' }
    kernel:upgradeVat(vatId, spec):await()
  end
  local up = (now() - t0) / n
  t0 = now()
  for _ = 1, n do kernel:restartVat(vatId):await() end
  local restart = (now() - t0) / n
  report(name, up * 1e6, 'us per upgrade', ('%d upgrades; a restart of the same vat: %.0f us, x%.2f')
    :format(n, restart * 1e6, up / restart))
  kernel:stop()
end

scenario('upgrade a vat holding 1,000 durable objects (memory)', function(name) upgrades(name, nil) end)
scenario('upgrade a vat holding 1,000 durable objects (leveldb)', function(name) upgrades(name, testing.tempDir()) end)

-- Object churn (issue #12): a vat makes an object per message and sends
-- it to the host, which drops it. Garbage collection (reaps every
-- reapInterval deliveries, then collectGarbage at the end) must bring the
-- kernel's keys, its objects and the process's memory back to a constant
-- of where they started: the figure is kernel keys left per object.
scenario('object churn: 1,000,000 made, sent, dropped', function(name)
  local kernel = makeKernel()
  local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = COUNTER } } }):await()
  kernel:queueMessage(r.rootKref, 'makeEphemeral', {}):await() -- warm up
  collectgarbage()
  local s0, rss0 = kernel:stats(), residentBytes()
  local n, batch = 1000000, 500
  local t0 = now()
  for _ = 1, n // batch do
    for _ = 1, batch do kernel:queueMessage(r.rootKref, 'makeEphemeral', {}) end
    kernel:run()
  end
  local dt = now() - t0
  kernel:collectGarbage():await()
  collectgarbage()
  local s1, rss1 = kernel:stats(), residentBytes()
  report(name, (s1.keys - s0.keys) / n, 'kernel keys per object',
    ('keys %d -> %d, objects %d -> %d, RSS %.1f -> %.1f MiB, %.0f us per round trip'):format(
      s0.keys, s1.keys, s0.objects, s1.objects, rss0 / 2 ^ 20, rss1 / 2 ^ 20, dt / n * 1e6))
  kernel:stop()
end)

-- Virtual objects (issue #12): a vat makes 1,000,000 durable instances,
-- each kept in a store, then drops them all and is reaped. The vat's Lua
-- heap stays at a few hundred KiB throughout (instances page from the vat
-- store); the store keys grow by about two per instance (its state and
-- its store entry) and, once the reap has deleted what nothing holds,
-- fall back to where they started.
scenario('virtual objects: 1,000,000 made, kept, dropped', function(name)
  local kernel = makeKernel()
  local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/virtual.lua' } } })
    :await()
  local vatId = kernel:getSubcluster(r.subclusterId).vats.v
  local function vatKeys() return kernel:stats().keys end
  -- A vat that dies (its meter, its memory) has no heap to measure: the
  -- scenario stops there and says why, from the vat's termination record.
  local function heap(step)
    local m = kernel.K:vatMemory(vatId)
    if m then return m end
    local why = 'no termination record'
    for _, t in ipairs(kernel:getStatus().terminatedVats) do
      if t.id == vatId then why = tostring(t.reason) .. (t.failure and (': ' .. tostring(t.failure)) or '') end
    end
    kernel:stop()
    error(('%s: vat %s died %s: %s'):format(name, vatId, step, why), 0)
  end
  local n, batch = 1000000, 10000
  local k0, m0 = vatKeys(), heap('at start')
  local most = m0
  local t0 = now()
  for first = 1, n, batch do
    kernel:queueMessage(r.rootKref, 'makeMany', { first, batch }):await()
    most = math.max(most, heap(('making instance %d'):format(first)))
  end
  local made = now() - t0
  local k1, m1 = vatKeys(), heap('after making')
  t0 = now()
  for first = 1, n, batch do
    kernel:queueMessage(r.rootKref, 'dropMany', { first, batch }):await()
    most = math.max(most, heap(('dropping instance %d'):format(first)))
  end
  -- A reap deletes at most 10,000 objects: reap until nothing changes.
  local reaps, last = 0, -1
  while reaps < 500 do
    kernel:collectGarbage():await()
    reaps = reaps + 1
    heap(('in reap %d'):format(reaps))
    local k = vatKeys()
    if k == last then break end
    last = k
  end
  local dropped = now() - t0
  local k2, m2 = vatKeys(), heap('after the reaps')
  report(name, made / n * 1e6, 'us per instance made',
    ('vat heap %.0f -> %.0f -> %.0f KiB (most %.0f); kernel keys %d -> %d -> %d after the reaps; '
      .. '%d reaps; %.1f s to make, %.1f s to drop and reap'):format(m0 / 1024, m1 / 1024, m2 / 1024,
      most / 1024, k0, k1, k2, reaps, made, dropped))
  kernel:stop()
end)
