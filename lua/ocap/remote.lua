--- Remote kernels over OCapN: CapTP sessions on the `tcp-testing-only`
--- or `tcp-tls` netlayer, on the kernel's libuv loop (docs/remote.md).
---
--- A session is one connection to one peer, and an endpoint of the
--- kernel, `r<N>`, with its own c-list (docs/remote.md): an import is a
--- kernel object that endpoint owns (its c-list's `o+<position>`), and
--- what we export to the peer is recorded there as its import. The
--- session's tables map CapTP's positions to them: what we export
--- (positions -> local values, and their erefs), what we import
--- (positions -> kernel objects), the answers the peer asked us to keep
--- (for its pipelined messages) and the questions we asked it.
---
--- A message the kernel routes to an import, or to a promise the peer
--- decides (its answer), is delivered to the session's endpoint in a
--- crank (Remote:_dispatch), which turns it into an `op:deliver`. The
--- bytes leave only after that crank committed: the netlayer's callbacks
--- only queue, and `pump` (run by the kernel's driver between cranks)
--- commits and flushes the store before it writes. A session that ends
--- terminates its endpoint as a vat's end does.
local core = require 'ocap.core'
local syrup = require 'ocap.syrup'
local pass = require 'ocap.pass'
local promise = require 'ocap.promise'
local liveslots = require 'ocap.liveslots'
local captp = require 'ocap.captp'
local hex = require 'ocap.hex'
local marshal = require 'ocap.marshal'

local net, crypto, tls = core.net, core.crypto, core.tls
local kind, sym = syrup.kind, syrup.symbol
local list, op, desc, label, descPos = captp.list, captp.op, captp.desc, captp.label, captp.descPos
local E = liveslots.E
local pack, unpack = table.pack, table.unpack

-- What syrup.decode marks its lists with, and only them (a dictionary is
-- a plain table): a value from the wire, or made of one by _in, is a list
-- exactly when it has this metatable, which is cheaper to ask than
-- pass.isArray (pass.classify walks the table's keys).
local ARRAY_MT = pass.ARRAY_MT

local M = {}

local OPTIONS = {
  netlayer = 'string', listen = 'string', netlayers = 'table', handshakeTimeout = 'number',
  maxMessageBytes = 'number', maxAnswers = 'number', limits = 'table',
}

-- The netlayers a kernel can speak, and the keys of one entry of
-- `remote.netlayers`.
local NETLAYERS = { ['tcp-testing-only'] = true, ['tcp-tls'] = true }
local NETLAYER_OPTIONS = { type = 'string', listen = 'string' }

-- Milliseconds between activity and the full collection that finds the
-- imports it dropped.
local GC_DELAY = 100

local DEFAULTS = { handshakeTimeout = 30000, maxMessageBytes = 1024 * 1024, maxAnswers = 10000 }

-- What one peer (or all of them together, for connections) may make this
-- kernel hold; `remote.limits` overrides them (docs/remote.md).
local LIMITS = {
  maxConnections = 100,                -- connections peers opened to us, at once
  maxOutboundConnections = 100,        -- connections we dialled, at once
  maxImports = 10000,                  -- objects and promises a session imported
  maxExports = 10000,                  -- objects and promises a session exported
  maxQuestions = 10000,                -- our messages waiting for the peer's answer
  maxGifts = 1000,                     -- gifts a session deposited, withdrawals it waits for
  maxPipelined = 10000,                -- the peer's messages waiting for a promise of ours to settle
  maxWriteQueueBytes = 8 * 1024 * 1024, -- bytes waiting to be written to the peer
}

-- A protocol violation by the peer: the session is aborted with `reason`.
local Violation = {}
Violation.__index = Violation
local function violation(fmt, ...)
  error(setmetatable({ reason = fmt:format(...) }, Violation), 0)
end

-- What a message to one of our internal exports (the bootstrap object,
-- our resolvers) is delivered to: the session's handler, never the kernel.
local Internal = {}

local function kernelError(code, detail)
  return pass.makeError(('[KERNEL:%s] %s'):format(code, detail))
end

-- ---- imports ----

-- The host's presence of each import knows its session and position
-- (weak keys: the host's liveslots drops a presence nobody holds, and the
-- kernel then tells the session's endpoint, Remote:_dispatch).
local importInfo = setmetatable({}, { __mode = 'k' })

-- A resolver the peer names in an op:deliver or op:listen is an import
-- only the session uses (it sends it the answer): it is not made a
-- kernel object, which every round trip would then cost. Lua collects it
-- once the answer went, and its finalizer queues the `op:gc-export` that
-- tells the peer how many times it was received.
local resolverMT = {
  __gc = function(self)
    local info = importInfo[self]
    if info and not info.c.closed then
      local q = info.c.gcQueue
      q[#q + 1] = { info.pos, info.count }
    end
  end,
  __tostring = function(self)
    local info = importInfo[self]
    return info and ('ocapn resolver %d of %s'):format(info.pos, info.c.peer or '?') or 'ocapn resolver'
  end,
}

-- ---- the remote comms of one kernel ----

local Remote = {}
Remote.__index = Remote

--- The netlayer named `name` (option `field`), checked.
local function checkNetlayer(field, name)
  if not NETLAYERS[name] then
    error(("Kernel.make: option %s: unknown netlayer %q (there are 'tcp-testing-only' and 'tcp-tls')")
      :format(field, name), 0)
  end
  return name
end

--- The host and port of `listen` (option `field`), checked.
local function checkListen(field, listen)
  local host, port = (listen or '127.0.0.1:0'):match('^%[?([^%]]+)%]?:(%d+)$')
  if not host then error(("Kernel.make: option %s must be 'host:port', got %q"):format(field, tostring(listen)), 0) end
  return host, tonumber(port)
end

--- The netlayers of `remote.netlayers`, checked: a non-empty list of
--- { type = ..., listen = ... }, each type at most once (a kernel has one
--- designator per netlayer, which its sessions and URLs are keyed by).
local function checkNetlayers(list_)
  local function notList(why)
    error(('Kernel.make: option remote.netlayers must be a non-empty list of { type = ..., listen = ... }%s')
      :format(why), 0)
  end
  local n = #list_
  if next(list_) == nil then notList(', got an empty table') end
  local keys = {}
  for k in pairs(list_) do
    if math.type(k) ~= 'integer' or k < 1 or k > n then keys[#keys + 1] = tostring(k) end
  end
  if keys[1] then
    table.sort(keys)
    notList((', but it has the key %q (put each netlayer in the list: netlayers = { { type = ... } })')
      :format(keys[1]))
  end
  local layers, seen = {}, {}
  -- Up to the border #list_, not ipairs: a hole would end the list there
  -- and leave the netlayers after it unstarted, without a word.
  for i = 1, n do
    local entry = list_[i]
    local field = ('remote.netlayers[%d]'):format(i)
    if type(entry) ~= 'table' then
      error(('Kernel.make: option %s must be a table, got %s'):format(field, type(entry)), 0)
    end
    for k, v in pairs(entry) do
      local want = NETLAYER_OPTIONS[k]
      if not want then error(('Kernel.make: option %s has unknown key %q'):format(field, tostring(k)), 0) end
      if type(v) ~= want then
        error(('Kernel.make: option %s.%s must be a %s, got %s'):format(field, k, want, type(v)), 0)
      end
    end
    if entry.type == nil then
      error(("Kernel.make: option %s needs a type ('tcp-testing-only' or 'tcp-tls')"):format(field), 0)
    end
    local name = checkNetlayer(field .. '.type', entry.type)
    if seen[name] then
      error(('Kernel.make: option %s: netlayer %q is given twice (a kernel has one of each)'):format(field, name), 0)
    end
    seen[name] = true
    local host, port = checkListen(field .. '.listen', entry.listen)
    layers[i] = { type = name, host = host, port = port }
  end
  return layers
end

--- Checks the `remote` option and fills in its defaults; returns the
--- netlayers to start, in order: { type, host, port } each.
local function checkOptions(opts)
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error(('Kernel.make: option remote has unknown key %q'):format(tostring(k)), 0) end
    if type(v) ~= want then
      error(('Kernel.make: option remote.%s must be a %s, got %s'):format(k, want, type(v)), 0)
    end
  end
  if opts.netlayers and (opts.netlayer or opts.listen) then
    error('Kernel.make: option remote.netlayers cannot be given with remote.netlayer or remote.listen '
      .. '(give each netlayer its listen address in remote.netlayers)', 0)
  end
  local function positive(field, v)
    if math.type(v) ~= 'integer' or v < 1 then
      error(('Kernel.make: option %s must be a positive integer, got %s'):format(field,
        type(v) == 'string' and ('%q'):format(v) or tostring(v)), 0)
    end
  end
  for k, d in pairs(DEFAULTS) do
    if opts[k] ~= nil then positive('remote.' .. k, opts[k]) end
    opts[k] = opts[k] or d
  end
  local limits = {}
  for k, v in pairs(opts.limits or {}) do
    if not LIMITS[k] then
      error(('Kernel.make: option remote.limits has unknown key %q'):format(tostring(k)), 0)
    end
    positive('remote.limits.' .. k, v)
    limits[k] = v
  end
  for k, d in pairs(LIMITS) do limits[k] = limits[k] or d end
  opts.limits = limits
  if opts.netlayers then return checkNetlayers(opts.netlayers) end
  local name = checkNetlayer('remote.netlayer', opts.netlayer or 'tcp-testing-only')
  local host, port = checkListen('remote.listen', opts.listen)
  return { { type = name, host = host, port = port } }
end

--- The TLS context of this kernel on `tcp-tls`: its long-term Ed25519 key
--- is made once and kept in the database (`remote.tls.key`, PKCS#8 in
--- hex), so that its designator, the hash of the key, and with it the
--- sturdyref URLs it issued survive restarts.
local function tlsContext(K)
  local stored = K:kvGet('remote.tls.key')
  if not stored then
    stored = hex.encode(tls.newKey())
    K:kvSet('remote.tls.key', stored)
    K:commit()
  end
  local ctx, err = tls.context(hex.decode(stored))
  if not ctx then error('Kernel.make: remote: the stored remote.tls.key is bad: ' .. err, 0) end
  return ctx
end

--- A swiss number: 32 characters of base64url from 24 random bytes.
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local function newSwiss()
  local raw, out = crypto.random(24), {}
  for i = 1, #raw, 3 do
    local a, b, c = raw:byte(i, i + 2)
    local n = a * 65536 + b * 256 + c
    for s = 18, 0, -6 do
      local k = (n >> s) & 63
      out[#out + 1] = B64:sub(k + 1, k + 1)
    end
  end
  return table.concat(out)
end

--- The designator of this kernel on netlayer `name`, made once and kept
--- in the database, and the TLS context on `tcp-tls`.
local function identity(K, name)
  if name == 'tcp-tls' then
    -- The designator is the key's: a URL names the key it must reach.
    local ctx = tlsContext(K)
    return ctx:designator(), ctx
  end
  local designator = K:kvGet('remote.designator')
  if not designator then
    designator = hex.encode(crypto.random(16))
    K:kvSet('remote.designator', designator)
    K:commit()
  end
  return designator
end

--- The key of the sessions with the peer at `loc` (or of ours there):
--- a peer is its netlayer and its designator, so that a peer on one
--- netlayer cannot take the place of another's with the same name.
local function peerKey(transport, designator)
  return transport .. ' ' .. designator
end

--- Starts the remote comms of a kernel: listens on each netlayer, and is
--- ready to dial.
---@param kernel table the kernel (ocap.kernel)
---@param opts table Kernel.make's `remote` option
function M.start(kernel, opts)
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  local specs = checkOptions(copy)
  local K = kernel.K
  local self = setmetatable({
    kernel = kernel, K = K, ls = kernel.ls, opts = copy,
    layers = {},       -- the netlayers, in the order of the options
    layerOf = {},      -- netlayer name -> its layer
    events = {},       -- what the netlayers reported, handled by pump
    conns = {},        -- conn userdata -> session
    sessions = {},     -- peerKey -> the session in use for that peer
    waiting = {},      -- peerKey -> functions to run once it is open
    sturdy = {},       -- swiss -> object, for objects the host registered
    byEp = {},         -- endpoint id ("r<N>") -> its session
    byKref = {},       -- kref of an import -> its info
    ended = {},        -- sessions whose endpoint is still to be terminated
    gifts = {},        -- gifter session id .. gift id -> { ref, gifter }
    giftWaiters = {},  -- the same -> { kit, gifter, receiver } of a withdraw-gift that came first
    inbound = 0,       -- connections peers opened to us, open now
    outbound = 0,      -- connections we dialled, open now
    dirty = {},        -- sessions with bytes to write
    counts = { aborted = 0, gcExports = 0, gcAnswers = 0 },
    closed = false,
  }, Remote)
  for i, spec in ipairs(specs) do
    local name = spec.type
    local designator, ctx = identity(K, name)
    -- Events carry their netlayer: an accepted connection's session is
    -- on the netlayer of the server that accepted it.
    local layer = { type = name, designator = designator, tls = ctx }
    function layer.onEvent(conn, event, data)
      local ev = self.events
      ev[#ev + 1] = { conn, event, data, layer }
    end
    local server, err = net.listen(K, spec.host, spec.port, layer.onEvent, ctx)
    if not server then
      -- The netlayers started before this one stop listening with it.
      for j = 1, i - 1 do self.layers[j].server:close() end
      K:runLoop(false)
      error(('Kernel.make: remote: cannot listen on %s:%d: %s'):format(spec.host, spec.port, err), 0)
    end
    layer.server = server
    layer.location = { transport = name, designator = designator,
      hints = { host = spec.host, port = tostring(server:port()) } }
    self.layers[i] = layer
    self.layerOf[name] = layer
  end
  K:setPeerDispatch(function(ep, what, a, b, c, d) return self:_dispatch(ep, what, a, b, c, d) end)
  M.endStale(K)
  return self
end

-- ---- the peers' endpoints ----

local PEER_KEY = 'remote.peer.'

--- The reason a peer endpoint is terminated with: capdata of err.
local function reasonBody(err)
  return marshal.serializeData(err).body
end

--- Sessions do not survive a restart: the endpoints a previous run left
--- (it stopped without closing them, or crashed) are terminated now, as a
--- session that ends is, so that nothing of theirs stays in the database.
--- A kernel started without `remote` calls it too (ocap.kernel): no one
--- would serve those endpoints, and a message to one would never settle.
---@param K userdata the kernel's core (ocap.core)
function M.endStale(K)
  local stale = {}
  local key = K:kvNext(PEER_KEY)
  while key and key:sub(1, #PEER_KEY) == PEER_KEY do
    stale[#stale + 1] = { key:sub(#PEER_KEY + 1), K:kvGet(key) }
    key = K:kvNext(PEER_KEY, key)
  end
  for _, e in ipairs(stale) do
    K:terminate(e[1], reasonBody(kernelError('CONNECTION_LOST',
      ('connection to peer %s lost: the kernel restarted'):format(tostring(e[2])))))
    K:kvDelete(PEER_KEY .. e[1])
  end
  if stale[1] then K:commit() end
end

--- Makes the endpoint of a session that just opened: `r<N>`, a new N for
--- each session (docs/remote.md).
function Remote:_openEndpoint(c)
  local ep = self.K:allocPeerId()
  c.ep = ep
  self.byEp[ep] = c
  self.K:kvSet(PEER_KEY .. ep, c.peer)
  self.K:commit()
end

--- Terminates the endpoints of the sessions that ended: their objects
--- are deleted, the promises they decide reject with the session's
--- error, their c-lists go. It runs between cranks (from pump, or when
--- the remote comms close), never in the crank that ended the session.
function Remote:_endEndpoints()
  local ended = self.ended
  if not ended[1] then return end
  self.ended = {}
  local K = self.K
  for _, c in ipairs(ended) do
    for _, info in pairs(c.importAt) do self.byKref[info.kref] = nil end
    c.importAt, c.imports, c.exportEref, c.erefUses, c.resultQ = {}, {}, {}, {}, {}
    self.byEp[c.ep] = nil
    K:terminate(c.ep, reasonBody(c.lostError))
    K:kvDelete(PEER_KEY .. c.ep)
  end
  K:commit()
end

function Remote:_log(level, message)
  self.kernel.logger({ level = level, tags = { 'remote' }, vatId = 'kernel', message = message })
end

--- The locator of this kernel on a netlayer (the first when not named):
--- `ocapn://<designator>.<netlayer>?host=..&port=..`.
function Remote:locator(name)
  local layer = name and self.layerOf[name] or self.layers[1]
  return layer and captp.formatURL(layer.location)
end

function Remote:status()
  local n = 0
  for _, c in pairs(self.sessions) do
    if c.state == 'open' then n = n + 1 end
  end
  local n2 = 0
  for _ in pairs(self.gifts) do n2 = n2 + 1 end
  local addresses, netlayers = {}, {}
  for i, layer in ipairs(self.layers) do
    addresses[i] = captp.formatURL(layer.location)
    netlayers[i] = { type = layer.type, designator = layer.designator, location = addresses[i] }
  end
  return {
    state = self.closed and 'disconnected' or 'connected',
    peerId = self.layers[1].designator,
    listenAddresses = addresses,
    netlayers = netlayers,
    sessions = n,
    aborted = self.counts.aborted,
    gcExports = self.counts.gcExports,
    gcAnswers = self.counts.gcAnswers,
    gifts = n2,
    peers = self:_peers(),
  }
end

--- The open sessions as endpoints of the kernel, in the order of their
--- ids: { id = 'r<N>', peerId, objects, promises }, the last two counting
--- the entries of the endpoint's c-list.
function Remote:_peers()
  local out = {}
  for ep, c in pairs(self.byEp) do
    if not c.closed then
      out[#out + 1] = { id = ep, peerId = c.peer, objects = self.K:clistSize(ep, 'ko'),
        promises = self.K:clistSize(ep, 'kp') }
    end
  end
  table.sort(out, function(x, y)
    return #x.id < #y.id or #x.id == #y.id and x.id < y.id
  end)
  return out
end

-- ---- sessions ----

--- A session on `layer` (one of self.layers) over conn; `key`, the
--- peerKey of the peer, is known at once for a dial and once the peer's
--- op:start-session came for a connection it opened.
function Remote:_newSession(conn, outbound, peer, layer, key)
  local pk, sk = crypto.keypair()
  local c = {
    remote = self, conn = conn, outbound = outbound, peer = peer, layer = layer, key = key, state = 'hello',
    pk = pk, sk = sk, buf = '', out = {}, outBytes = 0,
    exports = {}, exportOf = {}, exportCount = {}, nextExport = 1, nexports = 0,
    exportEref = {}, erefUses = {}, -- position -> the endpoint's eref; eref -> positions
    internal = {},
    imports = setmetatable({}, { __mode = 'v' }), nimports = 0,
    importAt = {},  -- position -> info of the import (its kref, times received)
    resolvers = setmetatable({}, { __mode = 'v' }), -- position -> resolver (resolverMT)
    -- eref of a promise the endpoint decides, while the peer may take
    -- messages for it -> { q = answer position, p = answer } (a result of
    -- ours) or { to = descriptor, promise } (the peer's promise)
    resultQ = {},
    promiseImports = {},
    answers = {}, nanswers = 0,
    questions = {}, nextQuestion = 0, nquestions = 0,
    npipelined = 0,
    gcQueue = {}, gcAnswers = {},
    gifts = {},   -- keys of the gifts it deposited, not yet withdrawn
    waits = {},   -- keys of the withdrawals it waits for, or that wait for its deposits
  }
  c.internal[0] = function(method, args) return self:_bootstrap(c, method, args) end
  self.conns[conn] = c
  return c
end

--- Queues a message for the session's peer. A peer that does not read
--- would have us keep what we send it without bound: once the bytes
--- waiting for it (queued here, and written but not taken by its socket)
--- would pass maxWriteQueueBytes, its session is aborted. One message
--- bigger than that goes when nothing waits.
function Remote:_send(c, msg)
  if c.closed then return end
  local bytes = syrup.encode(msg)
  local limit = self.opts.limits.maxWriteQueueBytes
  local waiting = c.conn:queued() + c.outBytes
  if waiting > 0 and waiting + #bytes > limit then
    return self:_abort(c, ('more than %d bytes waiting to be written to the peer'):format(limit), nil, true)
  end
  c.out[#c.out + 1] = bytes
  c.outBytes = c.outBytes + #bytes
  self.dirty[c] = true
end

function Remote:_hello(c)
  local location = c.layer.location
  local sig = crypto.sign(c.sk, captp.locationBytes(location))
  self:_send(c, op('op:start-session', captp.VERSION, captp.pubkeyValue(c.pk), captp.peerValue(location),
    captp.sigValue(sig)))
  c.conn:setTimer(self.opts.handshakeTimeout)
end

--- Ends a session: the promises the peer decided for us reject with
--- `code`, and it is forgotten. `why` is for the log.
function Remote:_lost(c, why, code)
  if c.closed then return end
  c.closed = true
  c.state = 'closed'
  self.conns[c.conn] = nil
  if c.counted then self.inbound = self.inbound - 1 end
  if c.dialled then self.outbound = self.outbound - 1 end
  if c.aborting then
    -- Its op:abort waits in c.out, behind what was queued before it:
    -- the pump writes them once the store committed, then closes.
    self.dirty[c] = true
  else
    self.dirty[c] = nil
    c.conn:close()
  end
  local err
  if c.outbound and not c.opened then
    -- It never connected: nothing was lost, the peer was not reached.
    code = 'ENDPOINT_UNREACHABLE'
    err = kernelError(code, ('cannot reach %s: %s'):format(tostring(c.peer), why))
  else
    err = kernelError(code or 'CONNECTION_LOST', ('connection to peer %s lost: %s'):format(tostring(c.peer), why))
  end
  c.lostError = err
  for _, q in pairs(c.questions) do
    liveslots.setPipeline(q.promise, nil)
    q.reject(err)
  end
  c.questions = {}
  -- The promises the peer exported are its endpoint's: its termination
  -- rejects them.
  c.promiseImports = {}
  self:_dropGifts(c)
  if c.ep then self.ended[#self.ended + 1] = c end
  if c.key and self.sessions[c.key] == c then
    self.sessions[c.key] = nil
    local waiting = self.waiting[c.key]
    if waiting then
      self.waiting[c.key] = nil
      for _, w in ipairs(waiting) do w(nil, err) end
    end
  end
  self:_log('info', ('session with %s ended: %s'):format(tostring(c.peer), why))
end

--- Aborts a session: tells the peer why, then ends it. With `drop`,
--- what was queued for the peer is dropped instead of sent.
function Remote:_abort(c, reason, code, drop)
  if c.closed then return end
  self.counts.aborted = self.counts.aborted + 1
  self:_log('warn', ('aborting session with %s: %s'):format(tostring(c.peer or 'unknown peer'), reason))
  -- What was queued before the abort may come from a crank in progress
  -- or from host work not yet committed: it leaves, with the op:abort
  -- behind it, only when the pump has committed the store, as every
  -- message does (a crank rolled back sends nothing). The session ends
  -- now; its connection closes once they are written.
  if drop then c.out, c.outBytes = {}, 0 end
  c.out[#c.out + 1] = syrup.encode(op('op:abort', reason))
  c.aborting = true
  self:_lost(c, 'aborted: ' .. reason, code)
end

-- ---- reading ----

function Remote:_onData(c, data)
  -- The buffer is cut once per read, not once per message: a read may
  -- bring thousands of small messages.
  local buf = c.buf .. data
  local pos = 1
  local max = self.opts.maxMessageBytes
  while not c.closed do
    -- A message is read (framed and decoded) in one pass; once the start
    -- of one came without its end, syrup.frame checks each read for the
    -- rest without building values, so that a big message arriving in
    -- many reads is not decoded again for each.
    local ok, n, msg = true, true, nil
    if c.partial then ok, n = pcall(syrup.frame, buf, pos) end
    if ok and n then ok, n, msg = pcall(syrup.read, buf, pos) end
    if not ok then
      return self:_abort(c, 'malformed Syrup: ' .. tostring(n):gsub('^syrup: ', ''))
    end
    if not n then
      c.partial = true
      if #buf - pos + 1 > max then return self:_abort(c, ('message larger than %d bytes'):format(max)) end
      break
    end
    c.partial = false
    if n > max then return self:_abort(c, ('message larger than %d bytes'):format(max)) end
    pos = pos + n
    local hok, err = pcall(self._handle, self, c, msg)
    if not hok then
      if getmetatable(err) == Violation then
        self:_abort(c, err.reason)
      else
        self:_log('error', 'remote: internal error handling a message: ' .. tostring(err))
        self:_abort(c, 'internal error')
      end
    end
  end
  c.buf = pos > 1 and buf:sub(pos) or buf
end

local HANDLERS = {}

function Remote:_handle(c, msg)
  local name = label(msg)
  if not name then violation('a CapTP message must be a record with a symbol label') end
  if c.state == 'hello' then
    if name == 'op:abort' then
      return self:_lost(c, 'peer aborted: ' .. tostring(msg.args[1]))
    end
    if name ~= 'op:start-session' then violation('expected op:start-session, got %s', name) end
    return self:_startSession(c, msg.args)
  end
  local h = HANDLERS[name]
  if not h then violation('unknown operation %s', name) end
  return h(self, c, msg.args)
end

local function argc(args, name, min, max)
  if #args < min or #args > (max or min) or args.n then
    violation('malformed %s: %d arguments', name, args.n or #args)
  end
end

function Remote:_startSession(c, args)
  argc(args, 'op:start-session', 4)
  local version, pkv, locv, sigv = args[1], args[2], args[3], args[4]
  if version ~= captp.VERSION then
    violation('unsupported CapTP version %s (this peer speaks %s)', tostring(version), captp.VERSION)
  end
  local pk, perr = captp.parsePubkey(pkv)
  if not pk then violation('op:start-session: %s', perr) end
  local loc, lerr = captp.parsePeer(locv)
  if not loc then violation('op:start-session: %s', lerr) end
  local sig, serr = captp.parseSig(sigv)
  if not sig then violation('op:start-session: %s', serr) end
  if not crypto.verify(pk, captp.locationBytes(loc), sig) then
    violation('op:start-session: bad location signature')
  end
  if c.outbound and loc.designator ~= c.peer then
    violation('op:start-session: peer %s answered for %s', loc.designator, c.peer)
  end
  -- A peer is named by its netlayer and designator: one that says it is
  -- on another netlayer than the one it speaks could stand for a peer of
  -- that netlayer, and the location it signs is what handoffs dial.
  if loc.transport ~= c.layer.type then
    violation('op:start-session: the location names netlayer %s, the session is on %s', loc.transport,
      c.layer.type)
  end
  -- On tcp-tls the peer proved it holds a key: the location it signs
  -- must be that key's, or a peer could speak for another designator.
  local keyOf = c.conn:peerDesignator()
  if keyOf and loc.designator ~= keyOf then violation('op:start-session: the location does not match the TLS key') end
  c.theirPk = pk
  c.peer = loc.designator
  c.key = peerKey(loc.transport, loc.designator)
  if not c.outbound then self:_hello(c) end
  c.peerLocation = loc
  local existing = self.sessions[c.key]
  if existing and existing ~= c and not existing.closed then
    if existing.outbound ~= c.outbound then
      -- Crossed hellos: both sides dialled. The connection whose dialler's
      -- session key has the lower id is dropped, on both sides alike.
      local out, inb = existing.outbound and existing or c, existing.outbound and c or existing
      local loser = captp.sideId(out.pk) < captp.sideId(inb.theirPk) and out or inb
      if loser == c then return self:_abort(c, 'crossed hellos: the other connection wins') end
      self.sessions[c.key] = c
      self:_abort(existing, 'crossed hellos: the other connection wins')
    else
      -- The peer opened a new session: the old one is gone with its state.
      self:_abort(existing, 'the peer started a new session', 'PEER_RESTARTED')
    end
  end
  self.sessions[c.key] = c
  c.state = 'open'
  self:_openEndpoint(c)
  c.conn:setTimer(0)
  self:_log('info', ('session with %s open (%s)'):format(c.peer, c.outbound and 'dialled' or 'accepted'))
  local waiting = self.waiting[c.key]
  if waiting then
    self.waiting[c.key] = nil
    for _, w in ipairs(waiting) do w(c) end
  end
end

-- ---- values across the wire ----

--- Exports a local value to c: its descriptor as the peer sees it.
local function exportValue(c, v, isPromise)
  local pos = c.exportOf[v]
  if not pos then
    local max = c.remote.opts.limits.maxExports
    if c.nexports >= max then
      c.remote:_abort(c, ('more than %d exports'):format(max))
      error(c.lostError, 0)
    end
    c.nexports = c.nexports + 1
    pos = c.nextExport
    c.nextExport = pos + 1
    c.exports[pos] = v
    c.exportOf[v] = pos
    c.exportCount[pos] = 0
    if isPromise then c.remote:_recordPromiseExport(c, v) else c.remote:_recordExport(c, pos, v) end
  end
  c.exportCount[pos] = c.exportCount[pos] + 1
  return desc(isPromise and 'desc:import-promise' or 'desc:import-object', pos)
end

--- Records in the session's c-list that the peer holds v, an object of
--- ours (a kernel object, or a host object the host's liveslots exports
--- for it): the peer's hold keeps it as a vat's import would, until the
--- peer releases it (op:gc-export). A value that cannot be a kernel
--- object (a presence of another kernel's) stays the session's own.
function Remote:_recordExport(c, pos, v)
  local ls = self.ls
  local ok, kref = pcall(function() return ls.refOf(v) or ls.export(v) end)
  if not ok or type(kref) ~= 'string' or kref:sub(1, 2) ~= 'ko' then return end
  local eref = self.K:import(c.ep, kref)
  c.exportEref[pos] = eref
  c.erefUses[eref] = (c.erefUses[eref] or 0) + 1
end

--- Records in the session's c-list that the peer was given p, when p is
--- a kernel promise: the endpoint subscribes to it, and forgets it once
--- told how it settled (the kernel removes a promise from a c-list then).
--- A promise of the host's own stays the session's.
function Remote:_recordPromiseExport(c, p)
  local kpid = self.ls.refOf(p)
  if type(kpid) ~= 'string' or kpid:sub(1, 2) ~= 'kp' then return end
  local eref = self.K:import(c.ep, kpid)
  self.K:subscribe(eref, c.ep)
end

--- The peer released our export at pos: so does its endpoint, once no
--- other position names the same object.
function Remote:_releaseExport(c, pos)
  local eref = c.exportEref[pos]
  if not eref then return end
  c.exportEref[pos] = nil
  local n = c.erefUses[eref] - 1
  if n > 0 then
    c.erefUses[eref] = n
    return
  end
  c.erefUses[eref] = nil
  local refs = { eref }
  self.K:dropImports(refs, c.ep)
  self.K:retireImports(refs, c.ep)
end

--- An internal export (a resolver of ours): handler(method, args).
local function internalExport(c, handler)
  local pos = c.nextExport
  c.nextExport = pos + 1
  c.internal[pos] = handler
  return pos
end

--- Our export at pos, as the peer names it in a message.
local function exported(c, pos)
  local v = c.exports[pos]
  if v ~= nil then return v end
  if c.internal[pos] then return setmetatable({ handler = c.internal[pos] }, Internal) end
  violation('no export at position %d', pos)
end

--- The Syrup value of a local value sent to c's peer.
function Remote:_out(c, v, depth)
  depth = (depth or 0) + 1
  if depth > 200 then error('value nested too deeply for CapTP', 0) end
  local t = type(v)
  if t == 'string' then
    if utf8.len(v) then return v end
    return syrup.bytes(v)
  end
  if t ~= 'table' and t ~= 'userdata' then return v end
  local info = importInfo[v]
  if not info and getmetatable(v) == 'presence' then
    -- A presence of an import that is not the one the session made (that
    -- one was dropped, and the kernel gave the host the object again).
    local ref = self.ls.refOf(v)
    info = ref and self.byKref[ref]
  end
  if info then
    if info.c == c then return desc('desc:export', info.pos) end
    if info.c.closed then error(info.c.lostError, 0) end
    return self:_give(c, info)
  end
  local k = kind(v)
  if k then
    if k == 'tagged' then return syrup.tagged(v.tag, self:_out(c, v.value, depth)) end
    if k == 'record' then return syrup.record(self:_out(c, v.label, depth), self:_out(c, v.args, depth)) end
    if k == 'set' then return syrup.set(self:_out(c, v.items, depth)) end
    return v
  end
  if v == pass.null or pass.isError(v) then return v end
  local box, contents = pass.box(v)
  if box == 'tagged' then return syrup.tagged(contents.tag, self:_out(c, contents.payload, depth)) end
  if box then return v end -- syrup.encode writes ocap's symbols, byte arrays and bigints
  if pass.isRemotable(v) then return exportValue(c, v, false) end
  if promise.isPromise(v) or pass.isPromise(v) then return exportValue(c, v, true) end
  local style = pass.passStyleOf(v)
  if style == 'copyArray' then
    local n = v.n or #v
    local a = pass.array()
    for i = 1, n do a[i] = self:_out(c, v[i], depth) end
    if n > #a then a.n = n end
    return a
  end
  if style == 'copyRecord' then
    local r = {}
    for key, x in pairs(v) do r[key] = self:_out(c, x, depth) end
    return r
  end
  return v
end

--- The local value of a Syrup value from c's peer.
function Remote:_in(c, v, depth)
  depth = (depth or 0) + 1
  if type(v) ~= 'table' then return v end
  local k = kind(v)
  if k == 'record' then
    local name = label(v)
    if name == 'desc:sig-envelope' then
      -- A handoff-give stands for the object it hands off; any other
      -- signed record (a handoff-receive) stays as signed, byte for byte.
      if label(v.args[1]) == 'desc:handoff-give' then return self:_receiveHandoff(c, v) end
      return v
    elseif name == 'desc:import-object' then
      local pos = descPos(v, name) or violation('malformed %s', name)
      if not c.imports[pos] then self:_checkImports(c) end
      return self:_import(c, pos)
    elseif name == 'desc:import-promise' then
      local pos = descPos(v, name) or violation('malformed %s', name)
      if not c.promiseImports[pos] then self:_checkImports(c) end
      return self:_importPromise(c, pos)
    elseif name == 'desc:export' then
      local pos = descPos(v, name) or violation('malformed %s', name)
      return exported(c, pos)
    elseif name == 'desc:answer' then
      local pos = descPos(v, name) or violation('malformed %s', name)
      local a = c.answers[pos]
      if a == nil then violation('no answer at position %d', pos) end
      return a
    end
    return syrup.record(v.label, self:_in(c, v.args, depth))
  elseif k == 'tagged' then
    return syrup.tagged(v.tag, self:_in(c, v.value, depth))
  elseif k == 'set' then
    return syrup.set(self:_in(c, v.items, depth))
  elseif k then
    return v
  end
  if v == pass.null or pass.isError(v) then return v end
  if getmetatable(v) == ARRAY_MT then
    local n = v.n or #v
    local a = pass.array()
    for i = 1, n do a[i] = self:_in(c, v[i], depth) end
    if n > #a then a.n = n end
    return a
  end
  local r = {}
  for key, x in pairs(v) do r[key] = self:_in(c, x, depth) end
  return r
end

--- Refuses one more import from c's peer past maxImports.
function Remote:_checkImports(c)
  local max = self.opts.limits.maxImports
  if c.nimports >= max then violation('more than %d imports', max) end
end

--- The import at pos: a kernel object of the session's endpoint (`o+pos`
--- in its c-list), which the host holds as a presence (one per position
--- while it lives). The kernel routes a vat's messages to it to the
--- endpoint; host code's go on the wire at once.
function Remote:_import(c, pos)
  local info = c.importAt[pos]
  if info then
    info.count = info.count + 1
    local proxy = c.imports[pos]
    if proxy then return proxy end
  else
    c.nimports = c.nimports + 1
    info = { remote = self, c = c, pos = pos, count = 1, kref = self.K:export(c.ep, 'o+' .. pos) }
    c.importAt[pos] = info
    self.byKref[info.kref] = info
  end
  -- The host's c-list holds it, and the host's liveslots drops it (at a
  -- reap) once no presence stands for it, as for any import of the host.
  self.K:import('kernel', info.kref)
  local proxy = self.ls.adoptImport(info.kref, ('ocapn import %d of %s'):format(pos, c.peer))
  importInfo[proxy] = info
  info.hostGone = nil
  -- E(import) sends at once: the message is eventual on the wire anyway,
  -- and its answer is a promise messages can be pipelined on.
  liveslots.setPipeline(proxy, function(method, args) return self:_call(info, method, args) end)
  c.imports[pos] = proxy
  return proxy
end

--- The resolver a desc:import-object names (see resolverMT).
function Remote:_resolver(c, v)
  local pos = descPos(v, 'desc:import-object') or violation('malformed desc:import-object')
  local r = c.resolvers[pos]
  if r then
    importInfo[r].count = importInfo[r].count + 1
    return r
  end
  r = setmetatable({}, resolverMT)
  importInfo[r] = { remote = self, c = c, pos = pos, count = 1 }
  c.resolvers[pos] = r
  return r
end

--- The peer's promise at pos: a kernel promise the session's endpoint
--- decides (`p+pos` in its c-list), which the host holds. We listen to
--- it, and the endpoint resolves it as the peer tells; until then the
--- kernel hands the endpoint the messages sent to it, which go to the
--- peer's promise at once (pipelining).
function Remote:_importPromise(c, pos)
  local imp = c.promiseImports[pos]
  if imp then return imp.promise end
  local eref = 'p+' .. pos
  imp = { to = desc('desc:export', pos), promise = self.ls.promiseFor(self.K:export(c.ep, eref)) }
  c.promiseImports[pos] = imp
  c.resultQ[eref] = imp
  c.nimports = c.nimports + 1
  local rpos
  rpos = internalExport(c, function(method, args)
    c.internal[rpos] = nil
    if c.promiseImports[pos] ~= imp then return end
    c.promiseImports[pos] = nil
    c.nimports = c.nimports - 1
    imp.settled = true
    if method == 'fulfill' or method == 'break' then
      self:_settle(c, eref, method == 'fulfill', args[1])
    end
    -- The kernel now sends the promise's messages where it points.
    c.resultQ[eref] = nil
  end)
  self:_send(c, op('op:listen', imp.to, desc('desc:import-object', rpos), false))
  return imp.promise
end

-- OCapN values on their way into the kernel, as ocap's: symbols, byte
-- arrays, big integers and tagged values become pass's (ocap.marshal
-- carries them to vats as they are); Syrup's records and sets, which are
-- not OCapN passables, are refused. v is made by _in (its lists carry
-- ARRAY_MT).
local function toKernel(v, depth)
  depth = (depth or 0) + 1
  if type(v) ~= 'table' then return v end
  local k = kind(v)
  if k == 'symbol' then return pass.symbol(v.name) end
  if k == 'bytes' then return pass.bytes(v.bytes) end
  if k == 'bigint' then return pass.bigint(v.digits) end
  if k == 'tagged' then return pass.makeTagged(v.tag, toKernel(v.value, depth)) end
  if k then error(pass.makeError(('an OCapN %s cannot be passed to a vat'):format(k)), 0) end
  if v == pass.null or pass.isError(v) or pass.isRemotable(v) or promise.isPromise(v) or pass.box(v) then
    return v
  end
  if getmetatable(v) == ARRAY_MT then
    local n = v.n or #v
    local a = pass.array()
    for i = 1, n do a[i] = toKernel(v[i], depth) end
    if n > #a then a.n = n end
    return a
  end
  local r = {}
  for key, x in pairs(v) do r[key] = toKernel(x, depth) end
  return r
end

--- Sends method(args) to a local target; a promise of the result. A
--- target behind the kernel (a vat's object, a kernel promise) gets the
--- arguments as ocap values; a host object gets OCapN's as they are.
function Remote:_deliverLocal(target, method, args)
  if getmetatable(target) == Internal then
    local ok, r = pcall(target.handler, method, args)
    return promise.settled(ok, r)
  end
  if promise.isPromise(target) and not liveslots.refOf(target) then
    -- A promise of ours: the message waits for it, then goes where it
    -- points, with the arguments that target needs.
    return target:next(function(t) return self:_deliverLocal(t, method, args) end)
  end
  local ok, p = pcall(function()
    if liveslots.refOf(target) then
      local n = args.n or #args
      local a = { n = n }
      for i = 1, n do a[i] = toKernel(args[i]) end
      args = a
    end
    return E(target)[method](unpack(args, 1, args.n or #args))
  end)
  if not ok then return promise.reject(p) end
  return p
end

-- ---- the operations ----

local function splitSelector(args)
  local first = args[1]
  if kind(first) == 'symbol' then
    local n = args.n or #args
    return first.name, pack(unpack(args, 2, n))
  end
  return '__call', pack(unpack(args, 1, args.n or #args))
end

--- Tells the peer's resolver how p settled.
function Remote:_resolveTo(c, resolver, p)
  promise.onSettle(p, function(ok, v)
    if c.closed then return end
    local info = importInfo[resolver]
    if not info then return end
    local encoded, enc = pcall(self._out, self, c, v)
    if not encoded then
      ok, enc = false, pass.makeError(tostring(pass.isError(enc) and enc.message or enc))
    end
    self:_send(c, op('op:deliver-only', desc('desc:export', info.pos), list(sym(ok and 'fulfill' or 'break'), enc)))
  end)
end

local function targetOf(c, to)
  local name = label(to)
  if name == 'desc:export' then
    local pos = descPos(to, name) or violation('malformed desc:export')
    return exported(c, pos)
  elseif name == 'desc:answer' then
    local pos = descPos(to, name) or violation('malformed desc:answer')
    local a = c.answers[pos]
    if a == nil then violation('no answer at position %d', pos) end
    return a
  end
  violation('a message must go to a desc:export or desc:answer')
end

local function deliver(self, c, to, argv, answerPos, resolveMe)
  local target = targetOf(c, to)
  if getmetatable(argv) ~= ARRAY_MT then violation('the arguments of a delivery must be a list') end
  if answerPos ~= false and answerPos ~= nil then
    if math.type(answerPos) ~= 'integer' or answerPos < 0 then violation('bad answer position') end
    if c.answers[answerPos] ~= nil then violation('answer position %d is in use', answerPos) end
    if c.nanswers >= self.opts.maxAnswers then
      violation('more than %d answers outstanding', self.opts.maxAnswers)
    end
  else
    answerPos = nil
  end
  local resolver
  if resolveMe ~= false and resolveMe ~= nil then
    if label(resolveMe) ~= 'desc:import-object' then violation('resolve-me must be a desc:import-object') end
    resolver = self:_resolver(c, resolveMe)
  end
  local method, args = splitSelector(self:_in(c, argv))
  -- A message to a promise of ours (an answer, say) waits here until it
  -- settles: the peer may pipeline only so many.
  local waits = promise.isPromise(target) and not liveslots.refOf(target)
  if waits then
    local max = self.opts.limits.maxPipelined
    if c.npipelined >= max then violation('more than %d messages waiting on promises', max) end
    c.npipelined = c.npipelined + 1
  end
  local p = self:_deliverLocal(target, method, args)
  if waits then promise.onSettle(target, function() c.npipelined = c.npipelined - 1 end) end
  if answerPos then
    c.answers[answerPos] = p
    c.nanswers = c.nanswers + 1
  end
  if resolver then
    self:_resolveTo(c, resolver, p)
  else
    promise.onSettle(p, function() end)
  end
end

HANDLERS['op:deliver'] = function(self, c, args)
  argc(args, 'op:deliver', 4)
  deliver(self, c, args[1], args[2], args[3], args[4])
end

HANDLERS['op:deliver-only'] = function(self, c, args)
  argc(args, 'op:deliver-only', 2)
  deliver(self, c, args[1], args[2], false, false)
end

HANDLERS['op:listen'] = function(self, c, args)
  argc(args, 'op:listen', 2, 3)
  local target = targetOf(c, args[1])
  if label(args[2]) ~= 'desc:import-object' then violation('op:listen needs a desc:import-object') end
  local resolver = self:_resolver(c, args[2])
  if getmetatable(target) == Internal then target = nil end
  self:_resolveTo(c, resolver, promise.resolve(target))
end

HANDLERS['op:abort'] = function(self, c, args)
  self:_lost(c, 'peer aborted: ' .. tostring(args[1]))
end

HANDLERS['op:start-session'] = function()
  violation('op:start-session in an open session')
end

-- Positions come as one integer or as a list, as drafts differ.
local function positions(v, what)
  if math.type(v) == 'integer' then return { v } end
  if not pass.isArray(v) then violation('malformed %s', what) end
  for _, x in ipairs(v) do
    if math.type(x) ~= 'integer' then violation('malformed %s', what) end
  end
  return v
end

local function gcExports(self, c, args)
  argc(args, 'op:gc-exports', 2)
  local pos, deltas = positions(args[1], 'op:gc-exports'), positions(args[2], 'op:gc-exports')
  if #pos ~= #deltas then violation('malformed op:gc-exports: %d positions, %d deltas', #pos, #deltas) end
  for i, p in ipairs(pos) do
    local n = c.exportCount[p]
    if n and p ~= 0 then
      n = n - deltas[i]
      self.counts.gcExports = self.counts.gcExports + 1
      if n <= 0 then
        local v = c.exports[p]
        c.exports[p], c.exportCount[p] = nil, nil
        c.nexports = c.nexports - 1
        if v ~= nil then c.exportOf[v] = nil end
        self:_releaseExport(c, p)
      else
        c.exportCount[p] = n
      end
    end
  end
end
HANDLERS['op:gc-export'] = gcExports
HANDLERS['op:gc-exports'] = gcExports

local function gcAnswers(self, c, args)
  argc(args, 'op:gc-answers', 1)
  for _, p in ipairs(positions(args[1], 'op:gc-answers')) do
    if c.answers[p] ~= nil then
      c.answers[p] = nil
      c.nanswers = c.nanswers - 1
      self.counts.gcAnswers = self.counts.gcAnswers + 1
    end
  end
end
HANDLERS['op:gc-answer'] = gcAnswers
HANDLERS['op:gc-answers'] = gcAnswers

-- Pipelined selection (op:get, op:index, op:untag): a new answer for a
-- part of an answer or export, once it settles.
local function select(getter, name)
  return function(self, c, args)
    argc(args, name, 3)
    local target = targetOf(c, args[1])
    local key, pos = args[2], args[3]
    if math.type(pos) ~= 'integer' or pos < 0 or c.answers[pos] ~= nil then
      violation('%s: bad answer position', name)
    end
    if c.nanswers >= self.opts.maxAnswers then
      violation('more than %d answers outstanding', self.opts.maxAnswers)
    end
    c.answers[pos] = promise.resolve(target):next(function(v) return getter(v, key) end)
    c.nanswers = c.nanswers + 1
  end
end
HANDLERS['op:get'] = select(function(v, key)
  if type(v) ~= 'table' or kind(key) ~= 'symbol' and type(key) ~= 'string' then
    error(pass.makeError('op:get: not a struct field'), 0)
  end
  return v[type(key) == 'string' and key or key.name]
end, 'op:get')
HANDLERS['op:index'] = select(function(v, i)
  if not pass.isArray(v) or math.type(i) ~= 'integer' then error(pass.makeError('op:index: not a list'), 0) end
  return v[i + 1]
end, 'op:index')
HANDLERS['op:untag'] = select(function(v, tag)
  local t = kind(tag) == 'symbol' and tag.name or tag
  -- A host object's tagged value is Syrup's box, a vat's is ocap's.
  local style, box = pass.box(v)
  if style == 'tagged' and box.tag == t then return box.payload end
  if kind(v) == 'tagged' and v.tag == t then return v.value end
  error(pass.makeError('op:untag: tag does not match'), 0)
end, 'op:untag')

-- ---- the bootstrap object (export 0) ----

function Remote:_lookupSwiss(swiss)
  local obj = self.sturdy[swiss]
  if obj ~= nil then return obj end
  local kref = self.K:kvGet('remote.sturdy.' .. hex.encode(swiss))
  if kref then
    if kref:sub(1, 2) == 'kp' then return self.ls.promiseFor(kref) end
    return self.ls.presenceFor(kref)
  end
end

function Remote:_bootstrap(c, method, args)
  if method == 'fetch' then
    local swiss = args[1]
    if kind(swiss) == 'bytes' then swiss = swiss.bytes end
    if type(swiss) ~= 'string' then error(pass.makeError('fetch: the swiss number must be bytes'), 0) end
    local obj = self:_lookupSwiss(swiss)
    if obj == nil then error(pass.makeError('fetch: no object for this swiss number'), 0) end
    return obj
  end
  if method == 'deposit-gift' then return self:_deposit(c, args[1], args[2]) end
  if method == 'withdraw-gift' then return self:_withdraw(c, args[1]) end
  error(pass.makeError(('the bootstrap object has no method %q'):format(tostring(method))), 0)
end

-- ---- third-party handoffs ----
--
-- A gifter G that holds a reference to an object of exporter E and sends it
-- to receiver R deposits it with E under a gift id (deposit-gift) and sends
-- R a desc:handoff-give signed with G's key in the G-E session, naming R's
-- key in the G-R session. R opens (or uses) a session with E and withdraws
-- the gift with a desc:handoff-receive, signed with that key, that names
-- the R-E session and a handoff count R never used in it (no replay).

--- The id of a session: SHA-256 twice over "prot0" and both side ids,
--- sorted.
local function sessionId(c)
  if not c.id then
    local a, b = captp.sideId(c.pk), captp.sideId(c.theirPk)
    if b < a then a, b = b, a end
    c.id = crypto.sha256(crypto.sha256('prot0' .. a .. b))
  end
  return c.id
end

local function bytesOf(v)
  if kind(v) == 'bytes' then return v.bytes end
  if type(v) == 'string' then return v end
end

--- The signed record and signature of a `<desc:sig-envelope ...>` whose
--- record has the given label, or nil.
local function openEnvelope(v, name)
  if label(v) ~= 'desc:sig-envelope' or #v.args ~= 2 or label(v.args[1]) ~= name then return nil end
  local sig = captp.parseSig(v.args[2])
  if not sig then return nil end
  return v.args[1], sig
end

-- The most handoff counts a session's withdrawals keep above the bound
-- under which all count as used (useHandoffCount).
local HANDOFF_COUNTS = 1024

local function handoffError(what)
  error(pass.makeError('withdraw-gift: ' .. what), 0)
end

--- Counts one more gift or withdrawal that session c makes us keep:
--- past maxGifts, c is aborted.
function Remote:_checkGifts(c)
  local max = self.opts.limits.maxGifts
  local n = 0
  for _ in pairs(c.gifts) do n = n + 1 end
  for _ in pairs(c.waits) do n = n + 1 end
  if n >= max then
    self:_abort(c, ('more than %d gifts outstanding'):format(max))
    error(c.lostError, 0)
  end
end

--- deposit-gift on our bootstrap object, from gifter session c.
function Remote:_deposit(c, giftId, ref)
  giftId = bytesOf(giftId)
  if not giftId then error(pass.makeError('deposit-gift: the gift id must be bytes'), 0) end
  local key = sessionId(c) .. giftId
  local waiter = self.giftWaiters[key]
  if waiter then
    self.giftWaiters[key] = nil
    waiter.gifter.waits[key], waiter.receiver.waits[key] = nil, nil
    waiter.kit.resolve(ref)
  else
    if self.gifts[key] ~= nil then error(pass.makeError('deposit-gift: a gift with this id is waiting'), 0) end
    self:_checkGifts(c)
    self.gifts[key] = ref
    c.gifts[key] = true
  end
end

--- When session c ends, the gifts it deposited go (no one can withdraw
--- them: a withdrawal needs a session with the gifter), withdrawals
--- waiting for its deposits break, and its own withdrawals are forgotten.
function Remote:_dropGifts(c)
  for key in pairs(c.gifts) do self.gifts[key] = nil end
  c.gifts = {}
  for key in pairs(c.waits) do
    local w = self.giftWaiters[key]
    if w then
      self.giftWaiters[key] = nil
      w.gifter.waits[key], w.receiver.waits[key] = nil, nil
      w.kit.reject(pass.makeError("withdraw-gift: the gifter's session ended"))
    end
  end
  c.waits = {}
end

--- Records that session c used handoff count n, so that no replay of a
--- withdrawal is taken. What is kept is bounded: every count up to
--- c.handoffUpTo counts as used, and only the used counts above it are
--- kept, at most HANDOFF_COUNTS of them. A peer that counts up from 0
--- keeps none (the bound follows it); one that skips counts has the
--- lowest it used folded into the bound once it passes HANDOFF_COUNTS,
--- and the counts it skipped below are refused from then on (a refused
--- count costs the receiver a fresh one, never a replay).
local function useHandoffCount(c, n)
  local used, upTo = c.handoffCounts, c.handoffUpTo
  used[n] = true
  local kept = c.nhandoffCounts + 1
  if kept > HANDOFF_COUNTS then
    local low = n
    for k in pairs(used) do
      if k < low then low = k end
    end
    used[low], upTo, kept = nil, low, kept - 1
  end
  -- Counts are never negative: upTo + 1 wraps only past math.maxinteger,
  -- to a key never used.
  while used[upTo + 1] do
    upTo = upTo + 1
    used[upTo], kept = nil, kept - 1
  end
  c.handoffUpTo, c.nhandoffCounts = upTo, kept
end

--- withdraw-gift on our bootstrap object, from receiver session c: the
--- gift, or a promise of it until the gifter deposits it.
function Remote:_withdraw(c, signedReceive)
  local receive, rsig = openEnvelope(signedReceive, 'desc:handoff-receive')
  if not receive or #receive.args ~= 4 then handoffError('not a signed desc:handoff-receive') end
  local rsession, _, count, signedGive = unpack(receive.args, 1, 4)
  local give, gsig = openEnvelope(signedGive, 'desc:handoff-give')
  if not give or #give.args ~= 5 then handoffError('not a signed desc:handoff-give') end
  local receiverKey = captp.parsePubkey(give.args[1])
  local gsession, gifterSide, giftId = bytesOf(give.args[3]), bytesOf(give.args[4]), bytesOf(give.args[5])
  if not receiverKey or not gsession or not gifterSide or not giftId then
    handoffError('malformed desc:handoff-give')
  end
  if bytesOf(rsession) ~= sessionId(c) then handoffError('the handoff names another receiving session') end
  if math.type(count) ~= 'integer' or count < 0 then handoffError('bad handoff count') end
  if not c.handoffCounts then c.handoffCounts, c.handoffUpTo, c.nhandoffCounts = {}, -1, 0 end
  if count <= c.handoffUpTo then
    handoffError(('handoff count %d is no longer accepted (only counts above %d are)'):format(count, c.handoffUpTo))
  end
  if c.handoffCounts[count] then handoffError(('handoff count %d was used before'):format(count)) end
  if not crypto.verify(receiverKey, syrup.encode(receive), rsig) then handoffError('bad receiver signature') end
  local gifter
  for _, s in pairs(self.conns) do
    if s.state == 'open' and sessionId(s) == gsession then gifter = s end
  end
  if not gifter then handoffError('no session with the gifter') end
  if captp.sideId(gifter.theirPk) ~= gifterSide or not crypto.verify(gifter.theirPk, syrup.encode(give), gsig) then
    handoffError('bad gifter signature')
  end
  useHandoffCount(c, count)
  local key = gsession .. giftId
  local gift = self.gifts[key]
  if gift ~= nil then
    self.gifts[key] = nil
    gifter.gifts[key] = nil
    return gift
  end
  if self.giftWaiters[key] then handoffError('a withdrawal of this gift is waiting') end
  self:_checkGifts(c)
  local kit = promise.makePromiseKit()
  self.giftWaiters[key] = { kit = kit, gifter = gifter, receiver = c }
  gifter.waits[key], c.waits[key] = true, true
  return kit.promise
end

--- A signed desc:handoff-give for the peer of session c, of an import of
--- another session (info), deposited there as a gift.
function Remote:_give(c, info)
  local e = info.c
  local giftId = crypto.random(32)
  self:_send(e, op('op:deliver-only', desc('desc:export', 0),
    list(sym('deposit-gift'), syrup.bytes(giftId), desc('desc:export', info.pos))))
  local give = op('desc:handoff-give', captp.pubkeyValue(c.theirPk), captp.peerValue(e.peerLocation),
    syrup.bytes(sessionId(e)), syrup.bytes(captp.sideId(e.pk)), syrup.bytes(giftId))
  return op('desc:sig-envelope', give, captp.sigValue(crypto.sign(e.sk, syrup.encode(give))))
end

--- A promise of the object a desc:handoff-give from session c names: we
--- open a session with its exporter and withdraw the gift.
function Remote:_receiveHandoff(c, signedGive)
  local give = openEnvelope(signedGive, 'desc:handoff-give')
  local loc = give and #give.args == 5 and captp.parsePeer(give.args[2])
  if not loc then violation('malformed desc:handoff-give') end
  local kit = promise.makePromiseKit()
  self:_withSession(loc, function(e, err)
    if not e then return kit.reject(err) end
    e.nextHandoff = e.nextHandoff or 0
    local count = e.nextHandoff
    e.nextHandoff = count + 1
    local receive = op('desc:handoff-receive', syrup.bytes(sessionId(e)), syrup.bytes(captp.sideId(e.pk)), count,
      signedGive)
    local signed = op('desc:sig-envelope', receive, captp.sigValue(crypto.sign(c.sk, syrup.encode(receive))))
    kit.resolve(self:_question(e, desc('desc:export', 0), 'withdraw-gift', pack(signed)))
  end)
  return kit.promise
end

-- ---- sending to imports ----

--- A message to an import: an op:deliver with an answer position (so the
--- peer can take pipelined messages) and a resolver of ours.
function Remote:_call(info, method, args)
  return self:_question(info.c, desc('desc:export', info.pos), method, args)
end

--- Sends method(args) to `to` (a desc:export or desc:answer of the peer's)
--- and returns a promise of the answer. Until it settles, messages sent to
--- that promise go to the answer position at once (pipelining).
function Remote:_question(c, to, method, args)
  return (self:_ask(c, to, method, args))
end

--- _question, which also returns the answer's position when it asked.
function Remote:_ask(c, to, method, args)
  if c.closed then return promise.reject(c.lostError) end
  local ok, argv = pcall(function()
    local a = list()
    local n = args.n or #args
    local base = 0
    if method ~= '__call' then
      a[1] = sym(method)
      base = 1
    end
    for i = 1, n do a[base + i] = self:_out(c, args[i]) end
    if base + n > #a then a.n = base + n end
    return a
  end)
  if not ok then return promise.reject(pass.isError(argv) and argv or pass.makeError(tostring(argv))) end
  if c.closed then return promise.reject(c.lostError) end
  local max = self.opts.limits.maxQuestions
  if c.nquestions >= max then
    -- A peer that never answers would have our questions pile up.
    self:_abort(c, ('more than %d questions outstanding'):format(max))
    return promise.reject(c.lostError)
  end
  c.nquestions = c.nquestions + 1
  local qpos = c.nextQuestion
  c.nextQuestion = qpos + 1
  local kit = promise.makePromiseKit()
  c.questions[qpos] = kit
  local rpos
  rpos = internalExport(c, function(m, a)
    if m ~= 'fulfill' and m ~= 'break' then error(pass.makeError('a resolver takes fulfill or break'), 0) end
    c.internal[rpos] = nil
    if c.questions[qpos] then
      c.questions[qpos] = nil
      c.nquestions = c.nquestions - 1
      -- The answer is settled here: the peer may reuse its position, and
      -- messages to it now go where it points.
      liveslots.setPipeline(kit.promise, nil)
      c.gcAnswers[#c.gcAnswers + 1] = qpos
      self.dirty[c] = true
      if m == 'fulfill' then kit.resolve(a[1]) else kit.reject(a[1]) end
    end
  end)
  liveslots.setPipeline(kit.promise, function(m, a)
    return self:_question(c, desc('desc:answer', qpos), m, a)
  end)
  self:_send(c, op('op:deliver', to, argv, qpos, desc('desc:import-object', rpos)))
  return kit.promise, qpos
end

-- ---- deliveries to the peers' endpoints ----

--- The host values of capdata in endpoint ep's erefs: its slots become
--- krefs, and an object among them is put in the host's c-list as the
--- kernel does for a delivery to the host, since the host's liveslots
--- holds it from now on.
function Remote:_fromEndpoint(ep, body, slots)
  local K, krefs = self.K, nil
  if slots and slots[1] then
    krefs = {}
    for i, eref in ipairs(slots) do
      local kref = K:krefOf(ep, eref)
      if not kref then error(('no kref for %s of %s'):format(eref, ep), 0) end
      if kref:sub(1, 2) == 'ko' then K:import('kernel', kref) end
      krefs[i] = kref
    end
  end
  return self.ls.marshal.unserialize({ body = body, slots = krefs or {} })
end

--- Resolves `result`, a promise endpoint ep decides, as p settled: the
--- host encodes the value (in krefs), which the endpoint's c-list then
--- names. A session that ended meanwhile has had its endpoint's promises
--- rejected already.
function Remote:_resolveResult(c, result, p)
  promise.onSettle(p, function(ok, v)
    local rq = c.resultQ[result]
    if rq then c.resultQ[result] = nil end
    self:_settle(c, result, ok, v)
  end)
end

--- Settles eref, a promise session c's endpoint decides, with the host
--- value v.
function Remote:_settle(c, eref, ok, v)
  if not self.byEp[c.ep] or self.closed then return end
  local done, cd = pcall(self.ls.marshal.serialize, v)
  if not done then
    ok = false
    cd = self.ls.marshal.serialize(pass.makeError('result is not passable: ' .. tostring(cd)))
  end
  local slots
  if cd.slots[1] then
    slots = {}
    for i, kref in ipairs(cd.slots) do slots[i] = self.K:import(c.ep, kref) end
  end
  self.K:resolve(eref, not ok, cd.body, slots, c.ep)
  self:_release(c, slots)
end

--- Lets go of what the erefs (capdata's slots that session c's endpoint
--- was delivered or resolved with) put in its c-list and the peer does
--- not hold, as a vat's liveslots lets go of what it does not reach:
--- an object of ours stays only while the peer holds it (erefUses, its
--- op:gc-export releases it), and a promise of ours until it settles (the
--- endpoint subscribes, and the notify retires the entry). Else each
--- would keep what it names alive for as long as the session lasts.
function Remote:_release(c, erefs)
  if not erefs then return end
  local drop, seen = nil, {}
  for _, eref in ipairs(erefs) do
    if not seen[eref] then
      seen[eref] = true
      local k = eref:sub(1, 2)
      if k == 'o-' and not c.erefUses[eref] then
        drop = drop or {}
        drop[#drop + 1] = eref
      elseif k == 'p-' then
        self.K:subscribe(eref, c.ep)
      end
    end
  end
  if drop then
    self.K:dropImports(drop, c.ep)
    self.K:retireImports(drop, c.ep)
  end
end

--- Whether the peer takes the messages for rq's promise (resultQ).
local function takes(rq)
  if rq.to then return not rq.settled end
  return promise.state(rq.p) == 'pending'
end

--- A message the kernel routes to session c's endpoint: to one of its
--- objects (`o+pos`, an import) or to a promise it decides (an answer
--- still pending, `resultQ`). It goes on the wire as an op:deliver whose
--- answer the endpoint decides as `result`.
function Remote:_endpointMessage(c, target, body, slots, result)
  local p
  local ok, err = pcall(function()
    local ma = self:_fromEndpoint(c.ep, body, slots)
    local method, args = ma[1], ma[2] or {}
    if type(method) == 'table' and method.name then method = method.name end
    if method == nil then method = '__call' end
    local to, rq
    if target:sub(1, 2) == 'o+' then
      to = desc('desc:export', math.tointeger(tonumber(target:sub(3))))
    else
      rq = c.resultQ[target]
    end
    if rq and takes(rq) then to = rq.to or desc('desc:answer', rq.q) end
    local qpos
    if to then
      p, qpos = self:_ask(c, to, method, args)
    elseif rq then
      -- The answer came: the message follows it.
      p = E(rq.p or rq.promise)[method](unpack(args, 1, args.n or #args))
    else
      p = promise.reject(c.lostError or pass.makeError('no answer of the peer for ' .. target))
    end
    if result and qpos then c.resultQ[result] = { q = qpos, p = p } end
  end)
  if not ok then p = promise.reject(pass.isError(err) and err or pass.makeError(tostring(err))) end
  if result then self:_resolveResult(c, result, p) end
end

--- The kernel's deliveries to the peers' endpoints (K:setPeerDispatch).
function Remote:_dispatch(ep, what, a, b, d, e)
  local c = self.byEp[ep]
  if what == 'pipelines' then
    local rq = c and not c.closed and c.resultQ[a]
    return rq ~= nil and rq ~= false and takes(rq)
  end
  if not c then
    -- An endpoint no session of ours serves (not one of this kernel's
    -- sessions): its message is refused, and its result rejects with
    -- this, rather than vanish.
    if what == 'message' then
      return ('[KERNEL:CONNECTION_LOST] peer endpoint %s has no session'):format(tostring(ep))
    end
    return
  end
  if what == 'message' then
    self:_endpointMessage(c, a, b, d, e)
    self:_release(c, d)
  elseif what == 'notify' then
    -- The endpoint subscribes only to retire what it named (_release):
    -- the settlement's own slots are not the peer's either.
    if b == nil then
      for _, r in ipairs(a) do self:_release(c, r[4]) end
    else
      self:_release(c, e)
    end
  elseif what == 'dropExports' then
    -- Nothing in this kernel reaches these imports: the peer is told how
    -- many times each came, and the endpoint forgets them.
    local pos, deltas, refs = list(), list(), {}
    for _, eref in ipairs(a) do
      local n = math.tointeger(tonumber(eref:sub(3)))
      local info = n and c.importAt[n]
      if info then
        pos[#pos + 1], deltas[#deltas + 1], refs[#refs + 1] = n, info.count, eref
        c.importAt[n], c.imports[n] = nil, nil
        self.byKref[info.kref] = nil
        c.nimports = c.nimports - 1
      end
    end
    if refs[1] then
      if not c.closed then self:_send(c, op('op:gc-export', pos, deltas)) end
      self.K:retireExports(refs, ep)
    end
  elseif what == 'retireImports' then
    -- Objects of ours the peer held are gone (their vat was terminated,
    -- say): the endpoint no longer names them.
    for _, eref in ipairs(a) do
      c.erefUses[eref] = nil
      for p, x in pairs(c.exportEref) do
        if x == eref then c.exportEref[p] = nil end
      end
    end
  end
end

-- ---- dialling ----

--- Runs fn(session) once a session with loc is open (or fn(nil, err)).
--- The session is on the netlayer loc names, which this kernel must have.
function Remote:_withSession(loc, fn)
  if self.closed then return fn(nil, kernelError('ENDPOINT_UNREACHABLE', 'remote comms are closed')) end
  local layer = self.layerOf[loc.transport]
  if layer and loc.designator == layer.designator then
    return fn(nil, kernelError('ENDPOINT_UNREACHABLE', 'cannot open a session with this kernel itself'))
  end
  local key = peerKey(loc.transport, loc.designator)
  local c = self.sessions[key]
  if c and c.state == 'open' then return fn(c) end
  if c then
    -- A dial of ours is on its way: fn waits for it with the others.
    local w = self.waiting[key] or {}
    self.waiting[key] = w
    w[#w + 1] = fn
    return
  end
  if not layer then
    return fn(nil, kernelError('ENDPOINT_UNREACHABLE', ('no netlayer %q here'):format(loc.transport)))
  end
  local host, port = loc.hints.host, tonumber(loc.hints.port)
  local conn, err
  local max = self.opts.limits.maxOutboundConnections
  if self.outbound >= max then
    -- Peers can make us dial (a handoff names any location): what they
    -- make us hold open is bounded as what they open to us is.
    err = ('more than %d outbound connections'):format(max)
  elseif host and port then
    conn, err = net.connect(self.K, host, port, layer.onEvent, layer.tls, layer.tls and loc.designator)
  end
  if not conn then
    local why = err or 'the locator has no host and port hints'
    return fn(nil, kernelError('ENDPOINT_UNREACHABLE', ('cannot reach %s: %s'):format(loc.designator, why)))
  end
  c = self:_newSession(conn, true, loc.designator, layer, key)
  c.dialled = true
  self.outbound = self.outbound + 1
  self.sessions[key] = c
  self.waiting[key] = { fn }
  -- A peer that accepts and never finishes the TLS handshake (or never
  -- answers our hello) does not keep the dial waiting for ever.
  conn:setTimer(self.opts.handshakeTimeout)
end

--- A promise of the object a sturdyref designates (a URL or an
--- `<ocapn-sturdyref ...>` record).
function Remote:redeem(ref)
  local loc, swiss
  if type(ref) == 'string' then
    loc, swiss = captp.parseURL(ref)
    if loc and not swiss then swiss, loc = nil, nil end
  else
    loc, swiss = captp.parseSturdyref(ref)
  end
  if not loc then
    return promise.reject(pass.makeError(('redeemOcapURL: %s'):format(swiss or 'not a sturdyref URL')))
  end
  local kit, fetched = promise.makePromiseKit(), nil
  self:_withSession(loc, function(c, err)
    if not c then return kit.reject(err) end
    local boot = self:_import(c, 0)
    fetched = self:_call(importInfo[boot], 'fetch', pack(syrup.bytes(swiss)))
    kit.resolve(fetched)
  end)
  -- With the session open already, the fetch's answer itself: messages
  -- to the object, a vat's included, are pipelined on it at once.
  return fetched or kit.promise
end

--- Registers obj under a swiss number (a new one when not given) and
--- returns its sturdyref URL on netlayer `name` (the first when not
--- given). A kernel object's (a kref or presence) is kept in the
--- database; a host object's lives as long as this kernel. Either is
--- reached under the same swiss number on every netlayer.
function Remote:issue(obj, swiss, name)
  if swiss ~= nil and (type(swiss) ~= 'string' or swiss == '') then
    error('issueOcapURL: the swiss number must be a non-empty string', 3)
  end
  local layer = self.layers[1]
  if name ~= nil then
    layer = self.layerOf[name]
    if not layer then error(('issueOcapURL: no netlayer %q here'):format(tostring(name)), 3) end
  end
  swiss = swiss or newSwiss()
  local kref
  if type(obj) == 'string' then
    kref = obj
  else
    local ref, ls = liveslots.refOf(obj)
    if ref and ls == self.ls then kref = ref end
  end
  if kref then
    self.K:kvSet('remote.sturdy.' .. hex.encode(swiss), kref)
    self.K:commit()
  elseif pass.isRemotable(obj) or promise.isPromise(obj) then
    self.sturdy[swiss] = obj
  else
    error('issueOcapURL: expected a kref, a presence or a remotable', 3)
  end
  return captp.formatURL(layer.location, swiss)
end

-- ---- the pump ----

--- Handles what the netlayer reported, then writes what sessions queued,
--- after committing (and flushing) the cranks that produced it. Returns
--- true when it handled something.
function Remote:pump()
  if self.closed then return false end
  -- Only between cranks: what a running crank queued for peers leaves
  -- once it has committed (a crank that rolls back must not have told a
  -- peer anything), and ended sessions' endpoints are terminated outside
  -- any crank. Host code inside a crank reaches here when it drives the
  -- kernel, which K:drive then refuses.
  if self.K:inCrank() then return false end
  local did, active = false, false
  if self.ended[1] then
    did = true
    self:_endEndpoints()
  end
  local events = self.events
  if events[1] then
    self.events = {}
    did = true
    for _, e in ipairs(events) do
      local conn, event, data, layer = e[1], e[2], e[3], e[4]
      local c = self.conns[conn]
      if event == 'accept' then
        local max = self.opts.limits.maxConnections
        if self.inbound >= max then
          -- Refused before it costs a session: no keys, no tables.
          local reason = ('more than %d connections'):format(max)
          self.counts.aborted = self.counts.aborted + 1
          self:_log('warn', 'refusing a connection: ' .. reason)
          conn:write(syrup.encode(op('op:abort', reason)))
          conn:close()
        else
          -- A dialled peer speaks first: our hello answers a valid one.
          self.inbound = self.inbound + 1
          self:_newSession(conn, false, nil, layer).counted = true
          conn:setTimer(self.opts.handshakeTimeout)
        end
      elseif c and event == 'open' then
        c.opened = true
        self:_hello(c)
      elseif c and event == 'data' then
        active = true
        self:_onData(c, data)
      elseif c and event == 'timeout' then
        if c.state == 'hello' then
          self:_abort(c, ('no op:start-session within %d ms'):format(self.opts.handshakeTimeout))
        else
          c.gcArmed = false
          self.gcDue = true
        end
      elseif c and event == 'eof' then
        self:_lost(c, tostring(data))
      elseif c and event == 'tlserror' then
        -- The channel is broken: no op:abort can cross it.
        self.counts.aborted = self.counts.aborted + 1
        self:_log('warn', ('closing the connection with %s: %s'):format(tostring(c.peer or 'unknown peer'), data))
        self:_lost(c, tostring(data))
      end
    end
  end
  self:_collect(self.gcDue)
  if self.ended[1] then
    did = true
    self:_endEndpoints()
  end
  if next(self.dirty) then
    did, active = true, true
    self:_write()
  end
  if active then
    -- Imports that nobody holds any more are found by a full collection
    -- soon after the activity that may have dropped them; Lua's own
    -- collector finds them too, later, while the kernel stays busy.
    for _, c in pairs(self.conns) do
      if c.state == 'open' and not c.gcArmed and next(c.imports) then
        c.gcArmed = true
        c.conn:setTimer(GC_DELAY)
      end
    end
  end
  return did
end

--- Commits (and flushes) the store, then writes what the sessions
--- queued; an aborted session's connection closes after its op:abort.
function Remote:_write()
  self.K:commit()
  self.kernel:_flushIfNeeded()
  local dirty = self.dirty
  self.dirty = {}
  for c in pairs(dirty) do
    if not c.closed then
      if c.gcAnswers[1] then
        c.out[#c.out + 1] = syrup.encode(op('op:gc-answer', list(unpack(c.gcAnswers))))
        c.gcAnswers = {}
      end
      if c.out[1] then
        c.conn:write(table.concat(c.out))
        c.out, c.outBytes = {}, 0
      end
    elseif c.aborting then
      c.conn:write(table.concat(c.out))
      c.out, c.outBytes = {}, 0
      c.conn:close()
    end
  end
end

--- Sends the op:gc-export of imports Lua collected, after a full
--- collection when full is true.
function Remote:_collect(full)
  if full then
    self.gcDue = false
    collectgarbage()
    -- The host's liveslots tells the kernel of the imports it no longer
    -- holds at a reap; the kernel then has the peers told (dropExports).
    -- A reap is asked for only when the collection took the presence of
    -- an import: it costs a collection of its own.
    local reap = false
    for _, c in pairs(self.conns) do
      for pos, info in pairs(c.importAt) do
        if not info.hostGone and c.imports[pos] == nil then
          info.hostGone = true
          reap = true
        end
      end
    end
    if reap then self.K:reapAll(true) end
  end
  for _, c in pairs(self.conns) do
    local q = c.gcQueue
    if q[1] then
      c.gcQueue = {}
      local pos, deltas = list(), list()
      for i, e in ipairs(q) do pos[i], deltas[i] = e[1], e[2] end
      self:_send(c, op('op:gc-export', pos, deltas))
    end
  end
end

--- After the kernel's reaps: the kernel objects they released may have
--- been imports, which a full collection now finds (op:gc-export).
function Remote:afterReap()
  self.gcDue = true
end

--- Whether anything waits to be handled.
function Remote:busy()
  return self.events[1] ~= nil or next(self.dirty) ~= nil or self.gcDue == true or self.ended[1] ~= nil
end

--- Aborts every session with reason, and terminates their endpoints.
function Remote:endSessions(reason)
  local list_ = {}
  for _, c in pairs(self.conns) do list_[#list_ + 1] = c end
  for _, c in ipairs(list_) do self:_abort(c, reason) end
  self:_endEndpoints()
  self:_write()
end

--- Closes every session and stops listening.
function Remote:close()
  if self.closed then return end
  self:endSessions('kernel stopped')
  for _, layer in ipairs(self.layers) do layer.server:close() end
  self.closed = true
  -- The handles' close callbacks run on the loop; give them their turn.
  self.K:runLoop(false)
end

return M
