-- Caplets and Omnium (issue #14): manifests, and Omnium installing
-- caplets into real kernels.
local testing = require 'ocap.testing'
local omnium = require 'ocap.omnium'
local support = require 'support'

local function good(over)
  local m = { id = 'com.example.echo', name = 'Echo', version = '1.0.0', bundleSpec = '/b/echo.bundle',
    requestedServices = {}, providedServices = { 'echo' } }
  for k, v in pairs(over or {}) do m[k] = v end
  return m
end

local function refusal(m, baseDir)
  local ok, err = pcall(omnium.validateManifest, m, baseDir)
  assert(not ok, 'expected the manifest to be refused')
  return err
end

local function writeFile(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

describe('caplet manifests', function()
  it('accepts a good manifest and normalizes it', function()
    local m = omnium.validateManifest(good({ requestedServices = nil }))
    assert.same({ id = 'com.example.echo', name = 'Echo', version = '1.0.0', bundleSpec = '/b/echo.bundle',
      requestedServices = {}, providedServices = { 'echo' } }, m)
  end)

  it('refuses each bad field, naming it and its value', function()
    local cases = {
      { { id = false }, 'CapletManifest.id: false is not a string' },
      { { id = 'has space' }, 'CapletManifest.id: "has space" is not printable ASCII without spaces' },
      { { id = '' }, 'CapletManifest.id: "" is not printable ASCII without spaces' },
      { { name = '' }, 'CapletManifest.name: "" is empty' },
      { { name = 7 }, 'CapletManifest.name: 7 is not a string' },
      { { version = '1.0' }, 'CapletManifest.version: "1.0" is not a semantic version' },
      { { version = 'v1.0.0' }, 'CapletManifest.version: "v1.0.0" is not a semantic version' },
      { { version = '01.0.0' }, 'CapletManifest.version: "01.0.0" is not a semantic version' },
      { { version = '1.0.0-' }, 'CapletManifest.version: "1.0.0-" is not a semantic version' },
      { { version = '1.0.0-01' }, 'CapletManifest.version: "1.0.0-01" is not a semantic version' },
      { { version = '1.0.0+a..b' }, 'CapletManifest.version: "1.0.0+a..b" is not a semantic version' },
      { { bundleSpec = '' }, 'CapletManifest.bundleSpec: "" is empty' },
      { { bundleSpec = 'http://x/y.bundle' },
        'CapletManifest.bundleSpec: "http://x/y.bundle": only file:// URLs are supported' },
      { { bundleSpec = 'file://rel/y' },
        'CapletManifest.bundleSpec: "file://rel/y" is not a file:// URL with an absolute path' },
      { { providedServices = 'echo' }, 'CapletManifest.providedServices: "echo" is not a list of service names' },
      { { providedServices = { 'echo', 'echo' } }, 'CapletManifest.providedServices: "echo" is listed twice' },
      { { requestedServices = { 'ok', 3 } },
        'CapletManifest.requestedServices[2]: 3 is not a service name (letters, digits and _, not first a digit)' },
      { { requestedServices = { x = 'y' } },
        'CapletManifest.requestedServices: has the key "x"; it must be a list of service names' },
      { { requestedServices = { 'registry' } },
        'CapletManifest.requestedServices[1]: "registry" is reserved (every caplet gets parameters.registry)' },
      { { colour = 'red' },
        'CapletManifest.colour: unknown field (the fields are id, name, version, bundleSpec, '
          .. 'requestedServices, providedServices)' },
    }
    for _, c in ipairs(cases) do assert.equal(c[2], refusal(good(c[1]))) end
    for _, f in ipairs({ 'id', 'name', 'version', 'bundleSpec' }) do
      local m = good()
      m[f] = nil
      assert.equal(('CapletManifest.%s: missing'):format(f), refusal(m))
    end
    assert.equal('CapletManifest: "x" is not an object', refusal('x'))
  end)

  it('accepts semantic versions with pre-release and build metadata', function()
    for _, v in ipairs({ '0.0.0', '10.20.30', '1.0.0-alpha.1', '1.0.0-0.3.7', '1.0.0+20130313144700',
      '1.0.0-beta+exp.sha.5114f85' }) do
      assert.equal(v, omnium.validateManifest(good({ version = v })).version)
    end
  end)

  it('resolves bundleSpec: file:// URL, absolute, relative to the manifest', function()
    assert.equal('/a b/x.bundle', omnium.validateManifest(good({ bundleSpec = 'file:///a%20b/x.bundle' })).bundleSpec)
    assert.equal('/abs/x.bundle', omnium.validateManifest(good({ bundleSpec = '/abs/x.bundle' }), '/dir').bundleSpec)
    assert.equal('/dir/x.bundle', omnium.validateManifest(good({ bundleSpec = 'x.bundle' }), '/dir').bundleSpec)
  end)

  it('loads manifest.json from a directory, with clear errors for bad files', function()
    local dir = testing.tempDir()
    writeFile(dir .. '/manifest.json', '{"id":"a.b","name":"A","version":"1.2.3","bundleSpec":"a.bundle",'
      .. '"providedServices":["a"]}')
    local m = omnium.load(dir)
    assert.equal(dir .. '/a.bundle', m.bundleSpec)
    assert.same({ 'a' }, m.providedServices)
    assert.same(m, omnium.load(dir .. '/manifest.json'))
    writeFile(dir .. '/manifest.json', '{"id":"a.b",')
    local ok, err = pcall(omnium.load, dir)
    assert.is_false(ok)
    assert.matches('^CapletManifest: .*/manifest.json is not JSON', err)
    writeFile(dir .. '/manifest.json', '{"id":"a.b","name":"A","version":null,"bundleSpec":"a.bundle"}')
    ok, err = pcall(omnium.load, dir)
    assert.is_false(ok)
    assert.equal(('CapletManifest.version: null is not a string (in %s/manifest.json)'):format(dir), err)
    ok, err = pcall(omnium.load, dir .. '/nope')
    assert.is_false(ok)
    assert.matches('^CapletManifest: cannot read ".*/nope/manifest.json"', err)
  end)
end)

-- ---- Omnium in a real kernel ----

local bundle = require 'ocap.bundle'
local SOURCE = os.getenv('OCAP_SOURCE_DIR') or '.'

-- Bundles a caplet's Lua file into dir and returns its manifest (a table).
local function caplet(dir, src, over)
  local b = assert(bundle.build(SOURCE .. '/' .. src))
  local name = src:match('([^/]+)%.lua$')
  writeFile(dir .. '/' .. name .. '.bundle', bundle.encode(b))
  local m = { id = 'com.example.' .. name, name = name, version = '1.0.0',
    bundleSpec = dir .. '/' .. name .. '.bundle', requestedServices = {}, providedServices = {} }
  for k, v in pairs(over or {}) do m[k] = v end
  return m
end

local ECHO, CONSUMER = 'vats/caplets/echo/echo.lua', 'vats/caplets/consumer/consumer.lua'

describe('references in vat parameters', function()
  local PARAMS = 'spec/vats/caplets/params.lua'
  local kernel
  after_each(function() kernel:stop() end)
  local function cluster(parameters)
    return { bootstrap = 'p', vats = { p = { sourceSpec = PARAMS, parameters = parameters } } }
  end

  it('reach the bootstrap vat as presences, next to plain data, across restarts', function()
    kernel = testing.makeKernel({ database = testing.tempDir() })
    local peer = kernel:launchSubcluster(cluster()):await()
    local r = kernel:launchSubcluster(cluster({ greeting = 'hi' }),
      { parameterRefs = { peer = kernel:getPresence(peer.rootKref) } }):await()
    assert.equal(7, kernel:queueMessage(r.rootKref, 'peerPing', { 7 }):await())
    assert.equal('hi', kernel:queueMessage(r.rootKref, 'greeting'):await())
    assert.is_false(kernel:queueMessage(r.rootKref, 'hasRefsKey'):await())
    kernel = testing.restart(kernel)
    assert.equal(8, kernel:queueMessage(r.rootKref, 'peerPing', { 8 }):await())
  end)

  it('are refused when not presences of this kernel or clashing with plain parameters', function()
    kernel = testing.makeKernel()
    local peer = kernel:launchSubcluster(cluster()):await()
    local e = support.rejection(kernel:launchSubcluster(cluster(), { parameterRefs = { peer = 'nope' } }))
    assert.equal('parameter reference peer is not a presence of this kernel', e.message)
    e = support.rejection(kernel:launchSubcluster(cluster({ peer = 1 }), { parameterRefs = { peer = peer.rootKref } }))
    assert.equal('parameter "peer" is both in the config and a reference', e.message)
    assert.equal(1, #kernel:getStatus().vats)
  end)
end)

describe('omnium', function()
  local kernel, o, dir
  before_each(function()
    dir = testing.tempDir()
    kernel = testing.makeKernel({ database = dir .. '/db', systemSubclusters = { omnium.subcluster() } })
    o = omnium.attach(kernel)
  end)
  after_each(function() kernel:stop() end)

  local function echoManifest() return caplet(dir, ECHO, { providedServices = { 'echo' } }) end
  local function consumerManifest() return caplet(dir, CONSUMER, { requestedServices = { 'echo' } }) end
  local function state()
    local s = { list = o.caplet.list():await(), services = o.services.list():await() }
    s.vats = #kernel:getStatus().vats
    return s
  end

  it('installs a caplet, lists it, and calls it through its root and by method', function()
    local r = o.caplet.install(echoManifest()):await()
    assert.equal('com.example.echo', r.capletId)
    assert.matches('^s%d+$', r.subclusterId)
    assert.same({ 'com.example.echo' }, o.caplet.list():await())
    local rec = o.caplet.get('com.example.echo'):await()
    assert.equal(r.subclusterId, rec.subclusterId)
    assert.equal('1.0.0', rec.manifest.version)
    assert.equal('integer', math.type(rec.installedAt))
    assert.equal(rec.rootKref, kernel:getSubcluster(r.subclusterId).rootKref)
    assert.equal('Echo: hi', o.caplet.callCapletMethod('com.example.echo', 'echo', { 'hi' }):await())
    local root = o.caplet.getCapletRoot('com.example.echo'):await()
    assert.equal('Echo: yo', kernel:queueMessage(root, 'echo', { 'yo' }):await())
    assert.same({ { name = 'echo', capletId = 'com.example.echo' } }, o.services.list():await())
    assert.is_nil(o.caplet.get('com.example.nope'):await())
  end)

  it('resolves a requested service to its provider at install (Phase 1)', function()
    o.caplet.install(echoManifest()):await()
    o.caplet.install(consumerManifest()):await()
    assert.equal('Echo: via consumer',
      o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'via consumer' }):await())
    assert.equal(1, o.caplet.callCapletMethod('com.example.echo', 'count'):await())
  end)

  it('keeps caplets, their state and their wiring across a kernel restart', function()
    local r = o.caplet.install(echoManifest()):await()
    o.caplet.install(consumerManifest()):await()
    o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'one' }):await()
    kernel = testing.restart(kernel)
    o = omnium.attach(kernel)
    assert.same({ 'com.example.echo', 'com.example.consumer' }, o.caplet.list():await())
    assert.equal(r.subclusterId, o.caplet.get('com.example.echo'):await().subclusterId)
    assert.equal('Echo: two', o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'two' }):await())
    assert.equal(2, o.caplet.callCapletMethod('com.example.echo', 'count'):await())
  end)

  it('uninstalls a caplet: its subcluster goes, its id and services are free again', function()
    local r = o.caplet.install(echoManifest()):await()
    assert.is_true(o.caplet.uninstall('com.example.echo'):await())
    assert.same({}, o.caplet.list():await())
    assert.same({}, o.services.list():await())
    assert.is_nil(kernel:getSubcluster(r.subclusterId))
    o.caplet.install(echoManifest()):await()
    assert.same({ 'com.example.echo' }, o.caplet.list():await())
  end)

  it('refuses bad input with a clear error and leaves its state unchanged', function()
    o.caplet.install(echoManifest()):await()
    local before = state()
    local function refused(p, expected)
      local e = support.rejection(p)
      assert.equal(expected, e.message)
      assert.same(before, state())
    end
    refused(o.caplet.install(echoManifest()), 'caplet "com.example.echo" is already installed')
    refused(o.caplet.install(caplet(dir, CONSUMER, { id = 'c2', providedServices = { 'echo' } })),
      'caplet "c2" provides service "echo", which caplet "com.example.echo" already provides')
    refused(o.caplet.install(caplet(dir, CONSUMER, { requestedServices = { 'missing' } })),
      'caplet "com.example.consumer" requests service "missing", which no installed caplet provides')
    refused(o.caplet.uninstall('com.example.nope'), 'no caplet "com.example.nope" is installed')
    refused(o.caplet.callCapletMethod('com.example.nope', 'echo', { 'x' }),
      'no caplet "com.example.nope" is installed')
    local e = support.rejection(o.caplet.callCapletMethod('com.example.echo', 'nope', {}))
    assert.matches('^caplet "com.example.echo": nope failed: .*nope', e.message)
    assert.same(before, state())
    refused(o.caplet.install({ id = 'x' }), 'CapletManifest.name: missing')
    e = support.rejection(o.caplet.install(caplet(dir, 'spec/vats/caplets/broken.lua')))
    assert.matches('^caplet "com.example.broken" failed to install: .*broken caplet refuses to build', e.message)
    assert.same(before, state())
    e = support.rejection(o.caplet.install(caplet(dir, ECHO, { id = 'gone', bundleSpec = dir .. '/nope.bundle' })))
    assert.matches('^caplet "gone" failed to install: .*cannot read bundle ".*/nope.bundle"', e.message)
    assert.same(before, state())
    writeFile(dir .. '/junk.bundle', 'this is not a bundle')
    e = support.rejection(o.caplet.install(caplet(dir, ECHO, { id = 'junk', bundleSpec = dir .. '/junk.bundle' })))
    assert.matches('^caplet "junk" failed to install: .*junk%.bundle" is ', e.message)
    assert.same(before, state())
    -- Omnium and the kernel still work.
    assert.equal('Echo: still', o.caplet.callCapletMethod('com.example.echo', 'echo', { 'still' }):await())
  end)

  it('runs concurrent installs one after the other', function()
    local m = echoManifest()
    local p1, p2 = o.caplet.install(m), o.caplet.install(m)
    local p3 = o.caplet.install(consumerManifest())
    assert.equal('com.example.echo', p1:await().capletId)
    assert.equal('caplet "com.example.echo" is already installed', support.rejection(p2).message)
    assert.equal('com.example.consumer', p3:await().capletId)
    -- Omnium and two caplets: no subcluster launched for the refused install.
    assert.equal(3, #kernel:getSubclusters())
  end)

  it('refuses to uninstall a provider with dependents unless forced', function()
    o.caplet.install(echoManifest()):await()
    o.caplet.install(consumerManifest()):await()
    local e = support.rejection(o.caplet.uninstall('com.example.echo'))
    assert.equal('caplet "com.example.echo" provides services that com.example.consumer depend on '
      .. '(use force to uninstall anyway)', e.message)
    assert.same({ 'com.example.echo', 'com.example.consumer' }, o.caplet.list():await())
    assert.is_true(o.caplet.uninstall('com.example.echo', { force = true }):await())
    assert.same({ 'com.example.consumer' }, o.caplet.list():await())
    e = support.rejection(o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'x' }))
    assert.matches('^caplet "com.example.consumer": useService failed', e.message)
  end)

  it('upgrades a caplet in place: new code, same state, consumers still wired', function()
    o.caplet.install(echoManifest()):await()
    o.caplet.install(consumerManifest()):await()
    o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'one' }):await()
    local v2 = caplet(dir, 'spec/vats/caplets/echo2.lua', { id = 'com.example.echo', version = '2.0.0',
      providedServices = { 'echo' } })
    local r = o.caplet.upgrade(v2):await()
    assert.same({ capletId = 'com.example.echo', from = '1.0.0', to = '2.0.0', incarnation = 2 }, r)
    assert.equal('2.0.0', o.caplet.get('com.example.echo'):await().manifest.version)
    assert.equal('Echo v2: two', o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'two' }):await())
    assert.equal(2, o.caplet.callCapletMethod('com.example.echo', 'count'):await())
    -- The consumer's own upgrade keeps the provider in its parameters.
    o.caplet.upgrade(caplet(dir, CONSUMER, { requestedServices = { 'echo' }, version = '1.1.0' })):await()
    kernel = testing.restart(kernel)
    o = omnium.attach(kernel)
    assert.equal('Echo v2: three', o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'three' }):await())
    assert.equal('1.1.0', o.caplet.get('com.example.consumer'):await().manifest.version)
  end)

  it('refuses a bad upgrade and keeps the old version running', function()
    o.caplet.install(echoManifest()):await()
    local before = o.caplet.get('com.example.echo'):await()
    local function refused(m, pattern)
      local e = support.rejection(o.caplet.upgrade(m))
      assert.matches(pattern, e.message)
      assert.same(before, o.caplet.get('com.example.echo'):await())
      assert.equal('Echo: x', o.caplet.callCapletMethod('com.example.echo', 'echo', { 'x' }):await())
    end
    refused(echoManifest(), '^caplet "com.example.echo" is already at version 1.0.0$')
    refused(caplet(dir, ECHO, { id = 'com.example.echo', version = '2.0.0' }),
      '^caplet "com.example.echo": an upgrade cannot change providedServices$')
    refused(caplet(dir, 'spec/vats/caplets/broken.lua', { id = 'com.example.echo', version = '2.0.0',
      providedServices = { 'echo' } }), '^caplet "com.example.echo" failed to upgrade: .*broken caplet refuses')
    refused(caplet(dir, ECHO, { id = 'com.example.echo', version = '2.0.0', providedServices = { 'echo' },
      bundleSpec = dir .. '/nope.bundle' }), '^caplet "com.example.echo" failed to upgrade: .*cannot read bundle')
    refused(caplet(dir, ECHO, { id = 'com.example.nope', version = '2.0.0' }), '^no caplet "com.example.nope"')
    refused({ id = 'com.example.echo' }, '^CapletManifest.name: missing$')
  end)

  it('hands out revocable forwarders through parameters.registry (Phase 2)', function()
    local DYN = 'com.example.dynamic'
    o.caplet.install(echoManifest()):await()
    o.caplet.install(consumerManifest()):await()
    o.caplet.install(caplet(dir, 'spec/vats/caplets/dynamic.lua')):await()
    local function call(...) return o.caplet.callCapletMethod(DYN, ...) end
    assert.same({ 'echo' }, call('list'):await())
    call('get', { 'echo' }):await()
    assert.equal('Echo: fwd', call('call', { 'echo', 'echo', 'fwd' }):await())
    -- A caplet cannot register a service: the registry it holds has no such method.
    assert.matches('register', support.rejection(call('register', { 'echo' })).message)
    local e = support.rejection(call('get', { 'nope' }))
    assert.matches('no service "nope"', e.message)
    kernel = testing.restart(kernel)
    o = omnium.attach(kernel)
    assert.equal('Echo: after restart', call('call', { 'echo', 'echo', 'after restart' }):await())
    assert.equal(1, o.services.revoke('echo'):await())
    e = support.rejection(call('call', { 'echo', 'echo', 'x' }))
    assert.matches('service "echo" has been revoked', e.message)
    -- The provider's other holders are unaffected.
    assert.equal('Echo: direct', o.caplet.callCapletMethod('com.example.echo', 'echo', { 'direct' }):await())
    assert.equal('Echo: p1', o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'p1' }):await())
    assert.same({}, o.services.list():await())
    assert.matches('no service "echo"', support.rejection(call('get', { 'echo' })).message)
    assert.equal('no service "echo"', support.rejection(o.services.revoke('echo')).message)
    kernel = testing.restart(kernel)
    o = omnium.attach(kernel)
    assert.matches('has been revoked', support.rejection(call('call', { 'echo', 'echo', 'x' })).message)
  end)

  it('revokes the forwarders of an uninstalled provider', function()
    o.caplet.install(echoManifest()):await()
    o.caplet.install(caplet(dir, 'spec/vats/caplets/dynamic.lua')):await()
    o.caplet.callCapletMethod('com.example.dynamic', 'get', { 'echo' }):await()
    o.caplet.uninstall('com.example.echo'):await()
    local e = support.rejection(o.caplet.callCapletMethod('com.example.dynamic', 'call', { 'echo', 'echo', 'x' }))
    assert.matches('service "echo" has been revoked', e.message)
    -- A new provider of the name is a new registration.
    o.caplet.install(echoManifest()):await()
    o.caplet.callCapletMethod('com.example.dynamic', 'get', { 'echo' }):await()
    assert.equal('Echo: again',
      o.caplet.callCapletMethod('com.example.dynamic', 'call', { 'echo', 'echo', 'again' }):await())
  end)

  it('loads the shipped caplets from their directories', function()
    local m = omnium.load(SOURCE .. '/vats/caplets/echo')
    assert.equal('com.example.echo', m.id)
    assert.matches('/vats/caplets/echo/echo%.bundle$', m.bundleSpec)
    assert.same({ 'echo' }, omnium.load(SOURCE .. '/vats/caplets/consumer').requestedServices)
  end)
