-- The objects the public OCapN test suite (ocapn/ocapn-test-suite) fetches,
-- hosted by an in-memory kernel on the tcp-testing-only netlayer:
--
--   build/ocap run host/examples/ocapn/testsuite-peer.lua
--
-- prints this kernel's locator (ocapn://<designator>.tcp-testing-only?
-- host=127.0.0.1&port=N) as the first line of stdout, then serves until it
-- is killed. Give that locator to the suite's test_runner.py. The port is
-- chosen by the system unless OCAPN_PORT is set.
--
-- The objects are host exos: they get OCapN's values as they are
-- (symbols, byte arrays), which a vat would get as strings. A message
-- without a selector (OCapN's plain call) reaches them as `__call`.
local ocap = require 'ocap'
local pass = require 'ocap.pass'
local promise = require 'ocap.promise'
local syrup = require 'ocap.syrup'

local E = ocap.E
local makeExo = ocap.makeDefaultExo

local kernel = ocap.Kernel.make {
  database = false,
  logger = function(entry)
    if entry.level ~= 'debug' then io.stderr:write(('[%s] %s\n'):format(entry.vatId or 'kernel', entry.message)) end
  end,
  remote = { netlayer = 'tcp-testing-only', listen = '127.0.0.1:' .. (os.getenv('OCAPN_PORT') or '0') },
}

local function symbolName(v)
  return syrup.kind(v) == 'symbol' and v.name or nil
end

-- Car factory builder: builder() -> factory; factory({color, model}) ->
-- car; car() -> "Vroom! I am a <color> <model> car!".
local carFactoryBuilder = makeExo('carFactoryBuilder', {
  __call = function()
    return makeExo('carFactory', {
      __call = function(_, spec)
        local color = pass.isArray(spec) and symbolName(spec[1])
        local model = pass.isArray(spec) and symbolName(spec[2])
        if not color or not model or #spec ~= 2 then
          error(pass.makeError('a car is made from a list of two symbols: color and model'), 0)
        end
        return makeExo('car', {
          __call = function() return ('Vroom! I am a %s %s car!'):format(color, model) end,
        })
      end,
    })
  end,
})

-- Echo: answers with its arguments and keeps none of them, so that the
-- references it was given are released (op:gc-export) at once.
local echoGc = makeExo('echoGc', {
  __call = function(_, ...) return pass.array(...) end,
})

-- Greeter: sends "Hello" to what it is given, with op:deliver, and drops
-- the answer.
local greeter = makeExo('greeter', {
  __call = function(_, who)
    E(who).__call('Hello')
  end,
})

-- Promise resolver: a fresh promise and its resolver.
local promiseResolver = makeExo('promiseResolver', {
  __call = function()
    local kit = promise.makePromiseKit()
    local resolver = makeExo('resolver', {
      fulfill = function(_, v) kit.resolve(v) end,
      ['break'] = function(_, e) kit.reject(e) end,
    })
    return pass.array(kit.promise, resolver)
  end,
})

-- Sturdyref enlivener: given an <ocapn-sturdyref ...>, dials its peer and
-- fetches it.
local enlivener = makeExo('sturdyrefEnlivener', {
  __call = function(_, sturdyref) return kernel:redeemOcapURL(sturdyref) end,
})

kernel:issueOcapURL(carFactoryBuilder, 'JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ')
kernel:issueOcapURL(echoGc, 'IO58l1laTyhcrgDKbEzFOO32MDd6zE5w')
kernel:issueOcapURL(greeter, 'VMDDd1voKWarCe2GvgLbxbVFysNzRPzx')
kernel:issueOcapURL(promiseResolver, 'IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr')
kernel:issueOcapURL(enlivener, 'gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB')

print(kernel:getStatus().remoteComms.listenAddresses[1])
io.stdout:flush()

-- Serve until killed: a promise nobody settles, awaited while the
-- listening socket keeps the kernel's loop alive.
promise.makePromise():await()
