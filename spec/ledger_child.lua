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

local kernel = ocap.Kernel.make { database = db, durability = durability, logger = function() end }

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
