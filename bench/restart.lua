-- Restarting a LevelDB kernel that holds N idle vats, for counting
-- instructions. Make the database once, then count only the reopen:
--   build/ocap run bench/restart.lua make DIR N
--   valgrind --tool=callgrind build/ocap run bench/restart.lua open DIR
-- Do it for two values of N; the difference of the totals divided by the
-- difference of N is what one idle vat costs a restart.
local testing = require 'ocap.testing'

local mode, dir = arg and arg[1], arg and arg[2]
assert(mode == 'make' or mode == 'open', 'usage: restart.lua make|open DIR [N]')
if mode == 'make' then
  local n = tonumber(arg[3]) or 1000
  local kernel = testing.makeKernel({ database = dir })
  local cfg = { bootstrap = 'v1', vats = {} }
  for i = 1, 10 do cfg.vats['v' .. i] = { sourceSpec = 'spec/vats/counter.lua' } end
  for _ = 1, n // 10 do kernel:launchSubcluster(cfg):await() end
  print(('%d vats'):format(#kernel:getStatus().vats))
  kernel:stop()
else
  local kernel = testing.makeKernel({ database = dir })
  kernel:stop()
end
