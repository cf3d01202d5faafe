--- The daemon's kernel seen from another process: what `Kernel.make`
--- returns in a script run with `ocap run --home DIR` while a daemon runs
--- for DIR (docs/daemon.md). Its methods are the kernel's, each one a
--- JSON-RPC request to the daemon, answered before the method returns:
--- the promises they return are already settled, so `:await()` gives the
--- result at once. Results are JSON, as `ocap daemon exec` prints them:
--- presences and promises come back as their krefs (`"ko5"`), which
--- `queueMessage` takes as targets.
local cjson = require 'cjson.safe'
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local rpc = require('ocap.core').rpc

local M = {}

-- Kernel.make options that mean nothing for a kernel that already runs
-- elsewhere are refused; these two are honoured (baseDir) or harmless.
local ALLOWED = { baseDir = true, logger = true }

-- JSON null becomes nil in objects (arrays keep cjson.null, to keep
-- their length), and whole numbers become integers, as they were sent.
local function denull(v)
  if type(v) ~= 'table' then
    if v == cjson.null then return nil end
    if math.type(v) == 'float' and v == v // 1 and math.abs(v) <= 2 ^ 53 then return math.tointeger(v) end
    return v
  end
  local n = #v
  for k, x in pairs(v) do
    if not (math.type(k) == 'integer' and k >= 1 and k <= n) or x ~= cjson.null then v[k] = denull(x) end
  end
  return v
end

local function cwd()
  local p = io.popen('pwd')
  local dir = p and p:read('l')
  if p then p:close() end
  return dir or '.'
end

-- A copy of config whose paths are absolute: the daemon resolves paths
-- against its own directory, not the script's.
local function absolutize(config, base)
  if type(config) ~= 'table' then return config end
  local function abs(p)
    if type(p) ~= 'string' or p:sub(1, 1) == '/' then return p end
    return base .. '/' .. p
  end
  local out = {}
  for k, v in pairs(config) do out[k] = v end
  for _, key in ipairs({ 'vats', 'bundles' }) do
    if type(config[key]) == 'table' then
      out[key] = {}
      for name, vc in pairs(config[key]) do
        if type(vc) == 'table' then
          local c = {}
          for k, v in pairs(vc) do c[k] = v end
          c.sourceSpec, c.bundleSpec = abs(vc.sourceSpec), abs(vc.bundleSpec)
          vc = c
        end
        out[key][name] = vc
      end
    end
  end
  if type(config.io) == 'table' then
    out.io = {}
    for name, ch in pairs(config.io) do
      if type(ch) == 'table' and ch.path then
        local c = {}
        for k, v in pairs(ch) do c[k] = v end
        c.path = abs(ch.path)
        ch = c
      end
      out.io[name] = ch
    end
  end
  return out
end

local Proxy = {}

--- Sends one request; returns ok and the result or the error message.
function Proxy:_call(method, params)
  local line = cjson.encode({ jsonrpc = '2.0', id = 1, method = method, params = params })
  if not line then return false, 'arguments cannot be sent as JSON' end
  local reply, err = rpc.call(self.sock, line)
  if not reply then return false, ('the daemon of %s did not answer: %s'):format(self.home, tostring(err)) end
  local answer = cjson.decode(reply)
  if type(answer) ~= 'table' then return false, 'the daemon answered with something that is not JSON' end
  if answer.error then return false, tostring(answer.error.message) end
  return true, denull(answer.result)
end

-- A method answering with a promise, as the kernel's does.
local function async(method, prepare)
  return function(self, ...)
    local params = prepare and prepare(self, ...) or table.pack(...)
    params.n = nil
    local ok, v = self:_call(method, params)
    if ok then return promise.resolve(v) end
    return promise.reject(pass.makeError(v))
  end
end

-- A method answering at once, raising as the kernel's does.
local function sync(method)
  return function(self, ...)
    local params = table.pack(...)
    params.n = nil
    local ok, v = self:_call(method, params)
    if not ok then error(v, 2) end
    return v
  end
end

local function target(t)
  if type(t) == 'string' then return t end
  error('queueMessage: with the daemon\'s kernel, the target must be a kref ("ko5")', 3)
end

Proxy.launchSubcluster = async('launchSubcluster', function(self, config)
  return { absolutize(config, self.baseDir) }
end)
Proxy.queueMessage = async('queueMessage', function(_, t, method, args)
  return { target(t), method, args or {} }
end)
Proxy.terminateSubcluster = async('terminateSubcluster')
Proxy.pingVat = async('pingVat')
Proxy.restartVat = async('restartVat')
Proxy.terminateVat = async('terminateVat')
Proxy.reapVats = async('reapVats')
Proxy.getStatus = sync('getStatus')
Proxy.getSubclusters = sync('getSubclusters')
Proxy.revoke = sync('revoke')
Proxy.isRevoked = sync('isRevoked')

function Proxy:getSubcluster(id)
  for _, sc in ipairs(self:getSubclusters()) do
    if sc.id == id then return sc end
  end
end

--- The kref itself: references cross to the daemon as krefs.
function Proxy.getPresence(_, kref) return kref end

function Proxy.krefOf(_, v) return target(v) end

--- The daemon runs its kernel itself: nothing to drive here.
function Proxy.run() end

function Proxy.step() return false end

--- Leaves the daemon's kernel running: the script only lets go of it.
function Proxy:stop() self.stopped = true end

Proxy.__index = function(_, key)
  local f = Proxy[key]
  if f ~= nil then return f end
  if type(key) == 'string' and not key:match('^_') then
    return function()
      error(('%s is not available with the daemon\'s kernel (ocap run --home)'):format(key), 2)
    end
  end
end

--- A kernel object that drives the daemon of home.
---@param home string the home directory of a running daemon
---@param sock string its socket
---@param options table|nil the script's Kernel.make options
function M.make(home, sock, options)
  for k in pairs(options or {}) do
    if not ALLOWED[k] then
      error(('Kernel.make: option %s is not available with the daemon\'s kernel (ocap run --home)'):format(
        tostring(k)), 3)
    end
  end
  local base = options and options.baseDir or cwd()
  if base:sub(1, 1) ~= '/' then base = cwd() .. '/' .. base end
  return setmetatable({ home = home, sock = sock, baseDir = base, daemon = true, stopped = false }, Proxy)
end

return M
