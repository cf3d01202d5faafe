--- IO channels (ClusterConfig.io, docs/io.md): line-oriented streams on
--- the kernel's libuv loop (ocap.core's io, core/lio.c), handed to a
--- subcluster's bootstrap vat as kernel services under their names.
---
--- A channel is an exo with `read()` (a promise of the next line, nil at
--- the end of input), `write(s)` (a promise settled once s and a newline
--- are written) and `address()`. Every call answers with a promise and
--- never raises; a vat sees its rejections as any service's failures:
--- `[KERNEL:DELIVERY_FAILED] IO channel "log" is read-only`.
---
--- The life of a subcluster's channels: `open` makes them before anything
--- else of the launch is checked (a bad path fails the launch), `close`
--- undoes that when the launch fails, `attach` registers them as the
--- services `io:<subclusterId>:<name>` once the subcluster exists (their
--- krefs are kept in the database, so a vat's reference survives a
--- restart), `restore` reopens them when a kernel starts on a database
--- that has them, and `detach` closes them when the subcluster ends.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local exo = require 'ocap.exo'
local lio = require('ocap.core').io

local M = {}

--- The longest line a channel reads (longer ones are dropped, and the
--- read that meets one is rejected), and the most bytes of writes a
--- channel holds before they are done.
M.MAX_LINE, M.MAX_QUEUED = lio.MAX_LINE, lio.MAX_QUEUED

-- A vat gets these as any service's failure, after the prefix
-- `[KERNEL:DELIVERY_FAILED] `.
local function ioError(msg) return pass.makeError(msg) end
local function rejection(msg) return promise.reject(ioError(msg)) end

--- Splits "host:port", "[v6]:port", ":port" or "port" (the host then
--- being the loopback); nil and why for anything else.
---@return string|nil host
---@return integer|string port or the reason
function M.parseHostport(hostport)
  local host, port = hostport:match('^%[([%x:%.]+)%]:(%d+)$')
  if not host then host, port = hostport:match('^([^:]*):(%d+)$') end
  if not host then port = hostport:match('^(%d+)$') end
  port = port and math.tointeger(tonumber(port))
  if not port or port > 65535 then return nil, 'must be "host:port" with a port from 0 to 65535' end
  if host == nil or host == '' then host = '127.0.0.1' end
  return host, port
end

-- Makes the C side of a channel; returns it, or nil and the launch error.
local function openC(kernel, name, cfg, readable, writable, notify)
  local at = 'ClusterConfig.io.' .. name
  local K, t = kernel.K, cfg.type
  local ch, err, field, target
  if t == 'socket' or t == 'file' then
    field, target = 'path', cfg.path
    local path = kernel:_resolvePath(cfg.path)
    if t == 'socket' then
      ch, err = lio.socket(K, path, notify)
    else
      ch, err = lio.file(K, path, readable, writable, notify)
    end
  elseif t == 'listen' or t == 'network' then
    field, target = 'hostport', cfg.hostport
    local host, port = M.parseHostport(cfg.hostport)
    if not host then return nil, ('%s.hostport: %s, got %q'):format(at, port, cfg.hostport) end
    if t == 'listen' then
      ch, err = lio.listen(K, host, port, notify)
    else
      ch, err = lio.connect(K, host, port, notify)
    end
  elseif t == 'console' then
    ch, err = lio.console(K, readable, writable, notify)
  else
    return nil, ('%s.type: unknown IO channel type %q'):format(at, tostring(t))
  end
  if ch then return ch end
  local verb = ({ socket = 'cannot listen on', file = 'cannot open', listen = 'cannot listen on',
    network = 'cannot connect to' })[t]
  if field then return nil, ('%s.%s: %s %q: %s'):format(at, field, verb, target, tostring(err)) end
  return nil, ('%s: cannot open the console: %s'):format(at, tostring(err))
end

