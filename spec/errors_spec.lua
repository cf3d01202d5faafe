-- Errors a person can act on (issue #10): where a failing method raised,
-- why a vat was killed, which system subcluster failed and where, what a
-- forgotten :await() does, and host API and config errors that name what
-- is wrong.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection

local ECHO = 'spec/vats/echo.lua'
local RUNAWAY = 'spec/vats/runaway.lua'
local BIN = os.getenv('OCAP_BIN') or 'build/ocap'

local entries = support.logEntries

local function writeFile(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
end

-- Runs a host script with the real ocap binary; returns its stderr and
-- stdout. env is a shell prefix such as 'OCAP_LOG=debug'.
local function runHost(source, env)
  local dir = testing.tempDir()
  writeFile(dir .. '/host.lua', source)
  local cmd = ('cd %q && %s %q run --memory %q/host.lua 2>%q/err'):format(
    os.getenv('OCAP_SOURCE_DIR') or '.', env or '', BIN, dir, dir)
  local p = assert(io.popen(cmd .. ' < /dev/null', 'r'))
  local out = p:read('a')
  p:close()
  local f = assert(io.open(dir .. '/err'))
  local err = f:read('a')
  f:close()
  return err, out
end

describe('where an error came from', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function echoPair()
    return kernel:launchSubcluster({ bootstrap = 'a', vats = {
      a = { sourceSpec = ECHO }, b = { sourceSpec = ECHO },
    } }):await()
  end

  it('logs the position of a failing method once, at warn, where it raised', function()
    local r = echoPair()
    -- a asks b, b raises; the rejection crosses two vats and the host.
    local err = rejection(kernel:queueMessage(r.rootKref, 'callPeer', { 'b', 'boom' }))
    assert.equal('boom', err.message)
    local warned = entries(kernel, 'warn', 'echo%.lua:%d+: boom')
    assert.equal(1, #warned)
    assert.matches('"boom" failed: spec/vats/echo.lua:%d+: boom$', warned[1].message)
    assert.equal(1, #entries(kernel, 'debug', '^method failed$'))
  end)

  it('gives an error raised in a :next callback as a method raise gives it', function()
    -- It came with its file:line in front, as a string, through the
    -- kernel and on the host alike.
    local r = echoPair()
    local err = rejection(kernel:queueMessage(r.rootKref, 'nextBoom', {}))
    assert.same({ 'Error', 'boom' }, { err.name, err.message })
    err = rejection(kernel:queueMessage(r.rootKref, 'callPeer', { 'b', 'nextBoom' }))
    assert.same({ 'Error', 'boom' }, { err.name, err.message })
    for _, p in ipairs({
      ocap.Promise.resolve(1):next(function() error('boom') end),
      ocap.Promise.reject('x'):catch(function() error('boom') end),
      ocap.Promise.resolve(1):finally(function() error('boom') end),
    }) do
      err = rejection(p)
      assert.same({ 'Error', 'boom' }, { err.name, err.message })
    end
    -- Raised data, and a string raised without a position, are kept as
    -- a method's would be.
    assert.same({ code = 7 }, rejection(ocap.Promise.resolve(1):next(function() error({ code = 7 }) end)))
    err = rejection(ocap.Promise.resolve(1):next(function() error('at: 12: not a position', 0) end))
    assert.equal('at: 12: not a position', err.message)
  end)

  it('does not log error values a method raises on purpose', function()
    local r = echoPair()
    rejection(kernel:queueMessage(r.rootKref, 'rejectData', {}))
    assert.equal(0, #entries(kernel, 'warn'))
  end)

  it('logs a vat the kernel kills for its meter or its memory', function()
    local function runaway(name, creationOptions)
      return kernel:launchSubcluster({ bootstrap = name, vats = {
        [name] = { sourceSpec = RUNAWAY, creationOptions = creationOptions },
      } }):await().rootKref
    end
    rejection(kernel:queueMessage(runaway('looper', { meter = { instructions = 2e6 } }), 'loop', {}))
    local killed = entries(kernel, 'error', 'killed')
    assert.equal(1, #killed)
    assert.matches('^vat v%d+ %(looper%) killed: %[VAT_FATAL:METER_EXHAUSTED%] instruction meter exhausted$',
      killed[1].message)
    rejection(kernel:queueMessage(runaway('glutton', { memoryLimit = 8 * 2 ^ 20 }), 'stringBomb', {}))
    killed = entries(kernel, 'error', 'killed')
    assert.equal(2, #killed)
    assert.matches('^vat v%d+ %(glutton%) killed: %[VAT_FATAL:MEMORY_EXHAUSTED%] memory limit exceeded$',
      killed[2].message)
  end)

  it('shows the position with the default logger; OCAP_LOG chooses the level', function()
    local host = [[
      local ocap = require 'ocap'
      local k = ocap.Kernel.make {}
      local r = k:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = 'spec/vats/echo.lua' } } }):await()
      print(pcall(ocap.await, k:queueMessage(r.rootKref, 'boom', {})))
    ]]
    local err, out = runHost(host)
    assert.matches('false\tError: boom', out, 1, true)
    assert.matches('[warn] v1 [liveslots] Alleged: echo: "boom" failed: spec/vats/echo.lua:22: boom', err, 1, true)
    assert.not_matches('stack traceback', err, 1, true)
    err = runHost(host, 'OCAP_LOG=debug')
    -- The traceback's lines are indented, so none can pass for an entry.
    assert.matches('method failed {traceback = \n    spec/vats/echo.lua:22: boom\n    stack traceback:', err, 1, true)
    err = runHost(host, 'OCAP_LOG=error')
    assert.not_matches('boom', err, 1, true)
  end)
end)

describe('a system subcluster that fails to launch', function()
  local function make(sourceSpec)
    return pcall(testing.makeKernel, { systemSubclusters = { {
      name = 'sys', config = { bootstrap = 'v', vats = { v = { sourceSpec = sourceSpec } } },
    } } })
  end

  it('keeps the file and line of a syntax error', function()
    local ok, err = make('spec/vats/bad_syntax.lua')
    assert.is_false(ok)
    assert.matches('^Kernel%.make: system subcluster "sys" failed to launch: vat "v" failed to start: '
      .. "error loading module 'spec/vats/bad_syntax%.lua': spec/vats/bad_syntax%.lua:3: ", err)
  end)

  it('keeps the file and line of a failed require', function()
    local dir = testing.tempDir()
    writeFile(dir .. '/needy.lua', "local x = require 'nothere'\nreturn x\n")
    local ok, err = make(dir .. '/needy.lua')
    assert.is_false(ok)
    assert.matches('failed to launch: vat "v" failed to start: ' .. dir:gsub('%p', '%%%0')
      .. "/needy%.lua:1: module 'nothere' not found in this vat", err)
  end)
end)

describe('a promise used as a value', function()
  local kernel, p
  before_each(function()
    kernel = testing.makeKernel()
    p = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } })
  end)
  after_each(function() kernel:stop() end)

  local HINT = 'this is a promise; did you forget :await()?'
  local misuses = {
    ['reading a field'] = function() return p.rootKref end,
    ['comparing'] = function() return p < 1 end,
    ['comparing with <='] = function() return 1 <= p end,
    ['concatenating'] = function() return 'root: ' .. p end,
    ['adding'] = function() return p + 1 end,
    ['negating'] = function() return -p end,
    ['calling'] = function() local v = p() return v end,
    ['taking its length'] = function() return #p end,
  }
  for what, f in pairs(misuses) do
    it('hints at :await() when ' .. what, function()
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.matches(HINT, err, 1, true)
      assert.matches('^spec/errors_spec%.lua:%d+: ', err)
    end)
  end

  it('says so when printed', function()
    assert.equal('Promise <pending> (' .. HINT .. ')', tostring(p))
  end)

  it('keeps its methods, and crosses vats as a promise', function()
    local r = p:await()
    assert.is_string(r.rootKref)
    local seen = {}
    p:next(function(v) seen[#seen + 1] = v.subclusterId end)
    p:catch(function() end):finally(function() seen[#seen + 1] = 'finally' end)
    ocap.await(ocap.Promise.resolve(nil))
    kernel:run()
    assert.same({ r.subclusterId, 'finally' }, seen)
    -- A promise passed as an argument is still marshalled as a promise.
    local kit = ocap.makePromiseKit()
    local echoed = kernel:queueMessage(r.rootKref, 'echoAll', { kit.promise }):await()[1]
    assert.is_true(ocap.isPromise(echoed))
    kit.resolve(42)
    assert.equal(42, echoed:await())
  end)

end)

describe('host API and config errors', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  it('getPresence honours iface', function()
    local r = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
    assert.equal('[Presence Alleged: Echo]', tostring(kernel:getPresence(r.rootKref, 'Echo')))
    -- The name given last stays with the presence while it lives: held
    -- here, so that a collection between the two calls cannot make a new
    -- one under the default name.
    local other = kernel:getPresence(r.rootKref, 'Other')
    assert.equal('[Presence Alleged: Other]', tostring(other))
    assert.equal('[Presence Alleged: Other]', tostring(kernel:getPresence(r.rootKref)))
    assert.equal(7, ocap.E(kernel:getPresence(r.rootKref, 'Echo')).ping(7):await())
  end)

  it('refuses systemSubclusters given without the list braces, naming the key', function()
    local ok, err = pcall(testing.makeKernel, { systemSubclusters = {
      name = 'sys', config = { bootstrap = 'v', vats = { v = { sourceSpec = ECHO } } },
    } })
    assert.is_false(ok)
    assert.matches('Kernel.make: option systemSubclusters must be a list of { name = ..., config = ... }, '
      .. 'but it has the key "config"', err, 1, true)
  end)

  it('refuses a ClusterConfig.io that is not a table of IOConfigs', function()
    local function launch(io)
      return rejection(kernel:launchSubcluster({ bootstrap = 'e', io = io, vats = { e = { sourceSpec = ECHO } } }))
        .message
    end
    assert.equal('ClusterConfig.io: must be a table of channel name = IOConfig, got string', launch('garbage'))
    assert.equal('ClusterConfig.io.console: must be an IOConfig table, got string',
      launch({ console = 'socket' }))
    assert.equal('ClusterConfig.io.console.type: must be one of "socket", "file", "console", "listen", '
      .. '"network", got "pipe"', launch({ console = { type = 'pipe' } }))
    assert.equal('ClusterConfig.io.c.direction: must be "in", "out" or "inout"',
      launch({ c = { type = 'console', direction = 'up' } }))
    assert.equal('ClusterConfig.io.c: unknown key "mode"', launch({ c = { type = 'file', mode = 1 } }))
    assert.equal(0, #kernel:getStatus().vats)
  end)

  it('prefixes the errors of revoke and of the durability option', function()
    local function raised(f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      return err
    end
    assert.equal('revoke: invalid kref "x1"', raised(kernel.revoke, kernel, 'x1'))
    assert.equal('revoke: cannot revoke promise kp1', raised(kernel.revoke, kernel, 'kp1'))
    assert.equal('revoke: unknown object ko99', raised(kernel.revoke, kernel, 'ko99'))
    assert.equal("Kernel.make: option durability must be 'none' or 'fsync', got \"garbage\"",
      raised(ocap.Kernel.make, { durability = 'garbage' }))
  end)

  it('says a presence kept across testing.restart belongs to a stopped kernel', function()
    kernel:stop()
    kernel = testing.makeKernel({ database = testing.tempDir() })
    local r = kernel:launchSubcluster({ bootstrap = 'e', vats = { e = { sourceSpec = ECHO } } }):await()
    local old = kernel:getPresence(r.rootKref, 'echo')
    kernel = testing.restart(kernel)
    local stopped = ('[Presence Alleged: echo] (%s) belongs to a stopped kernel: get it again from the '
      .. 'running one, e.g. kernel:getPresence("%s")'):format(r.rootKref, r.rootKref)
    local ok, err = pcall(function() return ocap.E(old).ping(1) end)
    assert.is_false(ok)
    assert.matches(stopped, err, 1, true)
    ok, err = pcall(kernel.queueMessage, kernel, old, 'ping', { 1 })
    assert.is_false(ok)
    assert.matches('queueMessage: ' .. stopped, err, 1, true)
    assert.equal(1, ocap.E(kernel:getPresence(r.rootKref)).ping(1):await())
  end)
end)

describe('an endowment the vat did not request', function()
  local FORGETFUL = 'spec/vats/forgetful.lua'
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function launch(globals, parameters)
    return kernel:launchSubcluster({ bootstrap = 'f', vats = {
      f = { sourceSpec = FORGETFUL, globals = globals, parameters = parameters },
    } })
  end

  local hints = {
    print = 'print is an endowment this vat did not request; add "print" to VatConfig.globals',
    setTimeout = 'add "setTimeout" to VatConfig.globals',
    clearTimeout = 'add "clearTimeout" to VatConfig.globals',
    setInterval = 'add "setInterval" to VatConfig.globals',
    clearInterval = 'add "clearInterval" to VatConfig.globals',
    ['os.time'] = 'os is an endowment this vat did not request; add "os.time", "os.clock" or "os.date"',
    ['math.random'] = 'math.random is an endowment this vat did not request; add "math.random"',
  }
  for name, hint in pairs(hints) do
    it('says which VatConfig.globals entry gives ' .. name, function()
      local root = launch(nil):await().rootKref
      local err = rejection(kernel:queueMessage(root, 'use', { name }))
      assert.matches(hint, err.message, 1, true)
      assert.matches(hint, entries(kernel, 'warn', 'failed')[1].message, 1, true)
    end)
  end

  it('names the missing os function when the vat has others', function()
    local root = launch({ 'os.time' }):await().rootKref
    assert.is_number(kernel:queueMessage(root, 'use', { 'os.time' }):await())
    local err = rejection(kernel:queueMessage(root, 'use', { 'os.clock' }))
    assert.matches(": os.clock is an endowment this vat did not request; add \"os.clock\" to VatConfig.globals$",
      err.message)
  end)

  it('says it when the vat starts, and leaves absent endowments nil to read', function()
    local err = rejection(launch(nil, { atTopLevel = 'print' }))
    assert.matches('buildRootObject failed: .*add "print" to VatConfig.globals$', err.message)
    local root = launch(nil):await().rootKref
    assert.is_false(kernel:queueMessage(root, 'has', { 'print' }):await())
  end)

  it('adds nothing to other nil calls', function()
    local root = launch({ 'os.time' }):await().rootKref
    local err = rejection(kernel:queueMessage(root, 'use', { 'a table field' }))
    assert.equal("attempt to call a nil value (field 'time')", err.message)
  end)
end)
