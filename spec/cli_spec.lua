-- The `ocap` command (host/main.c, lua/ocap/cli.lua), driven as a user
-- would: the real binary in a scratch directory.
local testing = require 'ocap.testing'

local support = require 'support'
local BIN = support.BIN
local SRC = support.SRC
local q = support.q
local slurp = support.slurp
local write = support.spit
local exists = support.exists

--- Runs `ocap <args>` in directory dir, with environment assignments env
--- ("NAME=value ..."); returns stdout, stderr and the exit code.
local function ocap(dir, args, env)
  local out, err = dir .. '/.stdout', dir .. '/.stderr'
  local _, _, code = os.execute(('cd %s && %s %s %s >%s 2>%s </dev/null'):format(
    q(dir), env or '', q(BIN), args, q(out), q(err)))
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  return o, e, code
end

-- A host script that counts in a counter vat kept by its kernel (launched
-- on first use), prints the count and its arguments, and returns `status`.
local COUNTING = ([[
local ocap = require 'ocap'
local options = %s
local function count()
  local kernel = ocap.Kernel.make(options)
  local sc = kernel:getSubclusters()[1]
  local root
  if sc then
    root = kernel.K:krefOf(sc.vats.c, 'o+0')
  else
    root = kernel:launchSubcluster({ bootstrap = 'c',
      vats = { c = { sourceSpec = %q } } }):await().rootKref
  end
  local n = kernel:queueMessage(root, 'increment', {}):await()
  kernel:stop()
  return n
end
local n = count()
if (...) == 'twice' then n = count() end
print('count ' .. n)
print('args ' .. table.concat({ ... }, ' '))
return tonumber(os.getenv('STATUS') or '0')
]])

local function countingScript(dir, options)
  local path = dir .. '/count.lua'
  write(path, COUNTING:format(options or '{ logger = function() end }', SRC .. '/spec/vats/counter.lua'))
  return path
end

