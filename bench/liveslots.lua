-- The Lua cost of a vat-to-vat round trip, without the kernel: two
-- liveslots instances in this Lua state, joined by a stand-in kernel that
-- only queues deliveries and maps refs, run E(bob).ping(i):await() in a
-- loop. It counts the Lua VM instructions of a round trip exactly (a count
-- hook on every instruction; the stand-in kernel's share is included and
-- listed), and with "profile" lists them by function and by line.
--   build/ocap run bench/liveslots.lua [round trips] [profile]
local liveslots = require 'ocap.liveslots'
local promise = require 'ocap.promise'
local exo = require 'ocap.exo'

local n = tonumber(arg and arg[1]) or 10000
local profile = arg and arg[2] == 'profile'

local total, standIn = 0, 0
local byFunction, byLine = {}, {}
local getinfo = debug.getinfo
local here = getinfo(1, 'S').source
local function hook()
  total = total + 1
  local info = getinfo(2, 'Sl')
  if info.source == here then standIn = standIn + 1 end
  if profile then
    local f = info.short_src .. ':' .. info.linedefined
    byFunction[f] = (byFunction[f] or 0) + 1
    local l = info.short_src .. ':' .. info.currentline
    byLine[l] = (byLine[l] or 0) + 1
  end
end
-- A hook belongs to one thread. Park the runtime's pooled workers (at
-- most 64), then fill the pool with four that carry the hook: the round
-- trips below need two at a time.
local never = promise.makePromise()
for _ = 1, 64 do promise.spawn(promise.await, never) end
local release = promise.makePromise()
for _ = 1, 4 do
  promise.spawn(function()
    debug.sethook(hook, '', 1)
    promise.await(release)
  end)
end
promise.resolvePromise(release, true)
promise.drain()
debug.sethook(hook, '', 1)

-- The stand-in kernel: alice's import o-1 is bob's root o+0, and a
-- promise is p+N in the vat that decides it and p-N in the other.
local queue, head, tail = {}, 1, 0
local function push(d)
  tail = tail + 1
  queue[tail] = d
end
local alice, bob
local function flip(ref)
  return ref:sub(1, 1) .. (ref:sub(2, 2) == '+' and '-' or '+') .. ref:sub(3)
end
local function syscalls()
  local store = {}
  return {
    vatstoreGet = function(k) return store[k] end,
    vatstoreSet = function(k, v) store[k] = v end,
    vatstoreDelete = function(k) store[k] = nil end,
    subscribe = function() end,
    -- Deliveries in the kernel's shapes: nil for no slots, one
    -- resolution flat.
    send = function(target, body, slots, result)
      assert(target == 'o-1' and slots == nil, 'the stand-in kernel only knows ping')
      push({ bob.dispatch, 'message', 'o+0', body, nil, flip(result) })
    end,
    resolve = function(vpid, rejected, body, slots)
      push({ alice.dispatch, 'notify', flip(vpid), rejected, body, slots })
    end,
  }
end
alice = liveslots.make({ syscall = syscalls(), vatId = 'v1', kind = 'vat', log = function() end })
bob = liveslots.make({ syscall = syscalls(), vatId = 'v2', kind = 'vat', log = function() end })
bob.exportAs(exo.makeDefaultExo('bob', { ping = function(_, i) return i end }), 'o+0')
local bobPresence = alice.presenceFor('o-1')

local E = liveslots.E
local function run(count)
  local sum = 0
  local task = promise.spawn(function()
    for i = 1, count do sum = sum + E(bobPresence).ping(i):await() end
  end)
  while queue[head] do
    local d = queue[head]
    queue[head] = nil
    head = head + 1
    d[1](d[2], d[3], d[4], d[5], d[6])
  end
  local state, why = promise.state(task)
  assert(state == 'fulfilled' and sum == count * (count + 1) // 2, 'round trips failed: ' .. tostring(why))
end

run(100) -- warm up: pooled coroutines, proxies, table sizes
local before, standInBefore = total, standIn
run(n)
debug.sethook()
local ops, standInOps = total - before, standIn - standInBefore
print(('%d round trips: %.0f Lua VM instructions each, %.0f in the runtime and %.0f in the stand-in kernel'):format(
  n, ops / n, (ops - standInOps) / n, standInOps / n))

if profile then
  for _, t in ipairs({ byFunction, byLine }) do
    local list, sum = {}, 0
    for k, v in pairs(t) do
      list[#list + 1] = { k, v }
      sum = sum + v
    end
    table.sort(list, function(a, b) return a[2] > b[2] end)
    print(t == byFunction and '--- by function (where it starts)' or '--- by line')
    for i = 1, math.min(#list, 40) do
      print(('%8.1f %5.1f%%  %s'):format(list[i][2] / (n + 100), list[i][2] / sum * 100, list[i][1]))
    end
  end
end
