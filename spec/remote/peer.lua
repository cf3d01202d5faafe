-- The other kernel of spec/remote_spec.lua, run in its own process:
--   ocap run spec/remote/peer.lua
-- It hosts an echo vat and a host object whose answers never settle,
-- prints its locator, the echo vat's sturdyref URL and the never object's,
-- one a line, then serves until it is killed. Its limits are small so that
-- the specs can cross them; REMOTE_DB keeps its state in a directory.
local ocap = require 'ocap'
local promise = require 'ocap.promise'

local here = (arg and arg[0] or 'spec/remote/peer.lua'):match('^(.*)/remote/peer%.lua$') or 'spec'

local kernel = ocap.Kernel.make {
  database = os.getenv('REMOTE_DB') or false,
  logger = function() end,
  remote = { listen = '127.0.0.1:0', handshakeTimeout = 300, maxMessageBytes = 65536, maxAnswers = 50 },
}

local swiss = os.getenv('REMOTE_SWISS')
local root = kernel.K:kvGet('spec.echoRoot')
if not root then
  local r = kernel:launchSubcluster({
    bootstrap = 'echo',
    vats = { echo = { sourceSpec = here .. '/vats/echo.lua' } },
  }):await()
  root = r.rootKref
  kernel.K:kvSet('spec.echoRoot', root)
  kernel.K:commit()
end
local never = ocap.makeDefaultExo('never', {
  wait = function() return promise.makePromise() end,
})

print(kernel:getStatus().remoteComms.listenAddresses[1])
print(kernel:issueOcapURL(root, swiss))
print(kernel:issueOcapURL(never))
io.stdout:flush()
promise.makePromise():await()
