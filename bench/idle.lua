-- What an idle vat costs, in exact bytes (issue #11): launches 1,000
-- one-vat subclusters of spec/vats/idle.lua and prints the mean of each
-- vat's Lua heap (K:vatMemory) and the growth of the process's resident
-- memory per vat. `make bench` prints the same in KiB; this is for
-- comparing two builds byte by byte:
--
--   build/ocap run bench/idle.lua
local testing = require 'ocap.testing'

local function resident()
  local f = assert(io.open('/proc/self/statm'))
  local pages = f:read('a'):match('^%d+%s+(%d+)')
  f:close()
  return tonumber(pages) * 4096
end

local kernel = testing.makeKernel({})
local cfg = { bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/idle.lua' } } }
kernel:launchSubcluster(cfg):await() -- warm up the kernel's own tables
collectgarbage()
local n, heap, r0 = 1000, 0, resident()
for _ = 1, n do
  local r = kernel:launchSubcluster(cfg):await()
  heap = heap + kernel.K:vatMemory(kernel:getSubcluster(r.subclusterId).vats.v)
end
collectgarbage()
print(('idle vat: heap %.0f bytes, resident %.0f bytes (mean over %d vats)'):format(heap / n,
  (resident() - r0) / n, n))
kernel:stop()
