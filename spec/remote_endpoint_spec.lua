-- A remote peer is an endpoint of the kernel (docs/remote.md, "Sessions"):
-- each CapTP session has an endpoint `r<N>` with its own c-list, which
-- owns the session's imports and records what we export to the peer;
-- the kernel delivers to it what it routes to the peer, its GC sees it,
-- and the session's end terminates it. The peer here is a raw CapTP
-- client (spec/remote/client.lua), so that each message on the wire and
-- each count can be checked.
local ocap = require 'ocap'
local syrup = require 'ocap.syrup'
local captp = require 'ocap.captp'
local support = require 'support'
local client = require 'remote.client'

local E = ocap.E
local SRC = support.SRC
local op, desc, list, sym = captp.op, captp.desc, captp.list, syrup.symbol

describe('a remote peer as an endpoint', function()
  local kernel, raw, echoVat

  -- The kernel redeems a sturdyref of the raw peer, which answers the
  -- fetch with its export 5: the kernel's import. The peer's bootstrap
  -- object, which nothing holds once the fetch is answered, is let go
  -- before it returns: a collection would let it go at any time (under
  -- load, between two counts of a test). So its import is checked where
  -- it ends, whenever that was: the peer is told the kernel let go of
  -- position 0, which it had imported once.
  local function session()
    raw = client.listen(kernel)
    local pObj = kernel:redeemOcapURL((raw.locator:gsub('%?', '/s/thing?')))
    raw:accept()
    raw:receive()
    raw:sendHello()
    local fetch = raw:expect('op:deliver')
    raw:send(op('op:deliver-only', desc('desc:export', captp.descPos(fetch.args[4], 'desc:import-object')),
      list(sym('fulfill'), desc('desc:import-object', 5))))
    local obj = pObj:await()
    kernel:collectGarbage():await()
    assert.are.equal(1, raw:expectGcExport(0))
    return obj
  end

  local function peers() return kernel:getStatus().remoteComms.peers end

  -- Answers the op:deliver `msg` with value.
  local function answer(msg, value)
    raw:send(op('op:deliver-only', desc('desc:export', captp.descPos(msg.args[4], 'desc:import-object')),
      list(sym('fulfill'), value)))
  end

  -- The keys of the kernel's store that start with prefix.
  local function keys(prefix)
    local out, key = {}, kernel.K:kvNext(prefix)
    while key and key:sub(1, #prefix) == prefix do
      out[#out + 1] = key
      key = kernel.K:kvNext(prefix, key)
    end
    return out
  end

  before_each(function()
    kernel = support.newKernel { remote = { listen = '127.0.0.1:0' } }
    echoVat = kernel:launchSubcluster({
      bootstrap = 'echo', vats = { echo = { sourceSpec = SRC .. '/spec/vats/echo.lua' } },
    }):await().rootKref
  end)

  after_each(function()
    if raw then raw:close() end
    kernel:stop()
  end)

  it('lists each session in getStatus as an endpoint with its c-list', function()
    assert.are.same({}, peers())
    local obj = session()
    -- Its import: export 5 (the bootstrap object the fetch went to is let
    -- go, as nothing holds it).
    local p = peers()
    assert.are.equal(1, #p)
    assert.matches('^r%d+$', p[1].id)
    assert.are.same({ id = p[1].id, peerId = 'rawpeer', objects = 1, promises = 0 }, p[1])
    -- An import is a kernel object of that endpoint: the kernel routes a
    -- vat's message to it there, and the endpoint decides its result.
    local result = kernel:queueMessage(echoVat, 'call', { obj, 'ping', 1 })
    local ping = raw:expect('op:deliver')
    assert.are.same({ sym('ping'), 1 }, { ping.args[2][1], ping.args[2][2] })
    assert.are.equal(1, peers()[1].promises)
    answer(ping, 1)
    assert.are.equal(1, result:await())
    assert.are.equal(0, peers()[1].promises)
    -- What we give the peer is recorded as its import, until it releases it.
    local gave = E(obj).take(kernel:getPresence(echoVat))
    local take = raw:expect('op:deliver')
    local pos = captp.descPos(take.args[2][2], 'desc:import-object')
    assert.is_not_nil(pos)
    assert.are.equal(2, peers()[1].objects)
    answer(take, true)
    assert.is_true(gave:await())
    raw:send(op('op:gc-export', list(pos), list(1)))
    -- A round trip later, the endpoint has let it go.
    local later = E(obj).ping(2)
    answer(raw:expect('op:deliver'), 2)
    assert.are.equal(2, later:await())
    assert.are.equal(1, peers()[1].objects)
    -- The vat we gave lives on: the peer's release only dropped its hold.
    assert.are.equal(3, kernel:queueMessage(echoVat, 'ping', { 3 }):await())
  end)

  it('records a kernel promise we give the peer until it settles', function()
    local obj = session()
    local r = kernel:queueMessage(echoVat, 'ping', { 4 })
    local gave = E(obj).take(r)
    assert.are.equal(1, peers()[1].promises)
    local take = raw:expect('op:deliver')
    assert.is_not_nil(captp.descPos(take.args[2][2], 'desc:import-promise'))
    assert.are.equal(4, r:await())
    answer(take, true)
    assert.is_true(gave:await())
    assert.are.equal(0, peers()[1].promises)
  end)

  it("decides the peer's promises, and sends it their messages before they settle", function()
    local obj = session()
    -- A vat gets a record holding a promise of the peer's (its export 9).
    local got = kernel:queueMessage(echoVat, 'call', { obj, 'getP' })
    answer(raw:expect('op:deliver'), { p = desc('desc:import-promise', 9) })
    local listen = raw:expect('op:listen')
    assert.are.equal(9, captp.descPos(listen.args[1], 'desc:export'))
    local p = got:await().p
    assert.are.equal(1, peers()[1].promises)
    -- A message to it goes through the kernel to the endpoint, its
    -- decider, and on to the peer's promise at once.
    local pinged = E(p).ping(3)
    local ping = raw:expect('op:deliver')
    assert.are.equal(9, captp.descPos(ping.args[1], 'desc:export'))
    assert.are.same({ sym('ping'), 3 }, { ping.args[2][1], ping.args[2][2] })
    answer(ping, 3)
    assert.are.equal(3, pinged:await())
    -- The peer settles it: the endpoint resolves it, and forgets it.
    raw:send(op('op:deliver-only', desc('desc:export', captp.descPos(listen.args[2], 'desc:import-object')),
      list(sym('fulfill'), 'done')))
    assert.are.equal('done', p:await())
    assert.are.equal(0, peers()[1].promises)
  end)

  it('lets go of what an answer of the peer and its settlement named', function()
    local obj = session()
    -- A vat sends the peer a promise the host decides; the peer answers
    -- with it: the endpoint names it (p-N) in the answer it resolves.
    local kit = ocap.makePromiseKit()
    local result = kernel:queueMessage(echoVat, 'call', { obj, 'echo', kit.promise })
    local echo = raw:expect('op:deliver')
    local pos = captp.descPos(echo.args[2][2], 'desc:import-promise')
    assert.is_not_nil(pos)
    answer(echo, list(desc('desc:export', pos)))
    kernel:run()
    assert.are.equal(1, peers()[1].promises)
    local objects = peers()[1].objects
    -- It settles to an object of ours: what the settlement names is not
    -- the peer's either (it never saw it).
    local thing = kernel:queueMessage(echoVat, 'makeThing', { 'x' }):await()
    kit.resolve(thing)
    assert.are.equal('x', E(result:await()[1]:await()).label():await())
    kernel:run()
    -- Settled, it is no longer the endpoint's, and nothing holds it.
    assert.are.equal(0, peers()[1].promises)
    assert.are.equal(objects, peers()[1].objects)
  end)

  it("tells the peer once the vats that held its object dropped it", function()
    local obj = session()
    local kref = kernel:krefOf(obj)
    local done = kernel:queueMessage(echoVat, 'call', { obj, 'ping', 1 })
    obj = nil -- luacheck: ignore 311 (the host lets go of it; the vat held it)
    answer(raw:expect('op:deliver'), 1)
    assert.are.equal(1, done:await())
    kernel:collectGarbage():await()
    assert.are.equal(1, raw:expectGcExport(5))
    -- The endpoint no longer has it, and the kernel object is gone.
    assert.are.equal(0, peers()[1].objects)
    local err = support.rejection(kernel:queueMessage(kref, 'ping', {}))
    assert.matches('OBJECT_DELETED', err.message)
  end)

  it('is terminated when the session ends: its promises reject, nothing of it stays', function()
    local obj = session()
    local kref = kernel:krefOf(obj)
    local ep = peers()[1].id
    local waiting = kernel:queueMessage(echoVat, 'call', { obj, 'wait' })
    raw:expect('op:deliver')
    assert.are.equal(1, peers()[1].promises)
    assert.is_true(#keys(ep .. '.c.') > 0)
    raw:close()
    local err = support.rejection(waiting)
    assert.are.equal('[KERNEL:CONNECTION_LOST] connection to peer rawpeer lost: closed by the peer', err.message)
    assert.are.same({}, peers())
    -- Its c-list and its record are gone from the database.
    assert.are.same({}, keys(ep .. '.'))
    assert.are.same({}, keys('remote.peer.'))
    -- Its objects are deleted; host code that kept one is told the session is lost.
    assert.matches('OBJECT_DELETED', support.rejection(kernel:queueMessage(kref, 'ping', {})).message)
    assert.matches('CONNECTION_LOST', support.rejection(E(obj).ping()).message)
    -- A new session is a new endpoint.
    raw = nil
    session()
    assert.are_not.equal(ep, peers()[1].id)
  end)

  it("rejects what a vat asked with PEER_RESTARTED when the peer starts a new session", function()
    local asked
    local keeper = ocap.makeDefaultExo('keeper', {
      -- The peer hands us its object 7, which a vat then calls.
      hold = function(_, obj) asked = kernel:queueMessage(echoVat, 'call', { obj, 'ping', 1 }) end,
    })
    local swiss = kernel:issueOcapURL(keeper):match('/s/([^?]+)')
    local locator = kernel:getStatus().remoteComms.listenAddresses[1]
    local old = client.connect(kernel, locator)
    finally(function() old:close() end)
    old:hello { designator = 'twin' }
    local boot = old:fetch(swiss, 0, 1)
    old:send(op('op:deliver-only', boot, list(sym('hold'), desc('desc:import-object', 7))))
    local ping = old:expect('op:deliver')
    assert.are.equal(7, captp.descPos(ping.args[1], 'desc:export'))
    local ep = peers()[1].id
    assert.are.equal(1, peers()[1].promises) -- the vat's question: the endpoint decides it
    raw = client.connect(kernel, locator)
    raw:hello { designator = 'twin' }
    assert.are.equal('the peer started a new session', old:expectAbort())
    assert.are.equal('[KERNEL:PEER_RESTARTED] connection to peer twin lost: aborted: the peer started a new session',
      support.rejection(asked).message)
    -- The new session is a new endpoint; nothing of the old one is left.
    local p = peers()
    assert.are.equal(1, #p)
    assert.are_not.equal(ep, p[1].id)
    assert.are.same({}, keys(ep .. '.'))
  end)

  it('rejects a message to an endpoint that no session serves, rather than drop it', function()
    local obj = session()
    -- No remote layer takes the endpoint's deliveries (a kernel opened
    -- without remote comms on a database that still names the endpoint).
    kernel.K:setPeerDispatch(nil)
    local err = support.rejection(kernel:queueMessage(echoVat, 'call', { obj, 'ping', 1 }))
    assert.matches('^%[KERNEL:CONNECTION_LOST%] peer endpoint r%d+ has no session: remote comms are not running',
      err.message)
    -- A layer whose table has no session for the endpoint refuses it too.
    local ep = peers()[1].id
    kernel.K:setPeerDispatch(function() return '[KERNEL:CONNECTION_LOST] peer endpoint ' .. ep .. ' has no session' end)
    err = support.rejection(kernel:queueMessage(echoVat, 'call', { obj, 'ping', 2 }))
    assert.are.equal('[KERNEL:CONNECTION_LOST] peer endpoint ' .. ep .. ' has no session', err.message)
  end)

  it('is terminated by kernel:reset(), which aborts the session', function()
    session()
    local ep = peers()[1].id
    kernel:reset()
    assert.are.equal('kernel reset', raw:expectAbort())
    assert.are.same({}, peers())
    assert.are.same({}, keys(ep .. '.'))
    assert.are.same({}, keys('remote.peer.'))
  end)

  it('is terminated when the kernel stops, and a restart finds nothing of it', function()
    local dir = os.tmpname()
    os.remove(dir)
    finally(function() os.execute('rm -rf ' .. support.q(dir)) end)
    kernel:stop()
    kernel = support.newKernel { database = dir, remote = { listen = '127.0.0.1:0' } }
    echoVat = kernel:launchSubcluster({
      bootstrap = 'echo', vats = { echo = { sourceSpec = SRC .. '/spec/vats/echo.lua' } },
    }):await().rootKref
    local obj = session()
    local ep = peers()[1].id
    kernel:queueMessage(echoVat, 'call', { obj, 'wait' })
    raw:expect('op:deliver')
    assert.are.equal(1, peers()[1].promises)
    -- (The raw peer lives on the kernel's loop: it goes first, unheard,
    -- since the kernel stops before it runs its loop again.)
    raw:close()
    raw = nil
    kernel:stop()
    kernel = support.newKernel { database = dir, remote = { listen = '127.0.0.1:0' } }
    assert.are.same({}, keys(ep .. '.'))
    assert.are.same({}, keys('remote.peer.'))
    assert.are.same({}, peers())
  end)

  -- A crash leaves the endpoint in the database: the copy of a flushed
  -- database taken while the kernel runs is what a kill -9 would leave.
  for _, withRemote in ipairs({ true, false }) do
    it(('is terminated when the kernel restarts after a crash %s remote'):format(withRemote and 'with' or 'without'),
      function()
        local dir = os.tmpname()
        os.remove(dir)
        local crashed = dir .. '.crashed'
        finally(function() os.execute('rm -rf ' .. support.q(dir) .. ' ' .. support.q(crashed)) end)
        kernel:stop()
        kernel = support.newKernel { database = dir, remote = { listen = '127.0.0.1:0' } }
        local kref = kernel:krefOf(session())
        local ep = peers()[1].id
        kernel.K:commit()
        kernel.K:flush()
        assert.is_true(os.execute(('cp -r %s %s'):format(support.q(dir), support.q(crashed))))
        raw:close()
        raw = nil
        kernel:stop()
        kernel = support.newKernel { database = crashed, remote = withRemote and { listen = '127.0.0.1:0' } or nil }
        assert.are.same({}, keys(ep .. '.'))
        assert.are.same({}, keys('remote.peer.'))
        -- Its objects are deleted: a message to one is not left to an
        -- endpoint nobody serves.
        local err = support.rejection(kernel:queueMessage(kref, 'ping', {}))
        assert.matches('OBJECT_DELETED', err.message)
      end)
  end
end)