end)

describe('ocap caplet', function()
  local BIN = os.getenv('OCAP_BIN') or 'build/ocap'
  if BIN:sub(1, 1) ~= '/' then BIN = SOURCE .. '/' .. BIN end

  -- Runs `ocap caplet ARGS` with home HOME; returns status, stdout, stderr.
  local function ocap(home, ...)
    local quoted = {}
    for _, a in ipairs({ ... }) do quoted[#quoted + 1] = "'" .. a:gsub("'", "'\\''") .. "'" end
    local cmd = ('%q caplet --home %q %s > %q/.out 2> %q/.err'):format(BIN, home, table.concat(quoted, ' '),
      home, home)
    local _, _, code = os.execute('mkdir -p ' .. home .. ' && ' .. cmd)
    local function read(p)
      local f = io.open(p, 'rb')
      local t = f:read('a')
      f:close()
      return t
    end
    return code, read(home .. '/.out'), read(home .. '/.err')
  end

  it('installs, lists, calls and uninstalls through the database of its home', function()
    local dir = testing.tempDir()
    local home = dir .. '/home'
    os.execute('mkdir ' .. dir .. '/echo')
    caplet(dir .. '/echo', ECHO)
    writeFile(dir .. '/echo/manifest.json', '{"id":"com.example.echo","name":"Echo","version":"1.0.0",'
      .. '"bundleSpec":"echo.bundle","providedServices":["echo"]}')
    assert.same({ 0, 'com.example.echo s2\n', '' }, { ocap(home, 'install', dir .. '/echo') })
    assert.same({ 0, 'com.example.echo 1.0.0 s2\n', '' }, { ocap(home, 'list') })
    assert.same({ 0, '"Echo: hi"\n', '' }, { ocap(home, 'call', 'com.example.echo', 'echo', '["hi"]') })
    assert.same({ 0, '1\n', '' }, { ocap(home, 'call', 'com.example.echo', 'count') })
    assert.same({ 1, '', 'ocap caplet: caplet "com.example.echo" is already installed\n' },
      { ocap(home, 'install', dir .. '/echo') })
    assert.same({ 1, '', 'ocap caplet: no caplet "com.example.nope" is installed\n' },
      { ocap(home, 'uninstall', 'com.example.nope') })
    local code, _, err = ocap(home, 'call', 'com.example.echo', 'echo', '{oops')
    assert.equal(2, code)
    assert.matches('ARGS%-JSON must be a JSON array', err)
    assert.equal(2, (ocap(home, 'frobnicate')))
    assert.same({ 0, '', '' }, { ocap(home, 'uninstall', 'com.example.echo') })
    assert.same({ 0, '', '' }, { ocap(home, 'list') })
  end)
end)
