-- A short remote round-trip loop for counting instructions:
--   valgrind --tool=callgrind build/ocap run bench/remoteroundtrip.lua N [tcp-tls]
-- Two kernels in this one process, CapTP on loopback (tcp-testing-only,
-- or the netlayer given); the host of one calls the echo vat of the other
-- (`E(echo).ping(i):await()`), so callgrind counts both kernels together.
-- As for bench/roundtrip.lua, run it with two values of N: the difference
-- of the totals divided by the difference of N is the cost of one round
-- trip, start-up (and the session's handshake) excluded.
local ocap = require 'ocap'
local E = ocap.E

local n = tonumber(arg and arg[1]) or 400
local netlayer = arg and arg[2] or nil
local function quiet() end
local alice = ocap.Kernel.make { database = false, logger = quiet,
  remote = { netlayer = netlayer, listen = '127.0.0.1:0' } }
local bob = ocap.Kernel.make { database = false, logger = quiet,
  remote = { netlayer = netlayer, listen = '127.0.0.1:0' } }
local r = alice:launchSubcluster({ bootstrap = 'echo', vats = { echo = { sourceSpec = 'spec/vats/echo.lua' } } })
  :await()
local echo = bob:redeemOcapURL(alice:issueOcapURL(r.rootKref)):await()
for i = 1, 50 do E(echo).ping(i):await() end -- warm up
for i = 1, n do E(echo).ping(i):await() end
alice:stop()
bob:stop()
