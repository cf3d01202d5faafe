--- The ocap daemon: a kernel that keeps running in the background for a
--- home directory, controlled with JSON-RPC 2.0 over a Unix socket, one
--- request per line (docs/daemon.md).
---
--- Files in the home directory: `db/` (the kernel's LevelDB database, the
--- one `ocap caplet` uses), `daemon.sock` (the control socket, mode 0600),
--- `daemon.pid`, `daemon.lock` (the spawn lock: an flock held for the
--- daemon's lifetime, so a killed daemon releases it) and `daemon.log`
--- (one JSON object per line, rotated to `daemon.log.1` at LOG_LIMIT).
---
--- The socket is served on the kernel's own libuv loop. Its callbacks only
--- queue request lines; requests are handled between crank batches, and a
--- request whose answer is a promise is answered when it settles, so a slow
--- request never holds up cranks and no crank waits for a client.
local M = {}

local cjson = require 'cjson.safe'
local rpc = require('ocap.core').rpc
local promise = require 'ocap.promise'

-- The log's size limit: 1 MiB, or $OCAP_DAEMON_LOG_LIMIT bytes.
M.LOG_LIMIT = math.tointeger(tonumber(os.getenv('OCAP_DAEMON_LOG_LIMIT') or '')) or 1024 * 1024

-- JSON-RPC 2.0 error codes.
local PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, FAILED = -32700, -32600, -32601, -32602,
  -32000

--- The files of the daemon of home.
---@param home string
function M.paths(home)
  return { home = home, db = home .. '/db', sock = home .. '/daemon.sock', pid = home .. '/daemon.pid',
    lock = home .. '/daemon.lock', log = home .. '/daemon.log' }
end

--- The home directory named by a flag, $OCAP_HOME, or ~/.ocap.
function M.home(flag)
  return flag or os.getenv('OCAP_HOME') or ((os.getenv('HOME') or '.') .. '/.ocap')
end

--- Creates home (mode 0700) if missing; refuses one owned by another user
--- or writable by others, where someone else could replace the socket.
---@return boolean|nil ok
---@return string|nil err
function M.checkHome(home)
  local ok, err = rpc.mkdir(home)
  if not ok then return nil, ('cannot create home directory %s: %s'):format(home, err) end
  local uid, mode, me = rpc.owner(home)
  if not uid then return nil, ('cannot inspect home directory %s: %s'):format(home, mode) end
  if uid ~= me then return nil, ('home directory %s is owned by another user (uid %d)'):format(home, uid) end
  if mode & 18 ~= 0 then -- 0o022: group- or world-writable
    return nil, ('home directory %s is writable by other users (mode %o)'):format(home, mode)
  end
  return true
end

--- Sends one request to the daemon of home; returns the decoded answer
--- object, or nil and why (no daemon, or an answer that is not JSON).
function M.call(home, method, params)
  local line = cjson.encode({ jsonrpc = '2.0', id = 1, method = method, params = params or {} })
  local reply, err = rpc.call(M.paths(home).sock, line)
  if not reply then return nil, err end
  local answer = cjson.decode(reply)
  if type(answer) ~= 'table' then return nil, 'the daemon answered with something that is not JSON' end
  return answer
end

--- The pid in home's pid file, if any.
function M.pidOf(home)
  local f = io.open(M.paths(home).pid, 'r')
  if not f then return nil end
  local pid = tonumber(f:read('l') or '')
  f:close()
  return pid
end

--- Whether a daemon answers on home's socket.
function M.running(home)
  local answer = M.call(home, 'ping')
  return answer ~= nil and answer.result ~= nil
end

-- A JSON-friendly copy of a result: presences and promises become their
-- krefs, errors their message, other values that JSON cannot hold their
-- tostring.
local function plain(kernel, v, depth)
  depth = depth or 0
  if depth > 64 then return '<too deep>' end
  local t = type(v)
  if t == 'table' then
    local ok, ref = pcall(kernel.krefOf, kernel, v)
    if ok then return ref end
    if getmetatable(v) and v.message and v.name then return { error = tostring(v.message) } end
    local out, n = {}, 0
    for k in pairs(v) do
      if k ~= 'n' then n = n + 1 end
    end
    if n > 0 and #v == n then
      for i = 1, n do out[i] = plain(kernel, v[i], depth + 1) end
      return out
    end
    for k, x in pairs(v) do out[tostring(k)] = plain(kernel, x, depth + 1) end
    return out
  elseif t == 'string' or t == 'number' or t == 'boolean' or v == nil then
    if t == 'number' and (v ~= v or v == math.huge or v == -math.huge) then return tostring(v) end
    return v
  end
  return tostring(v)
end

local function messageOf(e)
  if type(e) == 'table' and e.message then return tostring(e.message) end
  return tostring(e)
end

-- The methods: each takes the kernel context and the params array and
-- returns a value or a promise; raising makes a JSON-RPC error.
local function methods(ctx)
  local kernel, o, omnium = ctx.kernel, ctx.omnium, require 'ocap.omnium'
  local m = {}
  function m.ping() return { pid = rpc.getpid() } end
  function m.getStatus() return kernel:getStatus() end
  function m.getSubclusters() return kernel:getSubclusters() end
  function m.launchSubcluster(config) return kernel:launchSubcluster(config) end
  function m.terminateSubcluster(id) return kernel:terminateSubcluster(id) end
  function m.queueMessage(kref, method, args) return kernel:queueMessage(kref, method, args or {}) end
  function m.revoke(kref) return kernel:revoke(kref) end
  function m.isRevoked(kref) return kernel:isRevoked(kref) end
  function m.pingVat(id) return kernel:pingVat(id) end
  function m.restartVat(id) return kernel:restartVat(id) end
  function m.terminateVat(id, reason) return kernel:terminateVat(id, reason) end
  function m.reapVats() return kernel:reapVats() end
  m['caplet.install'] = function(path) return o.caplet.install(omnium.load(path)) end
  m['caplet.list'] = function() return o.caplet.list() end
  m['caplet.get'] = function(id) return o.caplet.get(id) end
  m['caplet.uninstall'] = function(id, opts) return o.caplet.uninstall(id, opts or {}) end
  m['caplet.call'] = function(id, method, args) return o.caplet.callCapletMethod(id, method, args or {}) end
  function m.stop()
    ctx.stopping = true
    return { stopping = true }
  end
  return m
end

-- Appends a JSON object to the log, rotating it first at LOG_LIMIT.
local function makeLog(path)
  local f = io.open(path, 'a')
  return function(entry)
    if not f then return end
    if f:seek('end') >= M.LOG_LIMIT then
      f:close()
      os.rename(path, path .. '.1')
      f = io.open(path, 'a')
      if not f then return end
    end
    entry.time = entry.time or os.time()
    local line = cjson.encode(entry)
    if not line then
      line = cjson.encode({ time = entry.time, level = entry.level, message = tostring(entry.message) })
    end
    f:write(line, '\n')
    f:flush()
  end
end

-- Answers one request line on conn.
local function handle(ctx, conn, line, reason)
  local function answer(id, result, err)
    local msg = { jsonrpc = '2.0', id = id == nil and cjson.null or id }
    if err then msg.error = err else msg.result = result == nil and cjson.null or result end
    local text = cjson.encode(msg)
    if not text then
      text = cjson.encode({ jsonrpc = '2.0', id = msg.id, error = { code = FAILED, message = 'result is not JSON' } })
    end
    conn:write(text .. '\n')
  end
  if not line then
    ctx.log({ level = 'warn', message = 'request rejected: ' .. reason })
    return answer(nil, nil, { code = INVALID_REQUEST, message = reason .. ' (limit ' .. rpc.MAX_LINE .. ' bytes)' })
  end
  if line:match('^%s*$') then return end
  local req = cjson.decode(line)
  if req == nil then return answer(nil, nil, { code = PARSE_ERROR, message = 'parse error: not JSON' }) end
  if type(req) ~= 'table' or type(req.method) ~= 'string' then
    return answer(type(req) == 'table' and req.id or nil, nil,
      { code = INVALID_REQUEST, message = 'invalid request: an object with a string method is needed' })
  end
  local id = req.id
  local fn = ctx.methods[req.method]
  if not fn then return answer(id, nil, { code = METHOD_NOT_FOUND, message = 'method not found: ' .. req.method }) end
  local params = req.params
  if params == nil or params == cjson.null then params = {} end
  if type(params) ~= 'table' then
    return answer(id, nil, { code = INVALID_PARAMS, message = 'params must be an array' })
  end
  ctx.log({ level = 'info', message = 'request', method = req.method })
  local ok, res = pcall(fn, table.unpack(params, 1, #params))
  local function done(rok, value)
    if rok then
      if req.raw then
        local cok, cd = pcall(require('ocap').marshal.serialize, value)
        if cok then return answer(id, cd) end
      end
      return answer(id, plain(ctx.kernel, value))
    end
    ctx.log({ level = 'warn', message = 'request failed', method = req.method, error = messageOf(value) })
    answer(id, nil, { code = FAILED, message = messageOf(value) })
  end
  if not ok then return done(false, res) end
  if promise.isPromise(res) then
    res:next(function(v) done(true, v) end, function(e) done(false, e) end)
  else
    done(true, res)
  end
end

--- Runs the daemon of home in this process until a `stop` request; the
--- caller has made the home directory safe. Returns an exit status.
function M.serve(home)
  local p = M.paths(home)
  local log = makeLog(p.log)
  if not rpc.lock(p.lock) then
    log({ level = 'warn', message = 'another daemon holds the lock of ' .. home })
    return 3
  end
  -- The lock is ours: a socket or pid file left here belongs to a daemon
  -- that was killed.
  os.remove(p.sock)
  local pf = assert(io.open(p.pid, 'w'))
  pf:write(rpc.getpid(), '\n')
  pf:close()
  local Kernel = require 'ocap.kernel'
  local omnium = require 'ocap.omnium'
  local kernel = Kernel.make { database = p.db, systemSubclusters = { omnium.subcluster() },
    logger = function(entry)
      log({ level = entry.level, vatId = entry.vatId, message = tostring(entry.message) })
    end }
  local ctx = { kernel = kernel, log = log, stopping = false }
  ctx.omnium = omnium.attach(kernel)
  ctx.methods = methods(ctx)
  local queue = {}
  local server, err = rpc.listen(kernel.K, p.sock, function(conn, line, reason)
    if conn == nil then
      log({ level = 'info', message = 'stopping on ' .. reason })
      ctx.stopping = true
    else
      queue[#queue + 1] = { conn, line, reason }
    end
  end)
  if not server then
    log({ level = 'error', message = 'cannot listen on ' .. p.sock .. ': ' .. tostring(err) })
    kernel:stop()
    os.remove(p.pid)
    return 1
  end
  log({ level = 'info', message = 'daemon started', pid = rpc.getpid(), home = home })
  local K = kernel.K
  while not ctx.stopping do
    while #queue > 0 do
      local q = table.remove(queue, 1)
      local ok, herr = pcall(handle, ctx, q[1], q[2], q[3])
      if not ok then log({ level = 'error', message = 'request handler failed: ' .. tostring(herr) }) end
    end
    -- One bounded batch of cranks, then the host turns it made.
    if promise.hasTurns() then kernel:_flushIfNeeded() end
    promise.drain()
    local ran, visible = K:drive(64, 512)
    if visible then kernel:_afterHostCode() end
    kernel:_settleReaps() -- reapVats() promises whose reaps are done
    -- Turns may have been queued during the batch (its poll of the loop
    -- runs IO callbacks, which settle host promises); running them may
    -- queue cranks, so the daemon sleeps only when no turn ran either.
    local turned = promise.hasTurns()
    if turned then
      kernel:_flushIfNeeded()
      promise.drain()
    end
    if ran == 0 and not turned and not promise.hasTurns() and #queue == 0 and not ctx.stopping then
      -- Idle: commit, then sleep until a client, a timer or IO wakes us.
      kernel:_flushIfNeeded()
      K:runLoop(true)
    end
  end
  -- Let the answer to `stop` go out before the socket closes.
  K:runLoop(false)
  server:close()
  kernel:stop()
  os.remove(p.sock)
  os.remove(p.pid)
  log({ level = 'info', message = 'daemon stopped' })
  return 0
end

--- Starts the daemon of home in the background unless one runs; returns
--- its pid and whether it was already running, or nil and why.
---
--- The parent polls the socket (a bounded number of times) rather than
--- waiting for its child: when two starts race, the losing child exits at
--- the lock and the parent finds the winner answering.
---@param home string
---@param tries integer|nil polls, 50 ms apart (default 600)
---@param onWait fun(polls: integer)|nil called at each poll, for progress
function M.start(home, tries, onWait)
  if M.running(home) then return M.pidOf(home), true end
  local pid = rpc.daemonize()
  if pid == 0 then os.exit(M.serve(home), false) end
  for i = 1, tries or 600 do
    if M.running(home) then
      local now = M.pidOf(home)
      return now, now ~= pid
    end
    if onWait then onWait(i) end
    os.execute('sleep 0.05')
  end
  return nil, 'the daemon did not start; see ' .. M.paths(home).log
end

return M
