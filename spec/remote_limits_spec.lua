-- What a remote peer may make a kernel hold (`remote.limits`): each limit
-- crossed aborts that peer's session with its reason, and the kernel and
-- its other sessions carry on. The kernel runs in this process; raw CapTP
-- clients (spec/remote/client.lua) on its loop play the peers.
local ocap = require 'ocap'
local syrup = require 'ocap.syrup'
local captp = require 'ocap.captp'
local support = require 'support'
local client = require 'remote.client'

local E = ocap.E
local sym, op, desc, list = syrup.symbol, captp.op, captp.desc, captp.list

--- A kernel with the given limits, hosting a service peers fetch; the
--- warnings it logs are kept in `warnings`.
local function serve(limits, extra)
  local warnings = {}
  local remote = { listen = '127.0.0.1:0', limits = limits }
  for k, v in pairs(extra or {}) do remote[k] = v end
  local kernel = ocap.Kernel.make {
    database = false, remote = remote,
    logger = function(e)
      if e.level == 'warn' then warnings[#warnings + 1] = e.message end
    end,
  }
  local svc = ocap.makeDefaultExo('svc', {
    echo = function(_, x) return x end,
    take = function() return 'taken' end,
    make = function() return ocap.makeDefaultExo('thing', { name = function() return 'thing' end }) end,
    big = function(_, n) return ('x'):rep(n) end,
    never = function() return require('ocap.promise').makePromise() end,
  })
  local swiss = kernel:issueOcapURL(svc):match('/s/([^?]+)')
  return { kernel = kernel, swiss = swiss, warnings = warnings, tls = remote.netlayer == 'tcp-tls',
    locator = kernel:getStatus().remoteComms.listenAddresses[1] }
end

--- A raw client in session with s's kernel, its service fetched into
--- answer 0 (resolver at 1); later positions are the spec's.
local function session(s)
  local c = client.connect(s.kernel, s.locator, s.tls and client.tlsContext() or nil)
  c.peerHello = c:hello()
  assert.are.equal('op:start-session', captp.label(c.peerHello))
  c.svc = c:fetch(s.swiss, 0, 1)
  c.next = 100
  return c
end

--- Asserts that c's session still works: echo(n) comes back.
local function alive(c, n)
  c.next = c.next + 1
  c:send(op('op:deliver', c.svc, list(sym('echo'), n), false, desc('desc:import-object', c.next)))
  assert.are.same({ sym('fulfill'), n }, { table.unpack(c:expectTo(c.next), 1, 2) })
end

--- Runs s's kernel and loop until cond() holds (at most `rounds` turns).
local function drive(s, cond, rounds)
  for _ = 1, rounds or 100000 do
    if cond() then return true end
    s.kernel:run()
    s.kernel.K:runLoop(false)
  end
  return cond()
end

describe('remote limits', function()
  local s, clients

  before_each(function() clients = {} end)
  after_each(function()
    for _, c in ipairs(clients) do c:close() end
    if s then s.kernel:stop() end
    s = nil
  end)

  local function open()
    local c = session(s)
    clients[#clients + 1] = c
    return c
  end

  it('are checked when the kernel is made, naming the field and value', function()
    local function make(limits)
      return ocap.Kernel.make { database = false, logger = function() end,
        remote = { listen = '127.0.0.1:0', limits = limits } }
    end
    assert.has_error(function() make { maxSessions = 3 } end,
      'Kernel.make: option remote.limits has unknown key "maxSessions"')
    assert.has_error(function() make { maxConnections = 0 } end,
      'Kernel.make: option remote.limits.maxConnections must be a positive integer, got 0')
    assert.has_error(function() make { maxWriteQueueBytes = 'big' } end,
      'Kernel.make: option remote.limits.maxWriteQueueBytes must be a positive integer, got "big"')
    assert.has_error(function() make { maxImports = 1.5 } end,
      'Kernel.make: option remote.limits.maxImports must be a positive integer, got 1.5')
    assert.has_error(function() make(7) end, 'Kernel.make: option remote.limits must be a table, got number')
    assert.has_error(function()
      ocap.Kernel.make { database = false, remote = { maxAnswers = -1 } }
    end, 'Kernel.make: option remote.maxAnswers must be a positive integer, got -1')
  end)

  it('refuse connections past maxConnections, and take new ones once one closed', function()
    s = serve { maxConnections = 2 }
    local a, b = open(), open()
    local third = client.connect(s.kernel, s.locator)
    clients[#clients + 1] = third
    assert.are.equal('more than 2 connections', third:expectAbort())
    assert.is_true(third.closed)
    alive(a, 1)
    alive(b, 2)
    assert.are.equal(2, s.kernel:getStatus().remoteComms.sessions)
    a:close()
    assert.is_true(drive(s, function() return s.kernel:getStatus().remoteComms.sessions == 1 end))
    alive(open(), 3)
  end)

  it('abort a session past maxImports', function()
    s = serve { maxImports = 3 }
    local other, c = open(), open()
    c:send(op('op:deliver-only', c.svc, list(sym('take'), desc('desc:import-object', 10),
      desc('desc:import-object', 11), desc('desc:import-promise', 12), desc('desc:import-object', 13))))
    assert.are.equal('more than 3 imports', c:expectAbort())
    alive(other, 1)
  end)

  it('abort a session past maxExports', function()
    s = serve { maxExports = 3 }
    local other, c = open(), open()
    -- The service is export 1; each make() exports one more thing.
    for i = 1, 3 do
      c:send(op('op:deliver', c.svc, list(sym('make')), false, desc('desc:import-object', 10 + i)))
    end
    assert.are.equal('more than 3 exports', c:expectAbort())
    alive(other, 1)
  end)

  it('send an abort, and what was queued before it, only after the store committed', function()
    s = serve { maxExports = 3 }
    local c = open()
    -- The store cannot commit (a full disk, say): nothing may leave, not
    -- the answers queued before the abort, nor the abort.
    local remote = s.kernel.remote
    local K = remote.K
    remote.K = setmetatable({ commit = function() error('commit failed: disk full', 0) end }, {
      __index = function(_, k) return function(_, ...) return K[k](K, ...) end end,
    })
    c:sendBatch {
      op('op:deliver', c.svc, list(sym('make')), false, desc('desc:import-object', 11)),
      op('op:deliver', c.svc, list(sym('make')), false, desc('desc:import-object', 12)),
      op('op:deliver', c.svc, list(sym('make')), false, desc('desc:import-object', 13)),
    }
    local failed = 0
    for _ = 1, 50 do
      local ok, err = pcall(s.kernel.run, s.kernel)
      if not ok then
        assert.matches('disk full', tostring(err))
        failed = failed + 1
      end
      K:runLoop(false)
      c:_pump()
    end
    assert.is_true(failed > 0)
    assert.are.equal('', c.buf)
    assert.is_false(c.closed)
    -- Once the store commits, the answers go, then the abort.
    remote.K = K
    assert.are.same({ sym('fulfill') }, { c:expectTo(11)[1] })
    assert.are.equal('more than 3 exports', c:expectAbort())
  end)

  it('abort a session that selects past maxAnswers (op:get)', function()
    s = serve({}, { maxAnswers = 3 })
    local other, c = open(), open()
    -- Answer 0 (the service) is in use; three selections make four.
    for i = 1, 3 do c:send(op('op:get', c.svc, sym('name'), i)) end
    assert.are.equal('more than 3 answers outstanding', c:expectAbort())
    alive(other, 1)
  end)

  it('abort a session that pipelines past maxPipelined on a promise that does not settle', function()
    s = serve { maxPipelined = 3 }
    local other, c = open(), open()
    c:send(op('op:deliver', c.svc, list(sym('never')), 2, false))
    for _ = 1, 4 do
      c:send(op('op:deliver-only', desc('desc:answer', 2), list(sym('echo'), 'waiting')))
    end
    assert.are.equal('more than 3 messages waiting on promises', c:expectAbort())
    alive(other, 1)
  end)

  it('abort a session past maxQuestions, rejecting what it was asked', function()
    s = serve { maxQuestions = 3 }
    local raw = client.listen(s.kernel)
    clients[#clients + 1] = raw
    local pObj = s.kernel:redeemOcapURL((raw.locator:gsub('%?', '/s/thing?')))
    raw:accept()
    raw:receive()
    raw:sendHello()
    local fetch = raw:expect('op:deliver')
    raw:send(op('op:deliver-only', desc('desc:export', captp.descPos(fetch.args[4], 'desc:import-object')),
      list(sym('fulfill'), desc('desc:import-object', 5))))
    local obj = pObj:await()
    local asked = { E(obj).a(), E(obj).b(), E(obj).c() }
    local fourth = E(obj).d()
    local lost = '[KERNEL:CONNECTION_LOST] connection to peer rawpeer lost: aborted: more than 3 questions outstanding'
    assert.are.equal(lost, support.rejection(fourth).message)
    for _, p in ipairs(asked) do assert.are.equal(lost, support.rejection(p).message) end
    assert.are.equal('more than 3 questions outstanding', raw:expectAbort())
    alive(open(), 1)
  end)

  describe('gifts', function()
    local function deposit(c, id)
      c:send(op('op:deliver-only', desc('desc:export', 0),
        list(sym('deposit-gift'), syrup.bytes(id), desc('desc:import-object', 50 + #id))))
    end

    local crypto = require('ocap.core').crypto
    -- The id of a client's session with the kernel, as both sides make it.
    local function sessionId(c)
      local a, b = captp.sideId(c.pk), captp.sideId(captp.parsePubkey(c.peerHello.args[2]))
      if b < a then a, b = b, a end
      return crypto.sha256(crypto.sha256('prot0' .. a .. b))
    end
    local function signed(c, record)
      return op('desc:sig-envelope', record, captp.sigValue(crypto.sign(c.sk, syrup.encode(record))))
    end

    it('keep a bounded record of the handoff counts a receiver used', function()
      s = serve {}
      local gifter, receiver = open(), open()
      local give = signed(gifter, op('desc:handoff-give', captp.pubkeyValue(receiver.pk), gifter.peerHello.args[3],
        syrup.bytes(sessionId(gifter)), syrup.bytes(captp.sideId(gifter.pk)), syrup.bytes('gift')))
      local function withdraw(count, answer)
        local receive = signed(receiver, op('desc:handoff-receive', syrup.bytes(sessionId(receiver)),
          syrup.bytes(captp.sideId(receiver.pk)), count, give))
        return op('op:deliver', desc('desc:export', 0), list(sym('withdraw-gift'), receive), false,
          desc('desc:import-object', answer))
      end
      local function refusal(count)
        receiver.next = receiver.next + 1
        receiver:send(withdraw(count, receiver.next))
        local answer = receiver:expectTo(receiver.next)
        assert.are.equal(sym('break'), answer[1])
        return answer[2].message
      end
      -- The receiver uses 1100 even counts, skipping the odd ones: the
      -- first withdrawal waits for the gift, the others are refused (one
      -- is waiting), but each spends its count.
      local batch = {}
      for n = 1, 1100 do batch[n] = withdraw(2 * n, 2000 + n) end
      receiver:sendBatch(batch)
      for n = 2, 1100 do receiver:expectTo(2000 + n) end
      local kept = 0
      for _, sc in pairs(s.kernel.remote.conns) do
        for _ in pairs(sc.handoffCounts or {}) do kept = kept + 1 end
      end
      assert.is_true(kept <= 1024, kept .. ' handoff counts kept')
      -- No count is taken twice, and the skipped 0 is refused now.
      assert.are.equal('withdraw-gift: handoff count 2200 was used before', refusal(2200))
      assert.matches('^withdraw%-gift: handoff count 2 is no longer accepted %(only counts above %d+ are%)$',
        refusal(2))
      assert.matches('^withdraw%-gift: handoff count 1 is no longer accepted', refusal(1))
      -- A fresh count gets past the check (to the waiting withdrawal).
      assert.are.equal('withdraw-gift: a withdrawal of this gift is waiting', refusal(2199))
      alive(receiver, 1)
    end)

    it('abort a session that deposits past maxGifts', function()
      s = serve { maxGifts = 2 }
      local other, c = open(), open()
      deposit(c, 'g1')
      deposit(c, 'g22')
      alive(c, 1) -- the deposits were handled
      assert.are.equal(2, s.kernel:getStatus().remoteComms.gifts)
      deposit(c, 'g333')
      assert.are.equal('more than 2 gifts outstanding', c:expectAbort())
      alive(other, 2)
      assert.are.equal(0, s.kernel:getStatus().remoteComms.gifts)
    end)

    it('are collected when the session that deposited them ends', function()
      s = serve {}
      local other, c = open(), open()
      deposit(c, 'gift')
      alive(c, 1)
      assert.are.equal(1, s.kernel:getStatus().remoteComms.gifts)
      c:close()
      assert.is_true(drive(s, function() return s.kernel:getStatus().remoteComms.sessions == 1 end))
      assert.are.equal(0, s.kernel:getStatus().remoteComms.gifts)
      alive(other, 2)
    end)

    it("break a withdrawal waiting for a deposit when the gifter's session ends", function()
      s = serve {}
      local gifter, receiver = open(), open()
      local give = signed(gifter, op('desc:handoff-give', captp.pubkeyValue(receiver.pk), gifter.peerHello.args[3],
        syrup.bytes(sessionId(gifter)), syrup.bytes(captp.sideId(gifter.pk)), syrup.bytes('gift')))
      local receive = signed(receiver, op('desc:handoff-receive', syrup.bytes(sessionId(receiver)),
        syrup.bytes(captp.sideId(receiver.pk)), 0, give))
      -- The withdrawal comes before any deposit: it waits.
      receiver:send(op('op:deliver', desc('desc:export', 0), list(sym('withdraw-gift'), receive), false,
        desc('desc:import-object', 60)))
      alive(receiver, 1)
      gifter:close()
      local answer = receiver:expectTo(60)
      assert.are.equal(sym('break'), answer[1])
      assert.are.equal("withdraw-gift: the gifter's session ended", answer[2].message)
      alive(receiver, 2)
    end)
  end)

  local function notReading(netlayer)
    local limit = 128 * 1024
    s = serve({ maxWriteQueueBytes = limit }, { netlayer = netlayer })
    local other, c = open(), open()
    alive(c, 1)
    c.conn:pause(true)
    -- Each request is small and its answer 16 KiB: the peer reads none of
    -- them, so they wait in the sockets, then in the kernel.
    local sent = 0
    local aborted = drive(s, function()
      if s.kernel:getStatus().remoteComms.aborted > 0 then return true end
      sent = sent + 1
      c:send(op('op:deliver', c.svc, list(sym('big'), 16384), false, desc('desc:import-object', 1000 + sent)))
      return false
    end, 4000)
    assert.is_true(aborted, 'no abort after ' .. sent .. ' answers of 16 KiB')
    assert.are.equal(1, #s.warnings)
    assert.matches('^aborting session with %x+: more than ' .. limit .. ' bytes waiting to be written to the peer$',
      s.warnings[1])
    assert.are.equal(1, s.kernel:getStatus().remoteComms.sessions)
    alive(other, 2)
    -- What the peer still reads ends with the connection closed.
    c.conn:pause(false)
    while c:receive() do end
    assert.is_true(c.closed)
  end

  it('abort the session of a peer that does not read, past maxWriteQueueBytes', function()
    notReading('tcp-testing-only')
  end)

  it('count the TLS records waiting for a peer that does not read (tcp-tls)', function()
    notReading('tcp-tls')
  end)

  it('refuse to dial past maxOutboundConnections, and dial again once one closed', function()
    s = serve { maxOutboundConnections = 1 }
    -- Two raw peers to dial, under two designators.
    local one, two = client.listen(s.kernel), client.listen(s.kernel)
    clients[#clients + 1] = one
    clients[#clients + 1] = two
    two.designator = 'rawpeer2'
    two.locator = two.locator:gsub('rawpeer', 'rawpeer2')
    local first = s.kernel:redeemOcapURL((one.locator:gsub('%?', '/s/thing?')))
    one:accept()
    local refused = support.rejection(s.kernel:redeemOcapURL((two.locator:gsub('%?', '/s/thing?'))))
    assert.are.equal('[KERNEL:ENDPOINT_UNREACHABLE] cannot reach rawpeer2: more than 1 outbound connections',
      refused.message)
    -- Connections peers open to us are counted apart.
    alive(open(), 1)
    -- Once the dialled connection closed, another dial may go.
    one:close()
    assert.matches('CONNECTION_LOST', support.rejection(first).message)
    s.kernel:redeemOcapURL((two.locator:gsub('%?', '/s/thing?')))
    two:accept()
    assert.are.equal('op:start-session', captp.label(two:receive()))
  end)
end)
