-- Reaping idle vats, for counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/reap.lua N [reap]
-- launches N one-vat subclusters of spec/vats/idle.lua and, with `reap`,
-- reaps them all once (kernel:reapVats()). The difference of the totals
-- with and without `reap`, divided by N, is what one reap of an idle vat
-- costs, start-up and launches excluded.
local testing = require 'ocap.testing'

local n = tonumber(arg and arg[1]) or 200
local kernel = testing.makeKernel({})
local cfg = { bootstrap = 'v', vats = { v = { sourceSpec = 'spec/vats/idle.lua' } } }
for _ = 1, n do kernel:launchSubcluster(cfg):await() end
if arg and arg[2] == 'reap' then kernel:reapVats():await() end
kernel:stop()
