--- Helpers shared by the specs (not a spec itself).
local ocap = require 'ocap'

local M = {}

--- The rejection of p, which must reject with an error value or data table.
function M.rejection(p)
  local ok, err = pcall(ocap.await, p)
  assert(not ok, 'expected a rejection, got ' .. tostring(err))
  assert(type(err) == 'table', 'expected an error value, got ' .. tostring(err))
  return err
end

--- The getStatus().terminatedVats record of vatId, if any.
function M.terminatedRecord(kernel, vatId)
  for _, rec in ipairs(kernel:getStatus().terminatedVats) do
    if rec.id == vatId then return rec end
  end
end

--- Whether vatId is among the kernel's running vats.
function M.isLive(kernel, vatId)
  for _, v in ipairs(kernel:getStatus().vats) do
    if v.id == vatId then return true end
  end
  return false
end

--- The kernel's log entries at level whose message matches pattern (a
--- Lua pattern; any message when nil), in order.
function M.logEntries(kernel, level, pattern)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if e.level == level and (not pattern or tostring(e.message):find(pattern)) then out[#out + 1] = e end
  end
  return out
end

--- The `ocap` binary under test and the source tree, as absolute paths
--- where the build gives them (OCAP_BIN, OCAP_SOURCE_DIR).
M.SRC = os.getenv('OCAP_SOURCE_DIR') or '.'
M.BIN = os.getenv('OCAP_BIN') or 'build/ocap'
if M.BIN:sub(1, 1) ~= '/' then M.BIN = M.SRC .. '/' .. M.BIN end
M.SRC_ABS = M.SRC:sub(1, 1) == '/' and M.SRC or (os.getenv('PWD') .. '/' .. M.SRC)

--- s quoted for a POSIX shell.
function M.q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- The whole content of a file, or '' when it cannot be read.
function M.slurp(path)
  local f = io.open(path, 'rb')
  if not f then return '' end
  local s = f:read('a')
  f:close()
  return s
end

--- Writes s as the whole content of a file.
function M.spit(path, s)
  local f = assert(io.open(path, 'wb'))
  f:write(s)
  f:close()
end

--- Whether a file exists (and can be opened).
function M.exists(path)
  local f = io.open(path, 'r')
  if f then f:close() end
  return f ~= nil
end

--- A kernel without a database that logs nothing; extra adds or overrides
--- its options (e.g. remote = { listen = '127.0.0.1:0' }).
function M.newKernel(extra)
  local opts = { database = false, logger = function() end }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return ocap.Kernel.make(opts)
end

--- Starts spec/remote/peer.lua in another process, env prefixing its
--- command line and netlayer (REMOTE_NETLAYER) choosing its netlayer, or
--- its netlayers, comma-separated; { pid, locator, url, neverUrl,
--- gateUrl, locators } (locators: one per netlayer, in order).
function M.spawnPeer(env, netlayer)
  local cmd = ("%s %s exec sh -c 'echo $$; exec \"%s\" run \"%s/spec/remote/peer.lua\"'"):format(
    netlayer and ('REMOTE_NETLAYER=' .. netlayer) or '', env or '', M.BIN, M.SRC)
  local f = assert(io.popen(cmd, 'r'))
  local peer = { f = f, pid = f:read('l'), locator = f:read('l'), url = f:read('l'), neverUrl = f:read('l'),
    gateUrl = f:read('l') }
  assert(peer.gateUrl and peer.gateUrl:match('^ocapn://'), 'the peer did not start')
  peer.locators = { peer.locator }
  for _ in (netlayer or ''):gmatch(',') do peer.locators[#peer.locators + 1] = f:read('l') end
  return peer
end

--- Stops a peer of spawnPeer, once (a nil peer or a second call does nothing).
function M.killPeer(peer)
  if peer and not peer.killed then
    peer.killed = true
    os.execute('kill ' .. peer.pid .. ' 2>/dev/null')
    peer.f:close()
  end
end

--- Restarts a peer on its database: starts one (by spawn, which takes the
--- env) on a fresh directory and swiss number `keepme`, lets kernel ping
--- its echo and wait on its `never`, stops it, waits for the wait to be
--- rejected and starts another on the same database. Registers with
--- finally (busted keeps only a test's last one) the stopping of the
--- second and the removal of the database. Returns { first, second,
--- pinged (the echo's answer to ping(1)), lost (the wait's rejection) }.
function M.restartPeer(kernel, spawn, finally)
  local dir = os.tmpname()
  os.remove(dir)
  local env = ('REMOTE_DB=%q REMOTE_SWISS=keepme'):format(dir)
  local r = {}
  finally(function()
    M.killPeer(r.second)
    os.execute(('rm -rf %q'):format(dir))
  end)
  r.first = spawn(env)
  local waiting
  local ok, err = pcall(function()
    r.pinged = ocap.E(kernel:redeemOcapURL(r.first.url):await()).ping(1):await()
    waiting = ocap.E(kernel:redeemOcapURL(r.first.neverUrl):await()).wait()
  end)
  M.killPeer(r.first)
  assert(ok, err)
  -- Once the kernel knows the session is gone:
  r.lost = M.rejection(waiting)
  r.second = spawn(env)
  return r
end

return M
