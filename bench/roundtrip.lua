-- A short vat-to-vat round-trip loop for counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/roundtrip.lua N
-- Run it with two values of N; the difference of the totals divided by the
-- difference of N is the cost of one round trip, start-up excluded. A
-- second argument `db` runs it on a LevelDB database in a temporary
-- directory (results flushed before they reach the host, as always).
local testing = require 'ocap.testing'

local n = tonumber(arg and arg[1]) or 1000
local db = arg and arg[2] == 'db' and testing.tempDir() or nil
local kernel = testing.makeKernel({ database = db })
local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
  alice = { sourceSpec = 'spec/vats/echo.lua' }, bob = { sourceSpec = 'spec/vats/echo.lua' } } }):await()
kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', 100 }):await() -- warm up
kernel:queueMessage(r.rootKref, 'pingPeer', { 'bob', n }):await()
kernel:stop()
