--- The `ocap` command line: `ocap run`, `ocap bundle`, `ocap test`,
--- `ocap caplet`, `ocap version`, `ocap help`.
---
--- Conventions: a command's own flags come before its operands (for `run`,
--- everything after the script belongs to the script); `--` ends the flags;
--- every command takes `--help` (or `-h`), which prints its usage on stdout
--- and exits 0. A usage error prints one line on stderr, naming the command
--- and pointing at its `--help`, and exits 2.
local M = {}

local USAGE = [[
usage: ocap run [--db DIR | --home DIR] [--reset] [--memory] [--] HOST.lua [ARGS...]
       ocap bundle [-o OUT] [--] FILE.lua|DIR...
       ocap test [BUSTED-OPTIONS...] [SPECS...]
       ocap caplet [--home DIR] install|list|uninstall|call ...
       ocap daemon [--home DIR] start|stop|status|purge|exec|queueMessage ...
       ocap version
       ocap help [COMMAND]

  run      run a host script; its kernels keep their state in memory unless
           the script names a database or --db DIR is given
  bundle   make .bundle files: a vat and the modules it requires
  test     run the busted specs of the current directory (./spec by default)
           under ocap's Lua 5.4, with ocap and ocap.testing available
  caplet   install, list, uninstall and call caplets (docs/caplets.md)
  daemon   a kernel that keeps running, controlled over a Unix socket
           (docs/daemon.md)
  version  print the version

Every command takes --help. Usage errors exit with status 2.
]]

local RUN_USAGE = [[
usage: ocap run [--db DIR | --home DIR] [--reset] [--memory] [--] HOST.lua [ARGS...]

Runs the host script HOST.lua with the ocap modules on its path. Everything
after HOST.lua goes to the script, as `...` and in `arg` (arg[0] is the
script). Kernels keep their state in memory unless the script names a
database (Kernel.make { database = DIR }) or --db is given; each database
used is announced once on stderr.

  --db DIR   kernels the script makes without naming a database use the
             LevelDB database in DIR (created with its parents if missing)
  --home DIR the daemon's home directory: while a daemon runs for DIR,
             Kernel.make gives the script the daemon's kernel, driven over
             its socket (results come back as JSON, references as krefs);
             when none runs, kernels use DIR/db as with --db (said on
             stderr either way)
  --reset    wipe each database the script opens, the first time it opens it
  --memory   keep every kernel in memory, even where the script names a
             database
  --         end of the options: the next argument is the script
  -h, --help print this help

Exit status: what the script returns if it is an integer, else 0; 1 when
the script raises; 2 for usage errors.
]]

local VERSION_USAGE = [[
usage: ocap version

Prints the version of ocap and of its Lua.
]]

--- Writes a one-line usage error for command `cmd` and returns exit code 2.
local function usageError(cmd, msg)
  local name = cmd and ('ocap ' .. cmd) or 'ocap'
  io.stderr:write(name, ': ', msg, " (see '", name, " --help')\n")
  return 2
end
M.usageError = usageError

local function isHelp(a) return a == '--help' or a == '-h' end

--- The `ocap run` hook of Kernel.make (see ocap.kernel `defaults`): applies
--- the command line's choices to a script's options, and says once per
--- database where state goes.
local function runDefaults(db, reset, memory)
  local announced, wiped = {}, {}
  return function(options)
    local merged = {}
    for k, v in pairs(options) do merged[k] = v end
    if memory then
      merged.database = false
    elseif merged.database == nil then
      merged.database = db
    end
    local dir = merged.database
    if type(dir) == 'string' then
      if reset and merged.resetStorage == nil and not wiped[dir] then merged.resetStorage = true end
      wiped[dir] = true
      if not announced[dir] then
        announced[dir] = true
        io.stderr:write('ocap run: kernel state is kept in the database ', dir,
          merged.resetStorage and ' (wiped first)' or '', '\n')
      end
    end
    return merged
  end
end

