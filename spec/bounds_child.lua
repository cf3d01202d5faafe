-- The workload of the promise counters' crash spec (spec/crash_spec.lua),
-- run as a child process that the spec kills with SIGKILL: host round
-- trips, vat-to-vat messages and promises a vat holds, each printed as
-- "ACK <n> <next kp number>" once its result reached the host.
--   ocap run spec/bounds_child.lua DB MODE
-- MODE is "run" (until killed) or "check" (read the store, then report).
local ocap = require 'ocap'

local db, mode = arg[1], arg[2]
local here = (arg[0]):match('^(.*)/[^/]*$')
local kernel = ocap.Kernel.make { database = db, logger = function() end }
local K = kernel.K

-- What the store holds as it was left, before anything runs: every
-- promise number it names below its counter, every endpoint's p-N below
-- the endpoint's counter. Returns the problems found and the counter.
local function scan()
  local bad, maxKp, counters, imports = {}, -1, {}, {}
  local key
  repeat
    key = K:kvNext('', key)
    if not key then break end
    local v = K:kvGet(key)
    for n in (key .. ' ' .. v):gmatch('kp(%d+)') do maxKp = math.max(maxKp, tonumber(n)) end
    local ep, n = key:match('^(%w+)%.c%.p%-(%d+)$')
    if ep then imports[#imports + 1] = { ep, tonumber(n) } end
    for n2 in v:gmatch('p%-(%d+)') do
      local ep2 = key:match('^(%w+)%.c%.kp%d+$')
      if ep2 then imports[#imports + 1] = { ep2, tonumber(n2) } end
    end
    ep = key:match('^(%w+)%.nextPromiseId$')
    if ep then counters[ep] = tonumber(v) end
  until false
  local next = tonumber(K:kvGet('nextPromiseId') or '1')
  if maxKp >= next then bad[#bad + 1] = ('kp%d in the store, nextPromiseId %d'):format(maxKp, next) end
  for _, i in ipairs(imports) do
    if i[2] >= (counters[i[1]] or 1) then
      bad[#bad + 1] = ('%s p-%d in the store, its nextPromiseId %s'):format(i[1], i[2], counters[i[1]])
    end
  end
  return bad, next
end

local sc = kernel:getSubclusters()[1]
if mode == 'check' then
  local bad, next = scan()
  local ok, err = pcall(K.check, K)
  io.write(('NEXT %d\n'):format(next))
  for _, b in ipairs(bad) do io.write('BAD ', b, '\n') end
  if not ok then io.write('BAD check: ', tostring(err), '\n') end
  -- The store goes on from there: messages run, and a clean close writes
  -- the counter as it is.
  if sc then
    local root = kernel:getPresence(K:krefOf(sc.vats.a, 'o+0'), 'counter')
    ocap.E(root).increment():await()
    ok, err = pcall(K.check, K)
    if not ok then io.write('BAD check after a message: ', tostring(err), '\n') end
  end
  local live = K:nextId('p')
  kernel:stop()
  io.write(('LIVE %d\n'):format(live))
  return
end

if not sc then
  kernel:launchSubcluster({ bootstrap = 'a', vats = {
    a = { sourceSpec = here .. '/vats/counter.lua' }, other = { sourceSpec = here .. '/vats/counter.lua' } } }):await()
  sc = kernel:getSubclusters()[1]
end
local root = kernel:getPresence(K:krefOf(sc.vats.a, 'o+0'), 'counter')
local n = 0
while true do
  n = n + 1
  local step = n % 3
  if step == 0 then
    ocap.E(root).increment():await()
  elseif step == 1 then
    ocap.E(root).callOther('increment'):await()
  else
    -- A promise of the host that vat a holds (an import p-N of a's, in its
    -- c-list across cranks and kills).
    ocap.E(root).hold(ocap.makePromiseKit().promise):await()
  end
  io.write(('ACK %d %d\n'):format(n, K:nextId('p')))
  io.stdout:flush()
end
