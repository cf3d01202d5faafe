-- The other kernel of spec/remote_spec.lua, run in its own process:
--   ocap run spec/remote/peer.lua
-- It hosts an echo vat, a host object whose answers never settle and a
-- gate for the pipelining specs, prints its locator, the echo vat's
-- sturdyref URL, the never object's and the gate's, one a line, then
-- serves until it is killed. Its limits are small so that the specs can
-- cross them; REMOTE_DB keeps its state in a directory, and
-- REMOTE_NETLAYER chooses the netlayer: with several, comma-separated
-- (`tcp-tls,tcp-testing-only`), the URLs are on the first, and the
-- locators of the others follow on lines of their own.
local ocap = require 'ocap'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'

local here = (arg and arg[0] or 'spec/remote/peer.lua'):match('^(.*)/remote/peer%.lua$') or 'spec'

local remote = { handshakeTimeout = 300, maxMessageBytes = 65536, maxAnswers = 50 }
local netlayer = os.getenv('REMOTE_NETLAYER')
if netlayer and netlayer:find(',') then
  remote.netlayers = {}
  for name in netlayer:gmatch('[^,]+') do
    remote.netlayers[#remote.netlayers + 1] = { type = name, listen = '127.0.0.1:0' }
  end
else
  remote.netlayer, remote.listen = netlayer, '127.0.0.1:0'
end
local kernel = ocap.Kernel.make {
  database = os.getenv('REMOTE_DB') or false,
  logger = function() end,
  remote = remote,
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

-- The gate of the pipelining specs. a(n), fail(n) and die(n) answer only
-- once n messages arrived on answers of this kernel that had not settled
-- (so only when the other side sent them without waiting for our answer):
-- a with the stage object, fail with an error, die by ending this process.
-- The stage's log() tells what arrived and ran, in order.
local story, waiter, arrivals = {}, nil, 0
local stage
stage = ocap.makeDefaultExo('stage', {
  b = function()
    story[#story + 1] = 'b'
    return stage
  end,
  c = function()
    story[#story + 1] = 'c'
    return 'c done'
  end,
  step = function(_, i)
    story[#story + 1] = 'step ' .. i
    return i
  end,
  log = function() return table.move(story, 1, #story, 1, {}) end,
})
local function check()
  if waiter and arrivals >= waiter.n then
    local w = waiter
    waiter, arrivals = nil, 0
    story[#story + 1] = 'a answered'
    w.fire(w.kit)
  end
end
-- Messages are counted as they arrive, before their targets run (a's
-- method may run turns later than the messages that came with it, when a
-- itself went to an answer), until a gate answers.
local gate
local comms = kernel.remote
local deliverLocal = comms._deliverLocal
comms._deliverLocal = function(self, target, method, args)
  if target == gate then
    story = { method }
  elseif promise.isPromise(target) and promise.state(target) == 'pending' then
    arrivals = arrivals + 1
    story[#story + 1] = 'arrived ' .. method
    check()
  end
  return deliverLocal(self, target, method, args)
end
local function gated(n, fire)
  local kit = promise.makePromiseKit()
  waiter = { n = n, kit = kit, fire = fire }
  check()
  return kit.promise
end
gate = ocap.makeDefaultExo('gate', {
  a = function(_, n) return gated(n, function(kit) kit.resolve(stage) end) end,
  fail = function(_, n)
    return gated(n, function(kit) kit.reject(pass.makeError('a failed on purpose')) end)
  end,
  die = function(_, n) return gated(n, function() os.exit(3) end) end,
})

print(kernel:getStatus().remoteComms.listenAddresses[1])
print(kernel:issueOcapURL(root, swiss))
print(kernel:issueOcapURL(never))
print(kernel:issueOcapURL(gate))
local addresses = kernel:getStatus().remoteComms.listenAddresses
for i = 2, #addresses do print(addresses[i]) end
io.stdout:flush()
promise.makePromise():await()