describe('ocap run', function()
  local dir

  before_each(function() dir = testing.tempDir() end)
  after_each(function() testing.cleanup() end)

  it('keeps state in memory when the script names no database', function()
    countingScript(dir)
    for _ = 1, 2 do
      local out, err, code = ocap(dir, 'run count.lua')
      assert.equal(0, code, err)
      assert.matches('count 1\n', out)
      assert.equal('', err)
    end
    assert.is_false(exists(dir .. '/.ocap'))
  end)

  it('keeps state in the --db database, and says so once', function()
    countingScript(dir)
    local out, err, code = ocap(dir, 'run --db state/k count.lua twice')
    assert.equal(0, code, err)
    assert.matches('count 2\n', out)
    assert.equal('ocap run: kernel state is kept in the database state/k\n', err)
    out = ocap(dir, 'run --db=state/k count.lua')
    assert.matches('count 3\n', out)
    assert.is_true(exists(dir .. '/state/k/CURRENT'))
  end)

  it('uses the database the script names; --memory overrides it', function()
    countingScript(dir, "{ database = 'mine', logger = function() end }")
    local out, err = ocap(dir, 'run count.lua')
    assert.matches('count 1\n', out)
    assert.equal('ocap run: kernel state is kept in the database mine\n', err)
    assert.matches('count 2\n', (ocap(dir, 'run count.lua')))
    out, err = ocap(dir, 'run --memory count.lua')
    assert.matches('count 1\n', out)
    assert.equal('', err)
    assert.matches('count 3\n', (ocap(dir, 'run count.lua')))
  end)

  it('wipes with --reset once per run, not at each open', function()
    countingScript(dir)
    ocap(dir, 'run --db db count.lua')
    local out, err = ocap(dir, 'run --db db --reset count.lua twice')
    assert.matches('count 2\n', out)
    assert.matches('%(wiped first%)', err)
  end)

  it('gives the script everything after it, flags and -- included', function()
    countingScript(dir)
    ocap(dir, 'run --db db count.lua')
    local out, err, code = ocap(dir, 'run --db db count.lua a --reset -- --db x --help')
    assert.equal(0, code, err)
    assert.matches('count 2\n', out) -- not wiped
    assert.matches('args a %-%-reset %-%- %-%-db x %-%-help\n', out)
    assert.is_false(exists(dir .. '/x'))
  end)

  it('takes the script after --, even one named like a flag', function()
    write(dir .. '/-s.lua', "print('ran', ...)")
    local out, err, code = ocap(dir, 'run -- -s.lua --memory')
    assert.equal(0, code, err)
    assert.equal('ran\t--memory\n', out)
  end)

  it("returns the script's integer, 1 when it raises", function()
    countingScript(dir)
    local out, err, code = ocap(dir, 'run count.lua', 'STATUS=3')
    assert.equal(3, code, err)
    assert.matches('count 1', out)
    write(dir .. '/bad.lua', "error('broken host')")
    out, err, code = ocap(dir, "run bad.lua")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches('^ocap: bad.lua:1: broken host\n', err)
  end)

  local usageErrors = {
    ['run --frobnicate count.lua'] = "ocap run: unknown option --frobnicate (see 'ocap run --help')\n",
    ['run'] = "ocap run: no host script given (see 'ocap run --help')\n",
    ['run --db'] = "ocap run: --db needs a directory (see 'ocap run --help')\n",
    ['run --db d --memory count.lua'] = "ocap run: --db and --memory exclude each other (see 'ocap run --help')\n",
    ['run missing.lua'] = "ocap run: cannot open host script missing.lua (see 'ocap run --help')\n",
    ['frobnicate'] = "ocap: unknown command frobnicate (see 'ocap --help')\n",
    ['version now'] = "ocap version: unexpected argument now (see 'ocap version --help')\n",
    ['help frobnicate'] = "ocap help: unknown command frobnicate (see 'ocap help --help')\n",
    ['test --frobnicate'] = "ocap test: unknown/bad flag: --frobnicate (see 'ocap test --help')\n",
  }
  for args, message in pairs(usageErrors) do
    it('exits 2 with one line for a usage error: ocap ' .. args, function()
      countingScript(dir)
      local out, err, code = ocap(dir, args)
      assert.equal(2, code)
      assert.equal('', out)
      assert.equal(message, err)
      assert.is_false(exists(dir .. '/d'))
    end)
  end

  local RUN = 'usage: ocap run %[%-%-db DIR | %-%-home DIR%]'
  local helps = {
    ['--help'] = 'usage: ocap run ', ['-h'] = 'usage: ocap run ', ['help'] = 'usage: ocap run ',
    ['help run'] = RUN, ['run --help'] = RUN,
    ['run -h'] = RUN, ['run --db d --help'] = RUN,
    ['bundle --help'] = 'usage: ocap bundle ', ['help bundle'] = 'usage: ocap bundle ',
    ['bundle x.lua --help'] = 'usage: ocap bundle ',
    ['version --help'] = 'usage: ocap version', ['help version'] = 'usage: ocap version',
  }
  for args, pattern in pairs(helps) do
    it('prints help on stdout and exits 0: ocap ' .. args, function()
      local out, err, code = ocap(dir, args)
      assert.equal(0, code, err)
      assert.equal('', err)
      assert.matches('^' .. pattern, out)
    end)
  end

  it('prints the usage on stderr and exits 2 without a command', function()
    local out, err, code = ocap(dir, '')
    assert.equal(2, code)
    assert.equal('', out)
    assert.matches('^usage: ocap run ', err)
  end)
end)

