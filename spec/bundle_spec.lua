-- Bundles cannot contain or shadow ocap's runtime modules (issue #9,
-- item 5): refused when bundling, when launching and when restarting.
local testing = require 'ocap.testing'
local bundle = require 'ocap.bundle'
local support = require 'support'
local rejection = support.rejection

local BIN = os.getenv('OCAP_BIN') or 'build/ocap'

-- Every name the runtime owns, and a few it might own one day.
local RESERVED = {
  'ocap', 'ocap.api', 'ocap.durable', 'ocap.exo', 'ocap.guards', 'ocap.liveslots', 'ocap.logger', 'ocap.vom',
  'ocap.marshal', 'ocap.pass', 'ocap.promise', 'ocap.stores', 'ocap.vatboot', 'ocap.kernel',
  'ocap.core', 'ocap.future', 'cjson',
}

local VAT = [[
local ocap = require 'ocap'
return { buildRootObject = function()
  return ocap.makeDefaultExo('v', { ping = function() return 'pong' end })
end }
]]

-- Stands in for any runtime module. As ocap.vatboot it would get the raw
-- syscall table: it forges a log entry at a level no logger has.
local EVIL = [[
local M = {}
function M.boot(syscall)
  syscall.log('forged', '#{"message":"forged by a bundle"}')
  error('the bundle ran in place of the runtime')
end
return setmetatable(M, { __index = function() error('the bundle ran in place of the runtime') end })
]]

local function shadowMsg(name)
  return ('module "%s" would shadow ocap\'s runtime (a bundle cannot contain ocap, ocap.* or cjson)'):format(name)
end

local function write(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

local function forged(kernel)
  for _, e in ipairs(kernel:logs()) do
    if e.level == 'forged' or tostring(e.message):match('forged') then return true end
  end
  return false
end

describe('bundling', function()
  it('refuses a main file named like a runtime module', function()
    local dir = testing.tempDir()
    for _, name in ipairs(RESERVED) do
      local path = dir .. '/' .. name .. '.lua'
      write(path, VAT)
      local b, err = bundle.build(path)
      assert.is_nil(b)
      assert.equal(path .. ': ' .. shadowMsg(name), err)
    end
  end)

  it('refuses a file next to the vat that would provide a runtime module', function()
    for _, name in ipairs(RESERVED) do
      local dir = testing.tempDir()
      write(dir .. '/v.lua', ("local x = require '%s'\n"):format(name) .. VAT)
      local file = dir .. '/' .. name:gsub('%.', '/') .. '.lua'
      os.execute(("mkdir -p '%s'"):format(file:match('^(.*)/')))
      write(file, EVIL)
      local b, err = bundle.build(dir .. '/v.lua')
      assert.is_nil(b)
      assert.equal(file .. ': ' .. shadowMsg(name), err)
    end
  end)

  it('takes runtime modules from the kernel, not the bundle', function()
    local dir = testing.tempDir()
    write(dir .. '/v.lua', "local json = require 'cjson'\nlocal p = require 'ocap.pass'\n" .. VAT)
    local b = assert(bundle.build(dir .. '/v.lua'))
    assert.same({ 'v' }, (function()
      local names = {}
      for name in pairs(b.modules) do names[#names + 1] = name end
      return names
    end)())
  end)

  it('makes `ocap bundle` fail with the module named', function()
    local dir = testing.tempDir()
    write(dir .. '/ocap.vatboot.lua', VAT)
    local p = assert(io.popen(("'%s' bundle '%s/ocap.vatboot.lua' 2>&1; echo \"rc=$?\""):format(BIN, dir)))
    local out = p:read('a')
    p:close()
    assert.matches(shadowMsg('ocap.vatboot'), out, 1, true)
    assert.matches('rc=1', out, 1, true)
  end)
end)

describe('launching', function()
  local kernel
  after_each(function() kernel:stop() end)

  it('refuses a bundle file holding a runtime module', function()
    local dir = testing.tempDir()
    kernel = testing.makeKernel({ baseDir = dir })
    for _, name in ipairs(RESERVED) do
      local file = name .. '.bundle'
      write(dir .. '/' .. file, bundle.encode({ format = 'ocap-bundle-1', main = 'v',
        modules = { v = VAT, [name] = EVIL } }))
      local e = rejection(kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { bundleSpec = file } } }))
      assert.equal(('ClusterConfig.vats.v: "%s" is a bundle whose %s'):format(file, shadowMsg(name)), e.message)
    end
    assert.is_false(forged(kernel))
    assert.equal(0, #kernel:getStatus().vats)
  end)

  it('refuses a vat whose own module name is a runtime module', function()
    -- A source file named like a runtime module becomes the module of
    -- that name; the kernel refuses it before the vat exists.
    local dir = testing.tempDir()
    kernel = testing.makeKernel({ baseDir = dir })
    for _, name in ipairs(RESERVED) do
      write(dir .. '/' .. name, VAT)
      local e = rejection(kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = name } } }))
      assert.equal('vat "v" failed to start: bundle ' .. shadowMsg(name), e.message)
    end
    assert.equal(0, #kernel:getStatus().vats)
  end)

  it('refuses a stored bundle holding a runtime module at restart', function()
    local dir = testing.tempDir()
    write(dir .. '/v.lua', VAT)
    kernel = testing.makeKernel({ database = dir .. '/db', baseDir = dir })
    local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'v.lua' } } }):await()
    local vatId = kernel:getSubcluster(r.subclusterId).vats.v
    -- A database written by something else: the stored bundle now holds
    -- a module named like the runtime's boot module.
    -- It is stored under its own hash, so only the module decides.
    local rec = kernel:_get('vat.' .. vatId)
    local stored = kernel:_bundle(vatId, rec.bundle)
    local evil = { main = stored.main, modules = { ['ocap.vatboot'] = EVIL } }
    for name, src in pairs(stored.modules) do evil.modules[name] = src end
    kernel:_releaseBundle(rec.bundle)
    rec.bundle = kernel:_holdBundle(evil)
    kernel:_put('vat.' .. vatId, rec)
    kernel = testing.restart(kernel)
    rejection(kernel:queueMessage(r.rootKref, 'ping', {}))
    assert.is_false(forged(kernel))
    local named = false
    for _, m in ipairs(testing.messages(kernel, 'error')) do
      named = named or m:find('bundle ' .. shadowMsg('ocap.vatboot'), 1, true) ~= nil
    end
    assert.is_true(named, 'the restart error names the module')
  end)
end)
