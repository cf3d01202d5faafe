-- A kernel with several netlayers (`remote.netlayers`): it listens on
-- `tcp-tls` and `tcp-testing-only` at once, issues URLs on either, and
-- dials each URL with the netlayer it names. The kernel with both is in
-- another process (spec/remote/peer.lua), or in this one, next to
-- kernels of one netlayer each.
local ocap = require 'ocap'
local captp = require 'ocap.captp'
local support = require 'support'
local client = require 'remote.client'

local E = ocap.E

local killPeer, newKernel = support.killPeer, support.newKernel

local BOTH = 'tcp-tls,tcp-testing-only'
local TLS_LOCATOR = '^ocapn://' .. ('%x'):rep(64) .. '%.tcp%-tls%?host=127%.0%.0%.1&port=%d+$'
local PLAIN_LOCATOR = '^ocapn://' .. ('%x'):rep(32) .. '%.tcp%-testing%-only%?host=127%.0%.0%.1&port=%d+$'

--- Starts spec/remote/peer.lua with both netlayers, tcp-tls first.
local function spawnDual(env) return support.spawnPeer(env, BOTH) end

--- The sturdyref URL of swiss at a locator.
local function urlAt(locator, swiss) return (locator:gsub('%?', '/s/' .. swiss .. '?', 1)) end

--- The swiss number of a sturdyref URL.
local function swissOf(url) return url:match('/s/([^?]+)') end

--- The designator of a URL.
local function designatorOf(url) return url:match('^ocapn://([^/?]+)%.[^./?]+[/?]') end

