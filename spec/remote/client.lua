--- A raw CapTP client for the specs (not a spec itself): it speaks to a
--- peer byte by byte, so that a spec can send what no well-behaved kernel
--- would. It runs on the loop of a kernel the spec made.
local core = require 'ocap.core'
local syrup = require 'ocap.syrup'
local captp = require 'ocap.captp'

local net, crypto = core.net, core.crypto

local M = {}
local Client = {}
Client.__index = Client

-- A reply that never comes fails the spec instead of hanging it.
local SAFETY_MS = 20000

--- A TLS context with a fresh key, for a client of a `tcp-tls` peer.
function M.tlsContext()
  return assert(core.tls.context(core.tls.newKey()))
end

--- Connects to the peer of a locator URL on kernel's loop. With a TLS
--- context (M.tlsContext), it speaks TLS, presents the context's key and
--- checks the peer's against the URL's designator; its hello then names
--- the context's designator.
function M.connect(kernel, url, tls)
  local loc = assert(captp.parseURL(url))
  local self = setmetatable({ kernel = kernel, K = kernel.K, buf = '', events = {}, closed = false, peer = loc },
    Client)
  if tls then
    self.tls, self.designator = true, tls:designator()
  end
  self.conn = assert(net.connect(kernel.K, loc.hints.host, tonumber(loc.hints.port), function(_, ev, data)
    self.events[#self.events + 1] = { ev, data }
  end, tls, tls and loc.designator))
  self:_wait(function() return self.opened end)
  return self
end

function Client:_pump()
  while self.events[1] do
    local e = table.remove(self.events, 1)
    if e[1] == 'open' then
      self.opened = true
    elseif e[1] == 'data' then
      self.buf = self.buf .. e[2]
    elseif e[1] == 'eof' or e[1] == 'tlserror' then
      self.closed = true
      self.opened = true
      self.why = e[2]
    elseif e[1] == 'timeout' then
      error('the peer did not answer within ' .. SAFETY_MS .. ' ms', 0)
    end
  end
end

--- A raw peer that listens on kernel's loop, for a kernel (that one,
--- which keeps running while the peer waits) to dial. Its locator is
--- `peer.locator`; accept() waits for the connection.
function M.listen(kernel)
  local self = setmetatable({ kernel = kernel, K = kernel.K, buf = '', events = {}, closed = false }, Client)
  self.server = assert(net.listen(kernel.K, '127.0.0.1', 0, function(conn, ev, data)
    if ev == 'accept' then
      self.conn = conn
      self.opened = true
    else
      self.events[#self.events + 1] = { ev, data }
    end
  end))
  self.designator = 'rawpeer'
  self.locator = ('ocapn://%s.tcp-testing-only?host=127.0.0.1&port=%d'):format(self.designator, self.server:port())
  return self
end

function Client:accept()
  self:_wait(function() return self.opened end)
end

function Client:_wait(done)
  if self.conn then self.conn:setTimer(SAFETY_MS) end
  while true do
    -- The kernel that made the loop runs too: it may be the other peer.
    self.kernel:run()
    self:_pump()
    if done() then break end
    self.K:runLoop(true)
  end
  if self.conn then self.conn:setTimer(0) end
end

--- Sends raw bytes, or a value as Syrup.
function Client:send(v)
  self.conn:write(type(v) == 'string' and v or syrup.encode(v))
end

--- The next message from the peer, or nil once it closed the connection.
function Client:receive()
  local n
  self:_wait(function()
    n = syrup.frame(self.buf)
    return n or self.closed
  end)
  if not n then return nil end
  local msg = syrup.decode(self.buf:sub(1, n))
  self.buf = self.buf:sub(n + 1)
  return msg
end

--- Reads until a message with the given label arrives, and returns it.
function Client:expect(label)
  while true do
    local msg = self:receive()
    if not msg then return nil end
    if captp.label(msg) == label then return msg end
  end
end

--- Reads until an op:abort arrives; its reason, or nil if the peer closed
--- the connection without one.
function Client:expectAbort()
  while true do
    local msg = self:receive()
    if not msg then return nil end
    if captp.label(msg) == 'op:abort' then
      self:receive() -- the peer closes after aborting: wait for it
      return msg.args[1]
    end
  end
end

--- Waits until the peer closed the connection, whatever it sends first
--- (a TLS alert, say); returns why it closed, as the netlayer said.
function Client:expectClosed()
  self:_wait(function() return self.closed end)
  return self.why
end

--- Sends op:start-session; opts may override its version, the designator
--- and netlayer (transport) of its location, or what the signature covers.
function Client:sendHello(opts)
  opts = opts or {}
  local pk, sk = crypto.keypair()
  self.pk, self.sk = pk, sk
  local loc = { transport = opts.transport or (self.tls and 'tcp-tls' or 'tcp-testing-only'),
    designator = opts.designator or self.designator
      or crypto.random(8):gsub('.', function(c) return ('%02x'):format(c:byte()) end),
    hints = { host = '127.0.0.1', port = '1' } }
  local sig = crypto.sign(sk, opts.signed or captp.locationBytes(loc))
  self:send(captp.op('op:start-session', opts.version or captp.VERSION, captp.pubkeyValue(pk), captp.peerValue(loc),
    captp.sigValue(sig)))
end

--- Sends op:start-session and returns the peer's answer to it.
function Client:hello(opts)
  self:sendHello(opts)
  return self:receive()
end

--- Fetches swiss from the bootstrap object; the descriptor of the answer
--- position it was given (the object itself, pipelined).
function Client:fetch(swiss, answerPos, resolverPos)
  self:send(captp.op('op:deliver', captp.desc('desc:export', 0), captp.list(syrup.symbol('fetch'), syrup.bytes(swiss)),
    answerPos, captp.desc('desc:import-object', resolverPos)))
  return captp.desc('desc:answer', answerPos)
end

--- Reads until a message to our export at pos arrives; its arguments.
function Client:expectTo(pos)
  while true do
    local msg = self:receive()
    if not msg then return nil end
    local to = msg.args[1]
    if captp.descPos(to, 'desc:export') == pos then return msg.args[2] end
  end
end

--- Reads op:deliver-only messages until each export position given got
--- one, in whatever order they come; their args by position.
function Client:expectAllTo(...)
  local want, got = { ... }, {}
  local function done()
    for _, pos in ipairs(want) do
      if not got[pos] then return false end
    end
    return true
  end
  while not done() do
    local msg = assert(self:expect('op:deliver-only'))
    local pos = captp.descPos(msg.args[1], 'desc:export')
    if pos then got[pos] = msg.args[2] end
  end
  return got
end

--- Reads op:gc-export messages until one names export position pos; the
--- count of references that message drops for it.
function Client:expectGcExport(pos)
  while true do
    local gc = assert(self:expect('op:gc-export'))
    local delta
    for i, p in ipairs(gc.args[1]) do
      if p == pos then delta = (delta or 0) + gc.args[2][i] end
    end
    if delta then return delta end
  end
end

--- Sends a list of messages in one write, as a peer pipelining them would.
function Client:sendBatch(msgs)
  local parts = {}
  for i, m in ipairs(msgs) do parts[i] = syrup.encode(m) end
  self.conn:write(table.concat(parts))
end

function Client:close()
  if not self.closed and self.conn then self.conn:close() end
  if self.server then self.server:close() end
  self.closed = true
end

return M