-- `ocap run --home DIR`: the daemon's kernel when one runs for DIR, else
-- DIR/db. Returns the database to use, or nil and an exit status.
local function runHome(home, reset)
  local daemon = require 'ocap.daemon'
  local ok, herr = daemon.checkHome(home)
  if not ok then
    io.stderr:write('ocap run: ', herr, '\n')
    return nil, 1
  end
  if not daemon.running(home) then
    io.stderr:write('ocap run: no daemon runs for home ', home, ': the script opens its database itself\n')
    return daemon.paths(home).db
  end
  if reset then
    return nil, usageError('run', "--reset cannot wipe the daemon's database (use 'ocap daemon purge --force')")
  end
  io.stderr:write(('ocap run: using the kernel of the daemon (pid %s) of home %s\n'):format(
    tostring(daemon.pidOf(home)), home))
  local proxy = require 'ocap.daemonkernel'
  local sock = daemon.paths(home).sock
  require('ocap.kernel').make = function(options) return proxy.make(home, sock, options) end
  return false
end

local function cmdRun(args)
  local db, reset, memory, home
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == '--' then
      i = i + 1
      break
    elseif isHelp(a) then
      io.stdout:write(RUN_USAGE)
      return 0
    elseif a == '--db' then
      db = args[i + 1]
      if db == nil or db == '' then return usageError('run', '--db needs a directory') end
      i = i + 1
    elseif a:match('^%-%-db=') then
      db = a:sub(6)
      if db == '' then return usageError('run', '--db needs a directory') end
    elseif a == '--home' then
      home = args[i + 1]
      if home == nil or home == '' then return usageError('run', '--home needs a directory') end
      i = i + 1
    elseif a == '--reset' then
      reset = true
    elseif a == '--memory' then
      memory = true
    elseif a:sub(1, 1) == '-' and a ~= '-' then
      return usageError('run', ('unknown option %s'):format(a))
    else
      break
    end
    i = i + 1
  end
  local script = args[i]
  if script == nil then return usageError('run', 'no host script given') end
  if db and memory then return usageError('run', '--db and --memory exclude each other') end
  if home and (db or memory) then
    return usageError('run', '--home excludes ' .. (db and '--db' or '--memory'))
  end
  local f = io.open(script, 'r')
  if not f then return usageError('run', ('cannot open host script %s'):format(script)) end
  f:close()
  local chunk, err = loadfile(script)
  if not chunk then
    io.stderr:write('ocap run: ', err, '\n')
    return 1
  end
  if home then
    local hdb, status = runHome(home, reset)
    if hdb == nil then return status end
    db = hdb or nil
  end
  local rest = { table.unpack(args, i + 1) }
  rest[0] = script
  _G.arg = rest
  local kernel = require 'ocap.kernel'
  kernel.defaults = runDefaults(db, reset, memory)
  local ok, res = xpcall(chunk, function(e)
    if type(e) == 'table' and e.message then e = tostring(e) end
    return debug.traceback(tostring(e), 2)
  end, table.unpack(rest))
  kernel.stopAll()
  if not ok then
    io.stderr:write('ocap: ', res, '\n')
    return 1
  end
  return math.type(res) == 'integer' and res or 0
end

local function cmdVersion(args)
  if isHelp(args[1]) then
    io.stdout:write(VERSION_USAGE)
    return 0
  end
  if args[1] ~= nil then return usageError('version', ('unexpected argument %s'):format(args[1])) end
  print('ocap 0.1.0 (' .. _VERSION .. ')')
  return 0
end

-- Where Debian (and a plain `make install` of Lua) put Lua 5.4 modules.
-- `luarocks path` sets LUA_PATH and LUA_CPATH without some of them, and
-- busted needs modules from both (penlight, LuaFileSystem, term, system).
local SYSTEM_LPATH = '/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;'
  .. '/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua'

