-- Launching two-vat subclusters (as `make bench`'s launch scenario does),
-- for counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/launch.lua N [db]
-- Run it with two values of N: the difference of the totals divided by the
-- difference of N is the cost of one launch (both vats started, the
-- bootstrap message delivered and its result awaited by the host). A
-- second argument `db` runs it on a LevelDB database.
local testing = require 'ocap.testing'

local n = tonumber(arg and arg[1]) or 50
local db = arg and arg[2] == 'db' and testing.tempDir() or nil
local kernel = testing.makeKernel({ database = db })
local cfg = { bootstrap = 'alice', vats = {
  alice = { sourceSpec = 'spec/vats/echo.lua' }, bob = { sourceSpec = 'spec/vats/echo.lua' } } }
for _ = 1, 5 do kernel:launchSubcluster(cfg):await() end -- warm up
for _ = 1, n do kernel:launchSubcluster(cfg):await() end
kernel:stop()
