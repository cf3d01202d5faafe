-- A short host queueMessage round-trip loop for counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/hostroundtrip.lua N
-- As for bench/roundtrip.lua, run it with two values of N: the difference
-- of the totals divided by the difference of N is the cost of one host
-- round trip (`kernel:queueMessage(root, 'ping', { i }):await()`). A
-- second argument `db` runs it on a LevelDB database.
local testing = require 'ocap.testing'

local n = tonumber(arg and arg[1]) or 500
local db = arg and arg[2] == 'db' and testing.tempDir() or nil
local kernel = testing.makeKernel({ database = db })
local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
  alice = { sourceSpec = 'spec/vats/echo.lua' }, bob = { sourceSpec = 'spec/vats/echo.lua' } } }):await()
for i = 1, 50 do kernel:queueMessage(r.rootKref, 'ping', { i }):await() end -- warm up
for i = 1, n do kernel:queueMessage(r.rootKref, 'ping', { i }):await() end
kernel:stop()
