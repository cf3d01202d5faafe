-- Host queueMessage calls to a vat that writes its baggage in each one
-- (spec/vats/counter.lua's increment: a get and a set of one key), for
-- counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/baggage.lua N [db]
-- As for bench/hostroundtrip.lua, run it with two values of N: the
-- difference of the totals divided by the difference of N is the cost of
-- one call; less the host round trip's, it is what the baggage write costs.
-- A second argument `db` runs it on a LevelDB database, where each call's
-- write is committed before its result reaches the host.
local testing = require 'ocap.testing'

local n = tonumber(arg and arg[1]) or 500
local db = arg and arg[2] == 'db' and testing.tempDir() or nil
local kernel = testing.makeKernel({ database = db })
local r = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'spec/vats/counter.lua' } } }):await()
for _ = 1, 50 do kernel:queueMessage(r.rootKref, 'increment', {}):await() end -- warm up
for _ = 1, n do kernel:queueMessage(r.rootKref, 'increment', {}):await() end
assert(kernel:queueMessage(r.rootKref, 'get', {}):await() == n + 50)
kernel:stop()