local function addSystemPaths()
  if not package.path:find('/usr/share/lua/5.4/?.lua', 1, true) then
    package.path = package.path .. ';' .. SYSTEM_LPATH
  end
  if package.searchpath('lfs', package.cpath) then return end
  local dirs = { '/usr/local/lib/lua/5.4', '/usr/lib/lua/5.4' }
  -- Debian's multiarch directory, e.g. /usr/lib/x86_64-linux-gnu/lua/5.4.
  local ls = io.popen('ls -d /usr/lib/*/lua/5.4 2>/dev/null')
  if ls then
    for dir in ls:lines() do dirs[#dirs + 1] = dir end
    ls:close()
  end
  for _, dir in ipairs(dirs) do package.cpath = package.cpath .. ';' .. dir .. '/?.so' end
end

--- `ocap test [BUSTED-ARGS...]`: runs busted in this process, under the
--- Lua 5.4 the kernel is built for, with ocap's modules on the path, so a
--- project's specs run with one command wherever the rock is installed.
--- Every argument but a first --help is busted's.
local TEST_USAGE = [[
usage: ocap test [BUSTED-OPTIONS...] [SPECS...]

Runs the busted specs of the current directory (./spec by default, or
the files and directories given) under ocap's Lua 5.4, with ocap,
ocap.testing and the kernel available. The options are busted's (see
`busted --help`), for example -o TAP, --filter=PATTERN, --pattern=_spec;
a .busted file in the current directory is honoured, except its `lua`.
A failing test is reported at the spec's own line, followed by the log
of the kernels ocap.testing made for it.

Exit status: 0 when every test passed, 1 otherwise, 2 for an option busted
does not know.
]]

local function cmdTest(args)
  if isHelp(args[1]) then
    io.stdout:write(TEST_USAGE)
    return 0
  end
  addSystemPaths()
  if not package.searchpath('busted.runner', package.path) then
    io.stderr:write('ocap test: busted is not installed for Lua 5.4 (on Debian: apt-get install lua-busted)\n')
    return 1
  end
  -- A `.busted` that names an interpreter (lua = 'lua5.4') would make
  -- busted start another process without ocap's modules: stay here.
  local argv = { [0] = 'ocap test', '--ignore-lua' }
  for i = 1, #args do argv[#argv + 1] = args[i] end
  -- busted's own parser, run first, so that a bad option is a usage error
  -- (one line, status 2) and not busted's exit with status 1.
  local okCli, cli = pcall(function()
    local options = require('pl.tablex').update(require 'busted.options', { standalone = false })
    local c = require('busted.modules.cli')(options)
    c:set_name('ocap test')
    return c
  end)
  local asksHelp = false
  for _, a in ipairs(args) do asksHelp = asksHelp or isHelp(a) end
  if okCli and not asksHelp then
    local parsed, perr = cli:parse({ table.unpack(argv) })
    if not parsed then
      local msg = tostring(perr):gsub('^ocap test: error: ', ''):gsub(';?%s*re%-run with %-%-help for usage%.$', '')
      return usageError('test', msg)
    end
  end
  _G.arg = argv
  -- busted names itself after the chunk that calls its runner (a call
  -- that must not be a tail call, which would hide the chunk).
  local run = assert(load("require('busted.runner')({ standalone = false })", '@ocap test'))
  run()
  return 0
end

local DAEMON_USAGE = [[
usage: ocap daemon [--home DIR] start
       ocap daemon [--home DIR] stop
       ocap daemon [--home DIR] status
       ocap daemon [--home DIR] purge --force
       ocap daemon [--home DIR] exec METHOD [PARAMS-JSON]
       ocap daemon [--home DIR] queueMessage KREF METHOD [ARGS-JSON] [--raw]

Runs a kernel in the background for the home directory DIR (--home, else
$OCAP_HOME, else ~/.ocap) and talks to it with JSON-RPC 2.0 over the Unix
socket DIR/daemon.sock. The kernel's database is DIR/db; the daemon logs
to DIR/daemon.log, one JSON object per line.

  start         start the daemon (reports the running one if there is one);
                prints its pid
  stop          let the crank in progress finish, commit, and exit
  status        print whether a daemon runs, its pid and its vats
  purge --force stop the daemon and delete its database, log and files
  exec          call METHOD with the JSON array PARAMS-JSON (default []),
                print the result as JSON
  queueMessage  send METHOD with the JSON array ARGS-JSON to KREF and print
                the result as JSON; --raw prints the result's capdata
  --home DIR    the home directory
  -h, --help    print this help

Exit status: 0 on success, 1 when the operation fails or (status) no
daemon runs, 2 for usage errors.
]]

