--- The `ocap` command line (API.md §10).
local M = {}

local USAGE = [[
usage: ocap run HOST.lua [--db DIR] [--reset] [--memory] [ARGS...]
       ocap bundle FILE.lua... [-o OUT]
       ocap version

  run      run a host script; its kernels use the LevelDB database in DIR
           (default ./.ocap) unless the script names one, or memory with --memory
  bundle   make a .bundle file from a vat and the modules it requires
]]

local function die(msg)
  io.stderr:write('ocap: ', msg, '\n')
  return 2
end

local function cmdRun(args)
  local script, db, reset, memory, rest = nil, './.ocap', false, false, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == '--db' then
      db = args[i + 1]
      if not db then return die('--db needs a directory') end
      i = i + 1
    elseif a == '--reset' then
      reset = true
    elseif a == '--memory' then
      memory = true
    elseif not script then
      script = a
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  if not script then return die('run: no host script given\n' .. USAGE) end
  local kernel = require 'ocap.kernel'
  kernel.defaults = { database = not memory and db or nil, resetStorage = reset or nil }
  local chunk, err = loadfile(script)
  if not chunk then return die(err) end
  rest[0] = script
  _G.arg = rest
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

local function cmdBundle(args)
  return require('ocap.bundle').main(args)
end

--- Entry point called by host/main.c.
function M.main(args)
  local cmd = args[1]
  local rest = { table.unpack(args, 2) }
  if cmd == 'run' then return cmdRun(rest) end
  if cmd == 'bundle' then return cmdBundle(rest) end
  if cmd == 'version' or cmd == '--version' then
    print('ocap 0.1.0 (' .. _VERSION .. ')')
    return 0
  end
  if cmd == nil or cmd == 'help' or cmd == '--help' or cmd == '-h' then
    io.stdout:write(USAGE)
    return cmd == nil and 2 or 0
  end
  return die(('unknown command %q\n'):format(cmd) .. USAGE)
end

return M
