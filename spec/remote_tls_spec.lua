-- The `tcp-tls` netlayer: CapTP over TLS 1.3, each kernel's designator
-- the hash of its key. Two kernels in two processes on loopback (this one
-- and spec/remote/peer.lua), and raw clients (spec/remote/client.lua) for
-- what a well-behaved kernel never does.
local ocap = require 'ocap'
local syrup = require 'ocap.syrup'
local captp = require 'ocap.captp'
local support = require 'support'
local client = require 'remote.client'

local E = ocap.E

local killPeer, newKernel = support.killPeer, support.newKernel

--- Starts spec/remote/peer.lua on tcp-tls (or on the netlayer given).
local function spawnPeer(env, netlayer) return support.spawnPeer(env, netlayer or 'tcp-tls') end

local TLS_LOCATOR = '^ocapn://' .. ('%x'):rep(64) .. '%.tcp%-tls%?host=127%.0%.0%.1&port=%d+$'

describe('the tcp-tls netlayer', function()
  local peer, kernel, echo

  setup(function()
    peer = spawnPeer()
    kernel = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    echo = kernel:redeemOcapURL(peer.url):await()
  end)

  teardown(function()
    if kernel then kernel:stop() end
    killPeer(peer)
  end)

  --- Asserts that our session with the other process still works.
  local function alive(n)
    assert.are.equal(n, E(echo).ping(n):await())
  end

  it('makes a round trip to a vat of the other kernel', function()
    alive(42)
    local thing = E(echo).makeThing('red car')
    assert.are.equal('red car', E(thing).label():await())
    -- A message bigger than a TLS record (16 KiB) crosses in several.
    local big = ('x'):rep(60000)
    assert.are.equal(big, E(echo).ping(big):await())
    local status = kernel:getStatus().remoteComms
    assert.are.equal(1, status.sessions)
    assert.matches(TLS_LOCATOR, status.listenAddresses[1])
    assert.matches(TLS_LOCATOR, peer.locator)
    assert.are.equal(status.peerId, status.listenAddresses[1]:match('^ocapn://(%x+)%.'))
  end)

  it('hands a reference to a third kernel, which dials its exporter over TLS', function()
    local third = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    finally(function() third:stop() end)
    local got
    local sink = ocap.makeDefaultExo('sink', {
      use = function(_, obj)
        got = obj
        return E(obj).ping(11)
      end,
    })
    local remoteSink = kernel:redeemOcapURL(third:issueOcapURL(sink)):await()
    assert.are.equal(11, E(remoteSink).use(echo):await())
    -- The third kernel withdrew the gift from the other process itself.
    assert.matches('^%[Presence ocapn import %d+ of ' .. peer.locator:match('^ocapn://(%x+)%.'), tostring(got:await()))
    assert.are.equal(2, third:getStatus().remoteComms.sessions)
  end)

  it('refuses a URL whose designator names another key', function()
    -- The same host and port, another key's designator: the peer there
    -- cannot prove it holds that key.
    local other = client.tlsContext():designator()
    local forged = peer.url:gsub('^ocapn://%x+', 'ocapn://' .. other)
    local err = support.rejection(kernel:redeemOcapURL(forged))
    assert.are.equal(('[KERNEL:ENDPOINT_UNREACHABLE] cannot reach %s: '):format(other)
      .. "the peer's key does not match its designator", err.message)
    alive(1)
  end)

  it('closes a connection that does not speak TLS, and nothing else', function()
    -- (busted keeps one finally per test: it closes both.)
    local plain, garbage
    finally(function()
      plain:close()
      if garbage then garbage:close() end
    end)
    plain = client.connect(newKernel(), peer.locator)
    plain:sendHello() -- CapTP in the clear
    plain:expectClosed()
    garbage = client.connect(newKernel(), peer.locator)
    garbage:send(('\0\1garbage'):rep(100))
    garbage:expectClosed()
    alive(2)
  end)

  it('bounds a peer that does the TLS handshake and says nothing', function()
    local c = client.connect(newKernel(), peer.locator, client.tlsContext())
    finally(function() c:close() end)
    assert.is_false(c.closed) -- the handshake went through
    -- The op:abort crosses the TLS channel: it is the peer's CapTP speaking.
    assert.are.equal('no op:start-session within 300 ms', c:expectAbort())
    assert.is_true(c.closed)
    alive(3)
  end)

  it("aborts a session whose op:start-session names another key's designator", function()
    local c, ok
    finally(function()
      c:close()
      if ok then ok:close() end
    end)
    c = client.connect(newKernel(), peer.locator, client.tlsContext())
    c:sendHello { designator = client.tlsContext():designator() }
    assert.are.equal('op:start-session: the location does not match the TLS key', c:expectAbort())
    -- With its own designator, the same client is welcome.
    ok = client.connect(newKernel(), peer.locator, client.tlsContext())
    assert.are.equal('op:start-session', captp.label(ok:hello()))
    local boot = ok:fetch(peer.url:match('/s/([^?]+)'), 0, 1)
    ok:send(captp.op('op:deliver', boot, captp.list(syrup.symbol('ping'), 5), false,
      captp.desc('desc:import-object', 2)))
    assert.are.equal(5, ok:expectTo(2)[2])
    alive(4)
  end)

  it('keeps the key, and so the designator and sturdyrefs, across a restart', function()
    local r = support.restartPeer(kernel, spawnPeer, finally)
    local first, second = r.first, r.second
    assert.are.equal(1, r.pinged)
    assert.matches('CONNECTION_LOST', r.lost.message)
    assert.are_not.equal(first.locator, second.locator) -- another port
    local designator = first.url:match('^ocapn://(%x+)%.tcp%-tls/s/keepme%?')
    assert.are.equal(64, #designator)
    assert.are.equal(designator, second.url:match('^ocapn://(%x+)%.tcp%-tls/s/keepme%?'))
    -- The old URL with the new port reaches the same object, over TLS.
    local moved = first.url:gsub('port=%d+', second.locator:match('port=%d+'))
    assert.are.equal(2, E(kernel:redeemOcapURL(moved):await()).ping(2):await())
  end)

  it('works alongside tcp-testing-only kernels', function()
    local plainPeer, plain
    finally(function()
      if plain then plain:stop() end
      killPeer(plainPeer)
    end)
    plainPeer = spawnPeer(nil, 'tcp-testing-only')
    plain = newKernel { remote = { listen = '127.0.0.1:0' } }
    local plainEcho = plain:redeemOcapURL(plainPeer.url):await()
    assert.matches('^ocapn://%x+%.tcp%-testing%-only%?', plainPeer.locator)
    -- Calls on both netlayers, interleaved, in one Lua state.
    local a, b = E(plainEcho).ping('plain'), E(echo).ping('tls')
    assert.are.same({ 'plain', 'tls' }, { a:await(), b:await() })
    -- A kernel reaches only URLs of its own netlayer.
    local err = support.rejection(kernel:redeemOcapURL(plainPeer.url))
    assert.matches('^%[KERNEL:ENDPOINT_UNREACHABLE%] no netlayer "tcp%-testing%-only" here$', err.message)
  end)
end)

describe('a tcp-tls kernel given bytes that are not TLS', function()
  it("logs OpenSSL's reason and counts the connection as aborted", function()
    local warnings = {}
    local kernel = ocap.Kernel.make { database = false, remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' },
      logger = function(e)
        if e.level == 'warn' then warnings[#warnings + 1] = e.message end
      end }
    local c
    finally(function()
      if c then c:close() end
      kernel:stop()
    end)
    c = client.connect(kernel, kernel:getStatus().remoteComms.listenAddresses[1])
    c:sendHello()
    c:expectClosed()
    assert.are.same({ 'closing the connection with unknown peer: TLS: wrong version number' }, warnings)
    assert.are.equal(1, kernel:getStatus().remoteComms.aborted)
    assert.are.equal(0, kernel:getStatus().remoteComms.sessions)
  end)
end)

describe('a tcp-tls session through a network that tampers', function()
  it('ends with CONNECTION_LOST when a record was altered', function()
    local net = require('ocap.core').net
    local peer = spawnPeer()
    local kernel = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    local proxy
    finally(function()
      if proxy then proxy:close() end
      kernel:stop()
      killPeer(peer)
    end)
    -- A TCP relay on this kernel's loop between it and the peer, which
    -- flips one byte of what the peer sends once `tamper` is set.
    local tamper, upstream, opened, pending = false, nil, false, {}
    local host, port = peer.locator:match('host=([^&]+)&port=(%d+)')
    proxy = assert(net.listen(kernel.K, '127.0.0.1', 0, function(down, ev, data)
      if ev == 'accept' then
        upstream = assert(net.connect(kernel.K, host, tonumber(port), function(_, uev, udata)
          if uev == 'open' then
            opened = true
            for _, d in ipairs(pending) do upstream:write(d) end
            pending = {}
          elseif uev == 'data' then
            if tamper then
              tamper = false
              local i = #udata // 2
              udata = udata:sub(1, i - 1) .. string.char(udata:byte(i) ~ 1) .. udata:sub(i + 1)
            end
            down:write(udata)
          elseif uev == 'eof' then
            down:close()
          end
        end))
      elseif ev == 'data' then
        if opened then upstream:write(data) else pending[#pending + 1] = data end
      elseif ev == 'eof' and upstream then
        upstream:close()
      end
    end))
    local url = peer.url:gsub('port=%d+', 'port=' .. proxy:port())
    local echo = kernel:redeemOcapURL(url):await()
    assert.are.equal(1, E(echo).ping(1):await())
    tamper = true
    local err = support.rejection(E(echo).ping(2))
    assert.matches('^%[KERNEL:CONNECTION_LOST%] connection to peer %x+ lost: TLS: decryption failed or bad record mac$',
      err.message)
    assert.are.equal(0, kernel:getStatus().remoteComms.sessions)
    assert.are.equal(1, kernel:getStatus().remoteComms.aborted)
  end)
end)

describe('a tcp-tls kernel with a database', function()
  it('keeps its TLS key in it as remote.tls.key', function()
    local dir = os.tmpname()
    os.remove(dir)
    local again
    finally(function()
      if again then again:stop() end
      os.execute(('rm -rf %q'):format(dir))
    end)
    local function open()
      return ocap.Kernel.make { database = dir, logger = function() end,
        remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    end
    local k = open()
    local id = k:getStatus().remoteComms.peerId
    local key = k.K:kvGet('remote.tls.key')
    k:stop()
    assert.matches('^%x+$', key)
    again = open()
    assert.are.equal(id, again:getStatus().remoteComms.peerId)
  end)
end)