--- The TCP ports this process listens on, as a set, or nil where /proc
--- does not tell (a socket is this process's when one of its descriptors
--- names the socket's inode).
local function listening()
  local stat = io.open('/proc/self/stat')
  local tcp = io.open('/proc/net/tcp')
  if not stat or not tcp then
    if stat then stat:close() end
    if tcp then tcp:close() end
    return nil
  end
  local pid = stat:read('l'):match('^%d+')
  stat:close()
  local mine = {}
  local ls = assert(io.popen(('ls -l /proc/%s/fd 2>/dev/null'):format(pid)))
  for line in ls:lines() do
    local inode = line:match('socket:%[(%d+)%]')
    if inode then mine[inode] = true end
  end
  ls:close()
  local ports = {}
  for line in tcp:lines() do
    -- sl local_address rem_address st ... inode; st 0A is LISTEN.
    local port, st, inode = line:match('^%s*%d+:%s+%x+:(%x+)%s+%x+:%x+%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%d+%s+%d+%s+(%d+)')
    if port and st == '0A' and mine[inode] then ports[tonumber(port, 16)] = true end
  end
  tcp:close()
  return ports
end

--- A kernel of this process with both netlayers, on loopback.
local function dualKernel()
  return newKernel { remote = { netlayers = {
    { type = 'tcp-tls', listen = '127.0.0.1:0' },
    { type = 'tcp-testing-only', listen = '127.0.0.1:0' },
  } } }
end

describe('a kernel with two netlayers', function()
  local peer, plainUrl

  setup(function()
    peer = spawnDual()
    plainUrl = urlAt(peer.locators[2], swissOf(peer.url))
  end)

  teardown(function() killPeer(peer) end)

  it('serves a peer over TLS and another over plain TCP at the same time', function()
    assert.matches(TLS_LOCATOR, peer.locators[1])
    assert.matches(PLAIN_LOCATOR, peer.locators[2])
    local tlsKernel = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    local plainKernel = newKernel { remote = { listen = '127.0.0.1:0' } }
    finally(function()
      tlsKernel:stop()
      plainKernel:stop()
    end)
    local tlsEcho = tlsKernel:redeemOcapURL(peer.url):await()
    local plainEcho = plainKernel:redeemOcapURL(plainUrl):await()
    -- Calls on both netlayers, interleaved, each with a call back to an
    -- object of the caller's over its own session.
    local function sink(name)
      return ocap.makeDefaultExo(name, { ping = function(_, v) return name .. ' ' .. v end })
    end
    local a = E(tlsEcho).call(sink('tls'), 'ping', 1)
    local b = E(plainEcho).call(sink('plain'), 'ping', 2)
    local c = E(tlsEcho).ping('over TLS')
    assert.are.same({ 'tls 1', 'plain 2', 'over TLS' }, { a:await(), b:await(), c:await() })
    assert.are.equal(1, tlsKernel:getStatus().remoteComms.sessions)
    assert.are.equal(1, plainKernel:getStatus().remoteComms.sessions)
  end)

  it('dials each URL with the netlayer it names, in a session of its own', function()
    local kernel = dualKernel()
    local tlsOnly = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    finally(function()
      kernel:stop()
      tlsOnly:stop()
    end)
    local overTls = kernel:redeemOcapURL(peer.url):await()
    local overPlain = kernel:redeemOcapURL(plainUrl):await()
    assert.are.same({ 1, 2 }, { E(overTls).ping(1):await(), E(overPlain).ping(2):await() })
    -- One session per netlayer with the same peer, each under its own
    -- designator.
    assert.are.equal(2, kernel:getStatus().remoteComms.sessions)
    assert.matches('^%[Presence ocapn import %d+ of ' .. designatorOf(peer.url) .. '%]$', tostring(overTls))
    assert.matches('^%[Presence ocapn import %d+ of ' .. designatorOf(plainUrl) .. '%]$', tostring(overPlain))
    -- A kernel without the netlayer a URL names cannot dial it.
    local err = support.rejection(tlsOnly:redeemOcapURL(plainUrl))
    assert.are.equal('[KERNEL:ENDPOINT_UNREACHABLE] no netlayer "tcp-testing-only" here', err.message)
  end)

  it('keeps the sturdyrefs of both netlayers across a restart', function()
    local kernel = dualKernel()
    finally(function() kernel:stop() end)
    local r = support.restartPeer(kernel, spawnDual, finally)
    local first, second = r.first, r.second
    assert.are.equal(1, r.pinged)
    assert.matches('CONNECTION_LOST', r.lost.message)
    for i = 1, 2 do
      -- The new ports are whatever the system gives (it may give an old
      -- one again, about once in 7,000 runs: not asserted otherwise).
      assert.are.equal(designatorOf(first.locators[i]), designatorOf(second.locators[i]))
      -- The URL issued before the restart, with the port of the restarted
      -- peer, reaches the same object on either netlayer.
      local old = urlAt(first.locators[i], 'keepme')
      local moved = old:gsub('port=%d+', second.locators[i]:match('port=%d+'))
      assert.are.equal(10 + i, E(kernel:redeemOcapURL(moved):await()).ping(10 + i):await())
    end
    assert.are.equal(2, kernel:getStatus().remoteComms.sessions)
  end)
end)

describe('a kernel of this process with two netlayers', function()
  it('keeps its identity on both netlayers across kernel:reset()', function()
    local dir, kernel = os.tmpname(), nil
    os.remove(dir)
    finally(function()
      kernel:stop()
      os.execute('rm -rf ' .. support.q(dir))
    end)
    local remote = { netlayers = {
      { type = 'tcp-tls', listen = '127.0.0.1:0' },
      { type = 'tcp-testing-only', listen = '127.0.0.1:0' },
    } }
    local function designators(k)
      local out = {}
      for i, layer in ipairs(k:getStatus().remoteComms.netlayers) do out[i] = layer.designator end
      return out
    end
    kernel = newKernel { database = dir, remote = remote }
    local before = designators(kernel)
    -- The running kernel keeps answering for its designators: a restart
    -- after the reset must too, or the URLs it gives out from now on
    -- would name a kernel that is gone.
    kernel:reset()
    kernel:stop()
    kernel = newKernel { database = dir, remote = remote }
    assert.are.same(before, designators(kernel))
  end)

  it('issues URLs on either netlayer and reports both', function()
    local kernel = dualKernel()
    local obj = ocap.makeDefaultExo('obj', { ping = function(_, v) return v end })
    local status = kernel:getStatus().remoteComms
    local tlsLoc, plainLoc = status.listenAddresses[1], status.listenAddresses[2]
    assert.matches(TLS_LOCATOR, tlsLoc)
    assert.matches(PLAIN_LOCATOR, plainLoc)
    assert.are.equal(designatorOf(tlsLoc), status.peerId)
    assert.are.same({
      { type = 'tcp-tls', designator = designatorOf(tlsLoc), location = tlsLoc },
      { type = 'tcp-testing-only', designator = designatorOf(plainLoc), location = plainLoc },
    }, status.netlayers)
    -- The first netlayer by default; either when named; one swiss number.
    assert.are.equal(urlAt(tlsLoc, 'sw1'), kernel:issueOcapURL(obj, 'sw1'))
    assert.are.equal(urlAt(tlsLoc, 'sw1'), kernel:issueOcapURL(obj, 'sw1', 'tcp-tls'))
    assert.are.equal(urlAt(plainLoc, 'sw1'), kernel:issueOcapURL(obj, 'sw1', 'tcp-testing-only'))
    local fresh = kernel:issueOcapURL(obj, nil, 'tcp-testing-only')
    assert.are.equal(urlAt(plainLoc, swissOf(fresh)), fresh)
    assert.has_error(function() kernel:issueOcapURL(obj, 'sw2', 'carrier-pigeon') end,
      'issueOcapURL: no netlayer "carrier-pigeon" here')
    -- Kernels of one netlayer each redeem the URL of theirs.
    local tlsOnly = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    local plainOnly = newKernel { remote = { listen = '127.0.0.1:0' } }
    -- (busted keeps one finally per test: it stops all three.)
    finally(function()
      kernel:stop()
      tlsOnly:stop()
      plainOnly:stop()
    end)
    local a = E(tlsOnly:redeemOcapURL(urlAt(tlsLoc, 'sw1'))).ping('a')
    local b = E(plainOnly:redeemOcapURL(urlAt(plainLoc, 'sw1'))).ping('b')
    assert.are.same({ 'a', 'b' }, { a:await(), b:await() })
    assert.are.equal(2, kernel:getStatus().remoteComms.sessions)
  end)

  it("gives vats URLs on the issuer service's first netlayer, or on the one named", function()
    local kernel = dualKernel()
    finally(function() kernel:stop() end)
    local SRC = support.SRC
    local echoRoot = kernel:launchSubcluster({
      bootstrap = 'echo', vats = { echo = { sourceSpec = SRC .. '/spec/vats/echo.lua' } },
    }):await().rootKref
    local user = kernel:launchSubcluster({
      bootstrap = 'user', services = { 'ocapURLIssuerService' },
      vats = { user = { sourceSpec = SRC .. '/spec/vats/service_user.lua' } },
    }):await().rootKref
    local echo = kernel:getPresence(echoRoot)
    local function issue(...)
      return kernel:queueMessage(user, 'call', { 'ocapURLIssuerService', 'issue', echo, ... }):await()
    end
    local status = kernel:getStatus().remoteComms
    local tlsUrl, plainUrl = issue(), issue('tcp-testing-only')
    assert.are.equal(urlAt(status.listenAddresses[1], swissOf(tlsUrl)), tlsUrl)
    assert.are.equal(urlAt(status.listenAddresses[2], swissOf(plainUrl)), plainUrl)
    local err = kernel:queueMessage(user, 'try', { 'ocapURLIssuerService', 'issue', echo, 'carrier-pigeon' }):await()
    assert.is_false(err.ok)
    assert.matches('issueOcapURL: no netlayer "carrier-pigeon" here', err.value.message, 1, true)
  end)

  it('hands a reference across netlayers: the receiver dials the netlayer of the exporter', function()
    -- The exporter speaks TLS only, the receivers plain TCP (one also
    -- TLS): the gifter, with both, deposits over TLS and gives over TCP.
    local exporter = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    local gifter = dualKernel()
    local both = newKernel { remote = { netlayers = {
      { type = 'tcp-testing-only', listen = '127.0.0.1:0' }, { type = 'tcp-tls', listen = '127.0.0.1:0' },
    } } }
    local plainOnly = newKernel { remote = { listen = '127.0.0.1:0' } }
    finally(function()
      for _, k in ipairs { exporter, gifter, both, plainOnly } do k:stop() end
    end)
    local thing = ocap.makeDefaultExo('thing', { ping = function(_, v) return 'thing ' .. v end })
    local got = {}
    local function sink(name)
      return ocap.makeDefaultExo('sink', {
        use = function(_, obj)
          got[name] = obj
          return E(obj).ping(name)
        end,
      })
    end
    local remoteThing = gifter:redeemOcapURL(exporter:issueOcapURL(thing)):await()
    local toBoth = gifter:redeemOcapURL(both:issueOcapURL(sink('both'))):await()
    local toPlain = gifter:redeemOcapURL(plainOnly:issueOcapURL(sink('plain'))):await()
    assert.are.equal('thing both', E(toBoth).use(remoteThing):await())
    -- The receiver withdrew the gift from the exporter itself, over TLS.
    local exporterId = exporter:getStatus().remoteComms.peerId
    assert.matches('^%[Presence ocapn import %d+ of ' .. exporterId .. '%]$', tostring(got.both:await()))
    -- A receiver without TLS cannot reach the exporter.
    local err = support.rejection(E(toPlain).use(remoteThing))
    assert.are.equal('[KERNEL:ENDPOINT_UNREACHABLE] no netlayer "tcp-tls" here', err.message)
  end)

  it('keeps a peer of one netlayer apart from a peer of another with the same designator', function()
    local kernel = dualKernel()
    local tlsPeer = newKernel { remote = { netlayer = 'tcp-tls', listen = '127.0.0.1:0' } }
    local twin, liar
    finally(function()
      if twin then twin:close() end
      if liar then liar:close() end
      kernel:stop()
      tlsPeer:stop()
    end)
    local obj = ocap.makeDefaultExo('obj', { ping = function(_, v) return v end })
    local remoteObj = kernel:redeemOcapURL(tlsPeer:issueOcapURL(obj)):await()
    assert.are.equal(1, E(remoteObj).ping(1):await())
    -- A plain TCP client that says it is the TLS peer's designator opens
    -- a session of its own: the TLS session carries on.
    local plainLoc = kernel:getStatus().remoteComms.listenAddresses[2]
    twin = client.connect(kernel, plainLoc)
    local hello = twin:hello { designator = tlsPeer:getStatus().remoteComms.peerId }
    assert.are.equal('op:start-session', captp.label(hello))
    assert.are.equal(2, E(remoteObj).ping(2):await())
    assert.are.equal(2, kernel:getStatus().remoteComms.sessions)
    -- A plain TCP client whose location names the other netlayer is aborted.
    liar = client.connect(kernel, plainLoc)
    liar:sendHello { transport = 'tcp-tls' }
    assert.are.equal('op:start-session: the location names netlayer tcp-tls, the session is on tcp-testing-only',
      liar:expectAbort())
    assert.are.equal(3, E(remoteObj).ping(3):await())
  end)
end)

describe('remote.netlayers options', function()
  local function refused(remote, message)
    assert.has_error(function() newKernel { remote = remote } end, message)
  end

  it('are checked when the kernel is made', function()
    local LIST = 'Kernel.make: option remote.netlayers must be a non-empty list of { type = ..., listen = ... }'
    refused({ netlayers = 'tcp-tls' }, 'Kernel.make: option remote.netlayers must be a table, got string')
    refused({ netlayers = {} }, LIST .. ', got an empty table')
    refused({ netlayers = { type = 'tcp-tls' } },
      LIST .. ', but it has the key "type" (put each netlayer in the list: netlayers = { { type = ... } })')
    refused({ netlayers = { 'tcp-tls' } }, 'Kernel.make: option remote.netlayers[1] must be a table, got string')
    -- A hole is refused, not skipped: the netlayers after it would not start.
    refused({ netlayers = { { type = 'tcp-tls' }, nil, { type = 'tcp-testing-only' } } },
      'Kernel.make: option remote.netlayers[2] must be a table, got nil')
    refused({ netlayers = { { type = 'tcp-tls', port = 1 } } },
      'Kernel.make: option remote.netlayers[1] has unknown key "port"')
    refused({ netlayers = { { type = 'tcp-tls' }, { listen = '127.0.0.1:0' } } },
      "Kernel.make: option remote.netlayers[2] needs a type ('tcp-testing-only' or 'tcp-tls')")
    refused({ netlayers = { { type = 'tcp-tls', listen = 4433 } } },
      'Kernel.make: option remote.netlayers[1].listen must be a string, got number')
    refused({ netlayers = { { type = 'carrier-pigeon' } } },
      "Kernel.make: option remote.netlayers[1].type: unknown netlayer \"carrier-pigeon\" (there are "
      .. "'tcp-testing-only' and 'tcp-tls')")
    refused({ netlayers = { { type = 'tcp-tls' }, { type = 'tcp-testing-only', listen = 'nowhere' } } },
      "Kernel.make: option remote.netlayers[2].listen must be 'host:port', got \"nowhere\"")
    refused({ netlayers = { { type = 'tcp-tls' }, { type = 'tcp-tls', listen = '127.0.0.1:0' } } },
      'Kernel.make: option remote.netlayers[2]: netlayer "tcp-tls" is given twice (a kernel has one of each)')
    refused({ netlayer = 'tcp-tls', netlayers = { { type = 'tcp-tls' } } },
      'Kernel.make: option remote.netlayers cannot be given with remote.netlayer or remote.listen '
      .. '(give each netlayer its listen address in remote.netlayers)')
    refused({ listen = '127.0.0.1:0', netlayers = { { type = 'tcp-tls' } } },
      'Kernel.make: option remote.netlayers cannot be given with remote.netlayer or remote.listen '
      .. '(give each netlayer its listen address in remote.netlayers)')
  end)

  it('refuses a port that cannot be bound, and lets go of the netlayers started before it', function()
    if not listening() then return pending('needs /proc/net/tcp and /proc/<pid>/fd') end
    local holder = newKernel { remote = { listen = '127.0.0.1:0' } }
    finally(function() holder:stop() end)
    local taken = holder:getStatus().remoteComms.listenAddresses[1]:match('port=(%d+)')
    local before = listening()
    assert.is_true(before[tonumber(taken)])
    -- A first netlayer on a port the system chooses, then one on the
    -- port taken. (A port found free and let go for the first netlayer
    -- could be taken by another process meanwhile, about once in 7,000
    -- runs: this process's own sockets are counted instead.)
    local netlayers = {
      { type = 'tcp-tls', listen = '127.0.0.1:0' },
      { type = 'tcp-testing-only', listen = '127.0.0.1:' .. taken },
    }
    refused({ netlayers = netlayers },
      ('Kernel.make: remote: cannot listen on 127.0.0.1:%s: address already in use'):format(taken))
    -- The first netlayer's socket was let go: this process listens where
    -- it did before.
    assert.are.same(before, listening())
  end)
end)