describe('ocap bundle', function()
  local dir

  -- A vat that requires cjson and a module next to it.
  local function writeVat(where)
    os.execute('mkdir -p ' .. q(where))
    write(where .. '/helper.lua', "return { twice = function(x) return 2 * x end }\n")
    write(where .. '/main.lua', [[
local ocap = require 'ocap'
local cjson = require 'cjson'
local helper = require 'helper'
local M = {}
function M.buildRootObject()
  return ocap.makeDefaultExo('m', {
    run = function(_, text) return helper.twice(cjson.decode(text).n) end,
  })
end
return M
]])
  end

  local function launch(spec)
    local kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'm', vats = { m = spec } }):await()
    local result = kernel:queueMessage(r.rootKref, 'run', { '{"n": 21}' }):await()
    kernel:stop()
    return result
  end

  before_each(function() dir = testing.tempDir() end)
  after_each(function() testing.cleanup() end)

  it('bundles a vat requiring cjson and a sibling module', function()
    writeVat(dir)
    local out, err, code = ocap(dir, 'bundle main.lua')
    assert.equal(0, code, err)
    assert.equal('main.lua -> main.bundle (2 modules)\n', out)
    os.rename(dir .. '/helper.lua', dir .. '/helper.moved')
    assert.equal(42, launch({ bundleSpec = dir .. '/main.bundle' }))
  end)

  it('launches the same vat from its source', function()
    writeVat(dir)
    assert.equal(42, launch({ sourceSpec = dir .. '/main.lua' }))
  end)

  it('creates the directories -o names', function()
    writeVat(dir)
    local out, err, code = ocap(dir, 'bundle -o out/sub/m.bundle main.lua')
    assert.equal(0, code, err)
    assert.equal('main.lua -> out/sub/m.bundle (2 modules)\n', out)
    assert.equal(42, launch({ bundleSpec = dir .. '/out/sub/m.bundle' }))
  end)

  it("bundles a directory's vats, into -o's directory", function()
    writeVat(dir .. '/vats')
    write(dir .. '/vats/solo.lua', "return { buildRootObject = function() end }\n")
    local out, err, code = ocap(dir, 'bundle vats')
    assert.equal(0, code, err)
    assert.equal('vats/main.lua -> vats/main.bundle (2 modules)\nvats/solo.lua -> vats/solo.bundle (1 module)\n', out)
    out, err, code = ocap(dir, 'bundle vats/ -o built')
    assert.equal(0, code, err)
    assert.equal('vats/main.lua -> built/main.bundle (2 modules)\nvats/solo.lua -> built/solo.bundle (1 module)\n', out)
    assert.equal(42, launch({ bundleSpec = dir .. '/built/main.bundle' }))
  end)

  it('says what it wants of a directory without vats', function()
    os.execute('mkdir ' .. q(dir .. '/empty'))
    write(dir .. '/empty/notes.lua', 'return {}\n')
    local out, err, code = ocap(dir, 'bundle empty')
    assert.equal(2, code)
    assert.equal('', out)
    assert.equal("ocap bundle: empty has no vat files (.lua files defining buildRootObject); give the vat files"
      .. " to bundle (see 'ocap bundle --help')\n", err)
  end)

  it('names a module that is not next to the vat', function()
    write(dir .. '/v.lua', "local x = require 'nope'\nreturn { buildRootObject = function() end }\n")
    local out, err, code = ocap(dir, 'bundle v.lua')
    assert.equal(1, code)
    assert.equal('', out)
    assert.equal('ocap bundle: v.lua requires "nope", which is not in . (a vat gets ocap, ocap.* and cjson,'
      .. ' and the modules next to it)\n', err)
  end)

  it('refuses unknown options and missing operands with one line', function()
    local _, err, code = ocap(dir, 'bundle --frobnicate x.lua')
    assert.equal(2, code)
    assert.equal("ocap bundle: unknown option --frobnicate (see 'ocap bundle --help')\n", err)
    _, err, code = ocap(dir, 'bundle -o')
    assert.equal(2, code)
    assert.equal("ocap bundle: -o needs a file or directory (see 'ocap bundle --help')\n", err)
    _, err, code = ocap(dir, 'bundle')
    assert.equal(2, code)
    assert.equal("ocap bundle: no vat file given (see 'ocap bundle --help')\n", err)
  end)
end)
