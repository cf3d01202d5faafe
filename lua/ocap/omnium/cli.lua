--- `ocap caplet`: installs, lists, uninstalls and calls caplets in the
--- kernel of a home directory: through its daemon when one runs
--- (`ocap daemon`, which holds the database), else by opening the
--- database directly.
local M = {}

local USAGE = [[
usage: ocap caplet [--home DIR] install DIR|MANIFEST
       ocap caplet [--home DIR] list
       ocap caplet [--home DIR] uninstall [--force] ID
       ocap caplet [--home DIR] call ID METHOD [ARGS-JSON]

Manages the caplets of the kernel whose state is in DIR/db (DIR: --home,
else $OCAP_HOME, else ~/.ocap), with Omnium declared as a system
subcluster. When a daemon runs for DIR (ocap daemon start), the
operation goes through it; otherwise the database is opened directly,
so no other process may have it open.

  install    install the caplet of DIR/manifest.json (or of MANIFEST);
             prints "<id> <subclusterId>"
  list       prints "<id> <version> <subclusterId>" per installed caplet
  uninstall  uninstall a caplet; --force even when others depend on it
  call       calls METHOD on the caplet's root with the JSON array
             ARGS-JSON (default []) and prints the result as JSON
  --home DIR the home directory
  -h, --help print this help

Exit status: 0 on success, 1 when the operation fails, 2 for usage errors.
]]

local function usageError(msg)
  io.stderr:write('ocap caplet: ', msg, " (see 'ocap caplet --help')\n")
  return 2
end

local ARITY = { install = { 1, 1 }, list = { 0, 0 }, uninstall = { 1, 1 }, call = { 2, 3 } }

local function messageOf(e)
  if type(e) == 'table' and e.message then return tostring(e.message) end
  return tostring(e)
end

--- Runs one `ocap caplet` operation through the daemon of home; prints
--- what the direct path prints and returns the exit status.
function M.viaDaemon(daemon, home, cmd, rest, force, callArgs)
  local function call(method, params)
    local answer, err = daemon.call(home, method, params)
    if not answer then error(err, 0) end
    if answer.error then error(tostring(answer.error.message), 0) end
    return answer.result
  end
  local cjson = require 'cjson.safe'
  local ok, err = pcall(function()
    if cmd == 'install' then
      -- The daemon runs elsewhere: it gets an absolute path.
      local path = rest[1]
      if path:sub(1, 1) ~= '/' then path = (os.getenv('PWD') or '.') .. '/' .. path end
      local r = call('caplet.install', { path })
      print(r.capletId .. ' ' .. r.subclusterId)
    elseif cmd == 'list' then
      for _, id in ipairs(call('caplet.list')) do
        local rec = call('caplet.get', { id })
        print(('%s %s %s'):format(id, rec.manifest.version, rec.subclusterId))
      end
    elseif cmd == 'uninstall' then
      call('caplet.uninstall', { rest[1], { force = force } })
    else
      local result = call('caplet.call', { rest[1], rest[2], callArgs })
      print(cjson.encode(result) or tostring(result))
    end
  end)
  if not ok then
    io.stderr:write('ocap caplet: ', messageOf(err), '\n')
    return 1
  end
  return 0
end

--- Runs `ocap caplet` with its arguments; returns the exit status.
---@param args string[]
---@return integer
function M.main(args)
  local home, force, rest = nil, false, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == '-h' or a == '--help' then
      io.stdout:write(USAGE)
      return 0
    elseif a == '--home' then
      home = args[i + 1]
      if not home then return usageError('--home needs a directory') end
      i = i + 1
    elseif a == '--force' and rest[1] == 'uninstall' then
      force = true
    elseif a:sub(1, 1) == '-' and #rest < 2 then
      return usageError('unknown option ' .. a)
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  local cmd = table.remove(rest, 1)
  if not cmd then return usageError('a command is needed: install, list, uninstall or call') end
  local arity = ARITY[cmd]
  if not arity then return usageError('unknown command ' .. cmd) end
  if #rest < arity[1] or #rest > arity[2] then return usageError('wrong number of arguments for ' .. cmd) end
  local cjson = require 'cjson.safe'
  local callArgs = {}
  if cmd == 'call' and rest[3] then
    callArgs = cjson.decode(rest[3])
    if type(callArgs) ~= 'table' then return usageError('ARGS-JSON must be a JSON array') end
  end
  home = home or os.getenv('OCAP_HOME') or ((os.getenv('HOME') or '.') .. '/.ocap')
  local daemon = require 'ocap.daemon'
  if daemon.running(home) then return M.viaDaemon(daemon, home, cmd, rest, force, callArgs) end

  local Kernel = require 'ocap.kernel'
  local omnium = require 'ocap.omnium'
  local kernel
  local ok, err = pcall(function()
    os.execute("mkdir -p '" .. home:gsub("'", "'\\''") .. "'")
    kernel = Kernel.make { database = home .. '/db', systemSubclusters = { omnium.subcluster() },
      logger = function(entry)
        if entry.level == 'error' then io.stderr:write('ocap caplet: ', tostring(entry.message), '\n') end
      end }
    local o = omnium.attach(kernel)
    if cmd == 'install' then
      local r = o.caplet.install(omnium.load(rest[1])):await()
      print(r.capletId .. ' ' .. r.subclusterId)
    elseif cmd == 'list' then
      for _, id in ipairs(o.caplet.list():await()) do
        local rec = o.caplet.get(id):await()
        print(('%s %s %s'):format(id, rec.manifest.version, rec.subclusterId))
      end
    elseif cmd == 'uninstall' then
      o.caplet.uninstall(rest[1], { force = force }):await()
    else
      local result = o.caplet.callCapletMethod(rest[1], rest[2], callArgs):await()
      local text = cjson.encode(result)
      print(text or tostring(result))
    end
  end)
  if kernel then pcall(kernel.stop, kernel) end
  if not ok then
    io.stderr:write('ocap caplet: ', messageOf(err), '\n')
    return 1
  end
  return 0
end

return M
