-- `ocap run --home DIR` (lua/ocap/daemonkernel.lua, lua/ocap/cli.lua):
-- a host script that uses the daemon's kernel while a daemon runs for the
-- home, and the home's database when none does. Driven with the real
-- binary in a temporary home; readiness is polled by `ocap daemon start`
-- itself, so no check depends on time.
local cjson = require 'cjson'
local rpc = require('ocap.core').rpc

local support = require 'support'
local BIN = support.BIN
local SRC_ABS = support.SRC_ABS
local q = support.q
local slurp = support.slurp
local spit = support.spit

-- A host script that launches a counter the first time (its vat named by
-- a path relative to the script's directory) and increments it.
local SCRIPT = [[
local ocap = require 'ocap'
local kernel = ocap.Kernel.make {}
local root
for _, sc in ipairs(kernel:getSubclusters()) do
  if sc.config.bootstrap == 'c' then root = sc.rootKref end
end
if not root then
  root = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = 'counter.lua' } } }):await().rootKref
end
print(root, kernel:queueMessage(root, 'increment', { 5 }):await())
kernel:stop()
]]

describe('ocap run --home', function()
  local dir, home

  --- Runs `cmd` in dir; returns stdout, stderr and the exit code.
  local function sh(cmd)
    local _, _, code = os.execute(('cd %s && %s >.out 2>.err </dev/null'):format(q(dir), cmd))
    local o, e = slurp(dir .. '/.out'), slurp(dir .. '/.err')
    return o, e, code
  end
  local function run(args) return sh(q(BIN) .. ' run ' .. args) end
  local function daemon(args) return sh(q(BIN) .. ' daemon --home ' .. q(home) .. ' ' .. args) end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute('mkdir -m 700 ' .. q(dir)))
    home = dir .. '/home'
    spit(dir .. '/host.lua', SCRIPT)
    assert(os.execute(('cp %s %s'):format(q(SRC_ABS .. '/spec/vats/counter.lua'), q(dir .. '/counter.lua'))))
  end)

  after_each(function()
    local pid = tonumber(slurp(home .. '/daemon.pid'):match('%d+') or '')
    if pid then rpc.kill(pid, 9) end
    os.execute('rm -rf ' .. q(dir))
  end)

  it("drives the daemon's kernel while a daemon runs for the home", function()
    local _, err, code = daemon('start')
    assert.are.equal(0, code, err)
    local pid = tonumber(slurp(home .. '/daemon.pid'):match('%d+'))
    local out
    out, err, code = run('--home ' .. q(home) .. ' host.lua')
    assert.are.equal(0, code, err)
    assert.are.equal(('ocap run: using the kernel of the daemon (pid %d) of home %s\n'):format(pid, home), err)
    local kref = out:match('^(ko%d+)\t5\n$')
    assert.truthy(kref, out)
    -- A second script finds the same kernel, and its state.
    out, err, code = run('--home ' .. q(home) .. ' host.lua')
    assert.are.equal(0, code, err)
    assert.are.equal(kref .. '\t10\n', out)
    -- The daemon itself has the subcluster (and the vat's path was made
    -- absolute for it).
    out, err, code = daemon('exec getSubclusters')
    assert.are.equal(0, code, err)
    local found
    for _, sc in ipairs(cjson.decode(out)) do
      if sc.rootKref == kref then found = sc end
    end
    assert.truthy(found, out)
    assert.are.equal(dir .. '/counter.lua', found.config.vats.c.sourceSpec:gsub('^/private', ''))
    -- After the daemon stops, the same home's database holds it all.
    _, err, code = daemon('stop')
    assert.are.equal(0, code, err)
    out, err, code = run('--home ' .. q(home) .. ' host.lua')
    assert.are.equal(0, code, err)
    assert.are.equal(kref .. '\t15\n', out)
    assert.matches('no daemon runs for home', err)
  end)

  it("keeps a script's state in the home's database when no daemon runs, for the daemon to find", function()
    local _
    local out, err, code = run('--home ' .. q(home) .. ' host.lua')
    assert.are.equal(0, code, err)
    assert.matches('^ocap run: no daemon runs for home ' .. home:gsub('%p', '%%%0') .. ':', err)
    assert.matches('kept in the database ' .. (home .. '/db'):gsub('%p', '%%%0'), err)
    local kref = out:match('^(ko%d+)\t5\n$')
    assert.truthy(kref, out)
    _, err, code = daemon('start')
    assert.are.equal(0, code, err)
    out, err, code = daemon('queueMessage ' .. kref .. ' get')
    assert.are.equal(0, code, err)
    assert.are.equal('5\n', out)
  end)

  it('refuses what the daemon cannot do, saying so', function()
    local _, err, code = daemon('start')
    assert.are.equal(0, code, err)
    spit(dir .. '/bad.lua', "require('ocap').Kernel.make { database = 'elsewhere' }\n")
    _, err, code = run('--home ' .. q(home) .. ' bad.lua')
    assert.are.equal(1, code)
    assert.matches("option database is not available with the daemon's kernel %(ocap run %-%-home%)", err)
    _, err, code = run('--home ' .. q(home) .. ' --reset host.lua')
    assert.are.equal(2, code)
    assert.matches("^ocap run: %-%-reset cannot wipe the daemon's database", err)
  end)

  it('reports usage errors in one line with status 2', function()
    for args, msg in pairs({
      ['--home'] = 'ocap run: --home needs a directory',
      ['--home x --db y host.lua'] = 'ocap run: --home excludes --db',
      ['--home x --memory host.lua'] = 'ocap run: --home excludes --memory',
    }) do
      local _, err, code = run(args)
      assert.are.equal(2, code, args)
      assert.are.equal(msg .. " (see 'ocap run --help')\n", err)
    end
  end)
end)
