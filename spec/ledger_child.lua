-- The workload of spec/crash_spec.lua, run as a child process that the
-- spec kills with SIGKILL: transfers between account vats, each printed as
-- "ACK <id> <result>" once its result reached the host.
--   ocap run spec/ledger_child.lua DB MODE DURABILITY
-- MODE is "run" (transfer until killed) or "check" (drain and report).
local ocap = require 'ocap'
local marshal = require 'ocap.marshal'

local db, mode, durability = arg[1], arg[2], arg[3] or 'none'
local ACCOUNTS = { 'a1', 'a2', 'a3', 'a4', 'a5' }
local here = (arg[0]):match('^(.*)/[^/]*$')

-- Reaps often, so that receipts are collected all along (GC actions,
-- deletions) while the process is killed.
local kernel = ocap.Kernel.make { database = db, durability = durability, logger = function() end,
  gc = { reapInterval = 3 } }

local sc = kernel:getSubclusters()[1]
if not sc then
  local vats = {}
  for _, name in ipairs(ACCOUNTS) do
    vats[name] = { sourceSpec = here .. '/vats/account.lua', parameters = { balance = 1000 } }
  end
  kernel:launchSubcluster({ bootstrap = 'a1', vats = vats }):await()
  sc = kernel:getSubclusters()[1]
end

-- Roots of the accounts, by name.
local roots = {}
for _, name in ipairs(ACCOUNTS) do
  roots[name] = kernel:getPresence(kernel.K:krefOf(sc.vats[name], 'o+0'), 'account')
end

-- Transfer `id` is a fixed function of id, so a restarted child repeats it.
local function plan(id)
  local from = ACCOUNTS[(id * 7) % #ACCOUNTS + 1]
  local to = ACCOUNTS[(id * 3 + 1) % #ACCOUNTS + 1]
  if to == from then to = ACCOUNTS[(id * 3 + 2) % #ACCOUNTS + 1] end
  return from, to, id % 17 + 1
end

if mode == 'check' then
  kernel:run()
  local report = {}
  for _, name in ipairs(ACCOUNTS) do
    report[name] = ocap.E(roots[name]).report():await()
  end
  -- Every receipt is garbage by now. Once collected, each object's counts
  -- must be what the database holds: recounted from the c-lists, the run
  -- queue, the parked messages and the promises' data, after every kill.
  kernel:collectGarbage():await()
  local K, want, have = kernel.K, {}, {}
  local function add(kref, r) want[kref] = { (want[kref] or { 0, 0 })[1] + r, (want[kref] or { 0, 0 })[2] + 1 } end
  local function addSlots(line) for kref in line:gmatch('ko%d+') do add(kref, 1) end end
  local key
  repeat
    key = K:kvNext('', key)
    local v = key and K:kvGet(key)
    if not key then
      break
    elseif key:match('^v%d+%.c%.ko%d+$') or key:match('^kernel%.c%.ko%d+$') then
      if v:match('^_ ') then add(key:match('ko%d+$'), 0) elseif not v:match('^o%+') then add(key:match('ko%d+$'), 1) end
    elseif key:match('^runQueue%.%d+$') or key:match('^kp%d+%.queue%.%d+$') then
      local head, slots = v:match('^([^\n]*)\n([^\n]*)')
      if head:match('^send ') then addSlots(head:match('^send (%S+)')); addSlots(slots) end
    elseif key:match('^kp%d+%.data$') then
      addSlots(v:match('^[^\n]*'))
    elseif key:match('^ko%d+%.refCount$') then
      local r, c = v:match('^(%d+),(%d+)$')
      have[key:match('^ko%d+')] = { tonumber(r), tonumber(c) }
    elseif key:match('^ko%d+%.owner$') then
      local kref = key:match('^ko%d+')
      have[kref] = have[kref] or { 0, 0 }
      if not K:kvGet(kref .. '.pinned') then report.unpinned = (report.unpinned or 0) + 1 end
    end
  until false
  local wrong = {}
  for kref, h in pairs(have) do
    local w = want[kref] or { 0, 0 }
    if w[1] ~= h[1] or w[2] ~= h[2] then
      wrong[#wrong + 1] = ('%s %d,%d (counted %d,%d)'):format(kref, h[1], h[2], w[1], w[2])
    end
  end
  for kref in pairs(want) do if not have[kref] then wrong[#wrong + 1] = kref .. ' referenced but gone' end end
  table.sort(wrong)
  report.wrongCounts = wrong
  report.objects = kernel:stats().objects
  io.write(marshal.serializeData(report).body, '\n')
  kernel:stop()
  return
end

-- Resume after the last transfer the ledger saw. Transfers are issued one
-- at a time, so the attempted ones are exactly 1..k: search for k.
local function attempted(id)
  return ocap.E(roots[(plan(id))]).attempted(id):await()
end
local lo, hi = 0, 1
while attempted(hi) do
  lo, hi = hi, hi * 2
end
while hi - lo > 1 do
  local mid = (lo + hi) // 2
  if attempted(mid) then lo = mid else hi = mid end
end
local id = lo + 1
while true do
  local from, to, amount = plan(id)
  local result = ocap.E(roots[from]).transfer(id, roots[to], amount):await()
  io.write(('ACK %d %s\n'):format(id, result))
  io.stdout:flush()
  id = id + 1
end
