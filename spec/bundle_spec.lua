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

  it('names the main module by its file name, and finds its modules next to it', function()
    local dir = testing.tempDir()
    os.execute(("mkdir -p '%s/d.lua/.x'"):format(dir))
    local MAIN = "local h = require 'helper'\n" .. VAT
    -- path -> the main module's name
    local cases = {
      ['d.lua/v.lua'] = 'v', ['d.lua/v.x.lua'] = 'v.x', ['d.lua/.x/w.lua.lua'] = 'w.lua',
      ['d.lua/vat'] = false, ['d.lua/.lua'] = false, ['d.lua/.x/a.luax'] = false,
    }
    for path, main in pairs(cases) do
      local full = dir .. '/' .. path
      write(full, MAIN)
      write(full:match('^(.*)/') .. '/helper.lua', 'return {}')
      local b = assert(bundle.build(full))
      assert.equal(main or full, b.main, path)
      assert.equal(MAIN, b.modules[b.main], path)
      assert.equal('return {}', b.modules.helper, path)
    end
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

describe('the modules a source requires', function()
  -- What gmatch over the whole source finds, the way bundles found them
  -- at first: requiresOf must find the same names in the same order.
  local function byGmatch(src)
    local names = {}
    for name in src:gmatch("require%s*%(?%s*['\"]([%w_%.%-]+)['\"]") do names[#names + 1] = name end
    return names
  end

  local CASES = {
    { "local a = require 'a'\nlocal b = require('b.c')\nlocal c = require \"c-d_e\"", { 'a', 'b.c', 'c-d_e' } },
    { "require 'x' require 'x'", { 'x', 'x' } },
    { "require ( 'p' ) require(\"q\")", { 'p', 'q' } },
    { "require\n\t'nl'", { 'nl' } },
    -- A require in a string or a comment is found all the same.
    { "local s = \"require 'inString'\" -- require('inComment')", { 'inString', 'inComment' } },
    -- The word overlaps itself: the try after `require` fails, the next
    -- one, four bytes on, finds x.
    { "requirequire\"x\"", { 'x' } },
    { "requirerequire 'y'", { 'y' } },
    -- A match goes on where it ended: the quote that closed 'a' does not
    -- open anything.
    { "require'a'require'b'", { 'a', 'b' } },
    { "require 'unclosed require 'z'", { 'z' } },
    { "require(name) require [[long]] require 'ok'", { 'ok' } },
    { "require 'bad name' require ''", {} },
    -- Either quote closes a name.
    { "require 'a\" require \"b'", { 'a', 'b' } },
    { "myrequire 'm' require_ 'n' require", { 'm' } },
    { "", {} },
  }

  it('finds the literal names in order, as a gmatch does', function()
    for _, case in ipairs(CASES) do
      assert.same(case[2], bundle.requiresOf(case[1]), case[1])
      assert.same(byGmatch(case[1]), bundle.requiresOf(case[1]), case[1])
    end
  end)

  it('agrees with a gmatch on sources made of the pieces that confuse it', function()
    local pieces = { 'require', 'require(', "require '", 'requirequire', 're', 'quire', 'r', '(', ')', ' ', '\t',
      '\n', "'", '"', 'x', 'a.b', '-', '_', '%', '\195\169' }
    -- A fixed generator, so that a failure comes back the same.
    local seed = 12345
    local function rand(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    for _ = 1, 20000 do
      local parts = {}
      for i = 1, rand(12) do parts[i] = pieces[rand(#pieces)] end
      local src = table.concat(parts)
      assert.same(byGmatch(src), bundle.requiresOf(src), src)
    end
  end)

  it('bundles the modules found that way next to the vat', function()
    local dir = testing.tempDir()
    write(dir .. '/v.lua', "local s = \"require 'instr'\"\nlocal x = requirequire'ovl'\n"
      .. "local y = require('paren')\n" .. VAT)
    for _, name in ipairs({ 'instr', 'ovl', 'paren', 'quire' }) do write(dir .. '/' .. name .. '.lua', 'return {}') end
    local b = assert(bundle.build(dir .. '/v.lua'))
    local names = {}
    for name in pairs(b.modules) do names[#names + 1] = name end
    table.sort(names)
    assert.same({ 'instr', 'ovl', 'paren', 'v' }, names)
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

  it('bundles a vat that requires only the runtime alone, whatever is next to it', function()
    local dir = testing.tempDir()
    write(dir .. '/v.lua', "local json = require 'cjson'\nlocal p = require('ocap.pass')\n" .. VAT)
    write(dir .. '/cjson.lua', EVIL)
    os.execute(("mkdir -p '%s/ocap'"):format(dir))
    write(dir .. '/ocap/pass.lua', EVIL)
    write(dir .. '/ocap.lua', EVIL)
    kernel = testing.makeKernel({ baseDir = dir })
    -- Twice: the second launch reads the same text.
    for _ = 1, 2 do
      local r = kernel:launchSubcluster({ bootstrap = 'v', vats = { v = { sourceSpec = 'v.lua' } } }):await()
      assert.equal('pong', kernel:queueMessage(r.rootKref, 'ping', {}):await())
      local vatId = kernel:getSubcluster(r.subclusterId).vats.v
      local stored = kernel:_bundle(vatId, kernel:_get('vat.' .. vatId).bundle)
      assert.same({ main = 'v.lua', modules = { ['v.lua'] = assert(bundle.readFile(dir .. '/v.lua')) } }, stored)
    end
    assert.is_false(forged(kernel))
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