local DAEMON_ARITY = { start = { 0, 0 }, stop = { 0, 0 }, status = { 0, 0 }, purge = { 0, 0 },
  exec = { 1, 2 }, queueMessage = { 2, 3 } }

local function shellQuote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Progress lines for the commands that wait (`ocap daemon start`, `stop`,
--- `purge`): on stderr when it is a terminal, or when $OCAP_PROGRESS is 1
--- ($OCAP_PROGRESS=0 silences them). Returns say(msg) and, for a wait
--- loop polled every 50 ms, tick(polls, what), which says `what (N s)`
--- every two seconds.
local function progress(cmd)
  local env = os.getenv('OCAP_PROGRESS')
  local on = env == '1' or (env ~= '0' and require('ocap.core').rpc.isatty(2))
  local function say(msg)
    if on then io.stderr:write('ocap ', cmd, ': ', msg, '\n') end
  end
  local function tick(polls, what)
    if polls % 40 == 0 then say(('%s (%d s)'):format(what, polls // 20)) end
  end
  return say, tick
end
M.progress = progress

local function cmdDaemon(args)
  local home, force, raw, rest = nil, false, false, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if isHelp(a) then
      io.stdout:write(DAEMON_USAGE)
      return 0
    elseif a == '--home' then
      home = args[i + 1]
      if home == nil or home == '' then return usageError('daemon', '--home needs a directory') end
      i = i + 1
    elseif a == '--force' then
      force = true
    elseif a == '--raw' then
      raw = true
    elseif a:sub(1, 1) == '-' and a ~= '-' and not (a:match('^%-?%d') or a:match('^%-[%[{]')) then
      return usageError('daemon', 'unknown option ' .. a)
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  local cmd = table.remove(rest, 1)
  if not cmd then
    return usageError('daemon', 'a command is needed: start, stop, status, purge, exec or queueMessage')
  end
  local arity = DAEMON_ARITY[cmd]
  if not arity then return usageError('daemon', 'unknown command ' .. cmd) end
  if #rest < arity[1] or #rest > arity[2] then
    return usageError('daemon', 'wrong number of arguments for ' .. cmd)
  end
  if force and cmd ~= 'purge' then return usageError('daemon', '--force is only for purge') end
  if cmd == 'purge' and not force then return usageError('daemon', 'purge deletes the database: add --force') end
  if raw and cmd ~= 'queueMessage' then return usageError('daemon', '--raw is only for queueMessage') end
  local cjson = require 'cjson.safe'
  local function jsonArray(text, what)
    if text == nil then return {} end
    local v = cjson.decode(text)
    if type(v) ~= 'table' then return nil, what .. ' must be a JSON array' end
    return v
  end
  local params, perr
  if cmd == 'exec' then
    params, perr = jsonArray(rest[2], 'PARAMS-JSON')
  elseif cmd == 'queueMessage' then
    local qargs
    qargs, perr = jsonArray(rest[3], 'ARGS-JSON')
    params = { rest[1], rest[2], qargs }
  end
  if perr then return usageError('daemon', perr) end
  local daemon = require 'ocap.daemon'
  home = daemon.home(home)
  local ok, herr = daemon.checkHome(home)
  if not ok then
    io.stderr:write('ocap daemon: ', herr, '\n')
    return 1
  end
  local function fail(msg)
    io.stderr:write('ocap daemon: ', msg, '\n')
    return 1
  end
  local say, tick = progress('daemon')
  if cmd == 'start' then
    say(('starting the daemon of home %s (log %s)'):format(home, daemon.paths(home).log))
    local pid, already = daemon.start(home, nil, function(n) tick(n, 'waiting for the daemon to answer') end)
    if not pid then return fail(already) end
    print(('%s pid %d home %s'):format(already and 'running' or 'started', pid, home))
    return 0
  elseif cmd == 'status' then
    local answer = daemon.call(home, 'getStatus')
    if not answer or not answer.result then
      local pid = daemon.pidOf(home)
      print('not running' .. (pid and (' (stale pid file: ' .. pid .. ')') or '') .. ' home ' .. home)
      return 1
    end
    local st = answer.result
    print(('running pid %s home %s vats %d subclusters %d'):format(tostring(daemon.pidOf(home)), home,
      #(st.vats or {}), #(st.subclusters or {})))
    return 0
  elseif cmd == 'stop' or cmd == 'purge' then
    local pid = daemon.pidOf(home)
    local answer = daemon.call(home, 'stop')
    if answer and answer.result then
      say(('asked the daemon (pid %s) to stop'):format(tostring(pid)))
      -- The daemon removes its pid file last, after its final commit.
      local tries = 0
      while daemon.pidOf(home) and tries < 1200 do
        os.execute('sleep 0.05')
        tries = tries + 1
        tick(tries, 'waiting for the daemon to finish its crank and commit')
      end
      if daemon.pidOf(home) then return fail('the daemon (pid ' .. tostring(pid) .. ') did not stop') end
      if cmd == 'stop' then print('stopped pid ' .. tostring(pid)) end
    elseif cmd == 'stop' then
      print('not running home ' .. home)
    end
    if cmd == 'purge' then
      local p = daemon.paths(home)
      say(('deleting the database %s, the log and the daemon\'s files'):format(p.db))
      os.execute('rm -rf ' .. shellQuote(p.db) .. ' ' .. shellQuote(p.log) .. ' ' .. shellQuote(p.log .. '.1') .. ' '
        .. shellQuote(p.pid) .. ' ' .. shellQuote(p.sock) .. ' ' .. shellQuote(p.lock))
      print('purged home ' .. home)
    end
    return 0
  end
  local method = cmd == 'exec' and rest[1] or 'queueMessage'
  local line = cjson.encode({ jsonrpc = '2.0', id = 1, method = method, params = params, raw = raw or nil })
  local reply, cerr = require('ocap.core').rpc.call(daemon.paths(home).sock, line)
  if not reply then return fail('no daemon runs for ' .. home .. ' (' .. tostring(cerr) .. ')') end
  local answer = cjson.decode(reply)
  if type(answer) ~= 'table' then return fail('the daemon answered with something that is not JSON') end
  if answer.error then return fail(tostring(answer.error.message)) end
  print(cjson.encode(answer.result))
  return 0
end

local COMMANDS = {
  run = cmdRun,
  bundle = function(args) return require('ocap.bundle').main(args) end,
  version = cmdVersion,
  test = cmdTest,
  daemon = cmdDaemon,
  caplet = function(args) return require('ocap.omnium.cli').main(args) end,
}

local function cmdHelp(args)
  local topic = args[1]
  if topic == nil or isHelp(topic) then
    io.stdout:write(USAGE)
    return 0
  end
  if not COMMANDS[topic] then return usageError('help', ('unknown command %s'):format(topic)) end
  return COMMANDS[topic]({ '--help' })
end
COMMANDS.help = cmdHelp

--- Entry point called by host/main.c.
---@param args table the command line without the program name
---@return integer status the process's exit status
function M.main(args)
  local cmd = args[1]
  if cmd == nil then
    io.stderr:write(USAGE)
    return 2
  end
  if isHelp(cmd) then return cmdHelp({}) end
  if cmd == '--version' then return cmdVersion({}) end
  local fn = COMMANDS[cmd]
  if not fn then return usageError(nil, ('unknown command %s'):format(cmd)) end
  return fn({ table.unpack(args, 2) })
end

return M
