-- Caplets and Omnium (issue #14): manifests, and Omnium installing
-- caplets into real kernels.
local testing = require 'ocap.testing'
local omnium = require 'ocap.omnium'

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