--- Opens one channel. Returns the channel record, or nil and the error
--- naming `ClusterConfig.io.<name>`.
---@param kernel table the host-side kernel
---@param name string
---@param cfg table the IOConfig (checked by ocap.config)
function M.open(kernel, name, cfg)
  local direction = cfg.direction or 'inout'
  local readable, writable = direction ~= 'out', direction ~= 'in'
  local c = { name = name, config = cfg, readers = {}, writes = {}, waiting = {}, token = 0,
    connected = cfg.type ~= 'network' }
  local function says(what) return ('IO channel "%s" %s'):format(name, what) end
  -- What a read or a write does to the channel is done at once, or, from
  -- host code inside a crank, once the crank has committed.
  local function afterCommit(fn)
    if kernel.K:inCrank() then return kernel:_afterCrank(fn) end
    return fn()
  end

  -- Settles waiting readers while the C side has lines (or an end) for them.
  local function pump()
    local readers = c.readers
    while readers[1] do
      if c.failed or c.closed then
        table.remove(readers, 1).reject(ioError(c.failed or says('is closed')))
      else
        local line, err = c.ch:read()
        if line == false then return end
        local kit = table.remove(readers, 1)
        if line == nil and err then
          kit.reject(ioError(says(err)))
        else
          kit.resolve(line)
        end
      end
    end
  end

  local function startWrite(s, kit)
    c.token = c.token + 1
    local ok, err = c.ch:write(s, c.token)
    if not ok then return kit.reject(ioError(says('cannot write: ' .. err))) end
    c.writes[c.token] = kit
  end

  local function notify(event, token, err)
    if event == 'input' then
      pump()
    elseif event == 'written' then
      local kit = c.writes[token]
      c.writes[token] = nil
      if not kit then return end
      if err then kit.reject(ioError(says('write failed: ' .. err))) else kit.resolve(nil) end
    elseif event == 'connected' then
      if err then
        c.failed = says(('cannot connect to %s: %s'):format(cfg.hostport, err))
        for _, w in ipairs(c.waiting) do w[2].reject(ioError(c.failed)) end
      else
        c.connected = true
        for _, w in ipairs(c.waiting) do startWrite(w[1], w[2]) end
      end
      c.waiting = {}
    end
  end

  local ch, err = openC(kernel, name, cfg, readable, writable, notify)
  if not ch then return nil, err end
  c.ch = ch

  c.object = exo.makeDefaultExo('IOChannel ' .. name, {
    read = function()
      if not readable then return rejection(says('is write-only')) end
      if c.failed or c.closed then return rejection(c.failed or says('is closed')) end
      local kit = promise.makePromiseKit()
      -- A read takes a line: from a crank, only once that crank has
      -- committed (a crank that rolls back, and runs again, must not have
      -- taken one), as a write leaves after it.
      afterCommit(function()
        c.readers[#c.readers + 1] = kit
        pump()
      end)
      return kit.promise
    end,
    write = function(_, s)
      if not writable then return rejection(says('is read-only')) end
      if c.failed or c.closed then return rejection(c.failed or says('is closed')) end
      if type(s) ~= 'string' then return rejection(says('can only write strings, got ' .. pass.passStyleOf(s))) end
      local kit = promise.makePromiseKit()
      -- The call comes in a crank: the line leaves, or waits for a TCP
      -- client's connection, once that crank has committed and been
      -- written, as results reach the host (a crank that rolls back, and
      -- runs again, must not have written it).
      afterCommit(function()
        if c.failed or c.closed then return kit.reject(ioError(c.failed or says('is closed'))) end
        if c.connected then return startWrite(s, kit) end
        -- A TCP client still connecting: the write goes out once it is
        -- connected (only as many bytes as the channel may hold).
        local held = #s + 1
        for _, w in ipairs(c.waiting) do held = held + #w[1] + 1 end
        if held > M.MAX_QUEUED then
          return kit.reject(ioError(says(('cannot write: write buffer full (limit %d bytes)'):format(M.MAX_QUEUED))))
        end
        c.waiting[#c.waiting + 1] = { s, kit }
      end)
      return kit.promise
    end,
    address = function()
      if cfg.type == 'listen' then
        local host = M.parseHostport(cfg.hostport)
        if host:find(':', 1, true) then host = '[' .. host .. ']' end
        return ('%s:%d'):format(host, c.ch:port() or 0)
      end
      return cfg.path or cfg.hostport or 'console'
    end,
  })
  return c
end

--- A channel that could not be reopened after a restart: every call is
--- rejected with why, so that the vat holding it learns it.
local function broken(name, why)
  local c = { name = name, failed = why, closed = true }
  local function no() return rejection(why) end
  c.object = exo.makeDefaultExo('IOChannel ' .. name, { read = no, write = no, address = no })
  return c
end

--- Closes a channel: its waiting reads and writes are rejected.
function M.closeOne(c)
  if c.closed and not c.ch then return end
  c.closed = true
  if c.ch then c.ch:close() end
  local err = ioError(c.failed or ('IO channel "%s" is closed'):format(c.name))
  for _, kit in ipairs(c.readers or {}) do kit.reject(err) end
  for _, kit in pairs(c.writes or {}) do kit.reject(err) end
  for _, w in ipairs(c.waiting or {}) do w[2].reject(err) end
  c.readers, c.writes, c.waiting = {}, {}, {}
end

--- Closes channels made by `openAll`.
function M.close(chans)
  local names = {}
  for name in pairs(chans or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do M.closeOne(chans[name]) end
end

--- Opens every channel of an io config (in name order): all, or none
--- and the first error.
---@return table|nil chans name -> channel
---@return string|nil err
function M.openAll(kernel, io)
  local chans, names = {}, {}
  for name in pairs(io or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local c, err = M.open(kernel, name, io[name])
    if not c then
      M.close(chans)
      return nil, err
    end
    chans[name] = c
  end
  return chans
end

local function serviceName(subclusterId, name) return ('io:%s:%s'):format(subclusterId, name) end

--- Registers a launched subcluster's channels as kernel services.
function M.attach(kernel, subclusterId, chans)
  if next(chans) == nil then return end
  kernel.ioChannels = kernel.ioChannels or {}
  kernel.ioChannels[subclusterId] = chans
  local names = {}
  for name in pairs(chans) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local sname = serviceName(subclusterId, name)
    -- A broken channel is registered too: it keeps its kref.
    if kernel.services[sname] then kernel.services[sname] = nil end
    kernel:registerKernelServiceObject(sname, chans[name].object)
  end
end

--- Closes a subcluster's channels and forgets their services.
function M.detach(kernel, subclusterId)
  local chans = kernel.ioChannels and kernel.ioChannels[subclusterId]
  if not chans then return end
  kernel.ioChannels[subclusterId] = nil
  -- From a crank (a vat killed in it, or exiting), the channels close
  -- once it is over: what it wrote to them goes out first.
  if kernel.K:inCrank() then
    kernel:_afterCrank(function() M.close(chans) end)
  else
    M.close(chans)
  end
  for name in pairs(chans) do
    local sname = serviceName(subclusterId, name)
    kernel.services[sname] = nil
    kernel.K:kvDelete('kernelService.' .. sname)
  end
end

--- Reopens the channels of the subclusters a database holds, when a
--- kernel starts on it. One that cannot be reopened is logged and kept
--- as a broken channel, so that a vat holding it gets rejections that
--- say why.
function M.restore(kernel)
  for _, key in ipairs(kernel:_scan('subcluster.')) do
    -- Only a record whose encoding names an `io` key is decoded: most
    -- subclusters have no channels, and decoding every record made up
    -- most of the Lua side of a restart (bench/results.md). A record
    -- with channels always holds the smallcaps key `"io":`.
    local raw = kernel.K:kvGet(key)
    -- A damaged record is reported where it is used, naming its key, not
    -- here, where it would keep the kernel from starting.
    local ok, sc = false, nil
    if raw and raw:find('"io":', 1, true) then ok, sc = pcall(kernel._get, kernel, key) end
    local io = ok and sc and type(sc.config) == 'table' and sc.config.io
    if type(io) == 'table' and next(io) then
      local chans, names = {}, {}
      for name in pairs(io) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do
        local c, err
        if type(io[name]) == 'table' then
          c, err = M.open(kernel, name, io[name])
        else
          err = 'not an IOConfig'
        end
        if not c then
          local why = ('IO channel "%s" of subcluster %s could not be reopened: %s'):format(name, sc.id, err)
          kernel.logger({ level = 'error', tags = { 'kernel' }, vatId = 'kernel', message = why })
          c = broken(name, why)
        end
        chans[name] = c
      end
      M.attach(kernel, sc.id, chans)
    end
  end
end

--- Closes every channel of a kernel that stops, and runs its loop until
--- libuv has let go of them (a bounded number of turns), so that the loop
--- can be closed.
function M.stop(kernel)
  local all = kernel.ioChannels
  if not all then return end
  kernel.ioChannels = nil
  local list = {}
  for _, chans in pairs(all) do
    for _, c in pairs(chans) do
      M.closeOne(c)
      if c.ch then list[#list + 1] = c.ch end
    end
  end
  for _ = 1, 100 do
    local busy = false
    for _, ch in ipairs(list) do
      if not ch:idle() then busy = true end
    end
    if not busy then return end
    -- Waits only for what is still out: a close callback makes the loop
    -- turn at once, a file read in a worker thread ends soon.
    kernel.K:runLoop(true)
  end
end

return M
