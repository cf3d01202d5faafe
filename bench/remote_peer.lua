-- The other kernel of bench/run.lua's remote scenarios, in its own process:
--   ocap run bench/remote_peer.lua
-- hosts an echo vat, prints its sturdyref URL and serves until killed.
-- BENCH_NETLAYER chooses the netlayer (tcp-testing-only by default).
local ocap = require 'ocap'
local promise = require 'ocap.promise'

local kernel = ocap.Kernel.make { database = false, logger = function() end,
  remote = { netlayer = os.getenv('BENCH_NETLAYER'), listen = '127.0.0.1:0' } }
local r = kernel:launchSubcluster({ bootstrap = 'echo', vats = { echo = { sourceSpec = 'spec/vats/echo.lua' } } })
  :await()
print(kernel:issueOcapURL(r.rootKref))
io.stdout:flush()
promise.makePromise():await()
