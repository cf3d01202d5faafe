-- Vat sources the kernel compiles once (core/srccache.c): a vat launched
-- from sources the kernel has compiled before loads the kernel's code,
-- and nothing it does may tell the difference from loading the text.
-- Every launch here is made twice or more on one kernel, so that the
-- later ones run from the kernel's cache.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local bundle = require 'ocap.bundle'
local support = require 'support'
local rejection = support.rejection

-- A vat with a helper module next to it, whose `fail` raises at line 8
-- with a message that names a local variable.
local MAIN = [[
local ocap = require 'ocap'
local helper = require 'helper'
return { buildRootObject = function()
  return ocap.makeDefaultExo('m', {
    which = function() return helper.which end,
    fail = function()
      local missing
      return missing.field
    end,
  })
end }
]]

local function warnings(kernel, pattern)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if e.level == 'warn' and tostring(e.message):find(pattern, 1, true) then out[#out + 1] = e end
  end
  return out
end

-- A directory holding MAIN as m.lua and a helper that says which.
local function vatDir(which)
  local dir = testing.tempDir()
  support.spit(dir .. '/m.lua', MAIN)
  support.spit(dir .. '/helper.lua', ('return { which = %q }\n'):format(which))
  return dir
end

describe('compiled vat sources', function()
  local kernel
  before_each(function() kernel = testing.makeKernel() end)
  after_each(function() kernel:stop() end)

  local function launch(vats)
    return kernel:launchSubcluster({ bootstrap = next(vats), vats = vats })
  end

  local function launchError(vats)
    local ok, err = pcall(ocap.await, launch(vats))
    assert.is_false(ok)
    return err.message
  end

  it('reports a syntax error as the text does, at every launch', function()
    local path = 'spec/vats/bad_syntax.lua'
    local _, parseError = load(support.slurp(path), '=' .. path, 't')
    assert.matches('^spec/vats/bad_syntax%.lua:3: ', parseError)
    for _ = 1, 3 do
      assert.equal(("vat \"a\" failed to start: error loading module '%s': %s"):format(path, parseError),
        launchError({ a = { sourceSpec = path } }))
    end
  end)

  -- Launches dir/m.lua alone; checks its helper and where its failure is.
  local function check(dir, which, failures)
    local r = launch({ a = { sourceSpec = dir .. '/m.lua' } }):await()
    assert.equal(which, kernel:queueMessage(r.rootKref, 'which', {}):await())
    rejection(kernel:queueMessage(r.rootKref, 'fail', {}))
    assert.equal(failures, #warnings(kernel, dir .. "/m.lua:8: attempt to index a nil value (local 'missing')"))
  end

  it('names the same file, line and local in a runtime error, at every launch', function()
    local dir = vatDir('one')
    for n = 1, 3 do check(dir, 'one', n) end
  end)

  it('gives each vat its own code for sources that share a chunk name', function()
    -- The same main text at two paths, each requiring a `helper` of its
    -- own: the helpers share the chunk name "helper", the mains their text.
    local one, two = vatDir('one'), vatDir('two')
    for n = 1, 2 do
      check(one, 'one', n)
      check(two, 'two', n)
    end
  end)

  it('runs the new text of a file changed between launches', function()
    local dir = vatDir('one')
    local r = launch({ a = { sourceSpec = dir .. '/m.lua' } }):await()
    assert.equal('one', kernel:queueMessage(r.rootKref, 'which', {}):await())
    -- The same length and chunk name, other bytes.
    support.spit(dir .. '/helper.lua', 'return { which = "two" }\n')
    r = launch({ a = { sourceSpec = dir .. '/m.lua' } }):await()
    assert.equal('two', kernel:queueMessage(r.rootKref, 'which', {}):await())
  end)

  it('leaves a vat no bigger for a module it has not required yet', function()
    -- A module a vat does not require while it starts waits in its heap,
    -- as it always did, as its text: the kernel's code of it (line info
    -- and local names included) is larger, here by over 1 KB. Two vats whose
    -- idle module has texts of one length, one that compiles and one that
    -- does not, hold the same bytes, but for the few their allocators'
    -- histories leave apart; each requires its module when asked.
    local later = "local ocap = require 'ocap'\n"
      .. "return { buildRootObject = function() return ocap.makeDefaultExo('m', {\n"
      .. "  which = function() return require('helper').which end }) end }\n"
    local good = {}
    for i = 1, 40 do
      good[#good + 1] = ('local v%d = { n = %d }; v%d.f = function(a) return a + v%d.n end'):format(i, i, i, i)
    end
    good[#good + 1] = 'return { which = v40.f(2) }'
    good = table.concat(good, '\n') .. '\n'
    local bad = good:gsub('return', 'retur(', 1) -- a syntax error on line 1, of the same length
    assert.is_nil(load(bad, '=helper', 't'))
    local dir, roots, memory = testing.tempDir(), {}, {}
    for name, helper in pairs({ good = good, bad = bad }) do
      local file = dir .. '/' .. name .. '.bundle'
      local modules = { main = later, helper = helper }
      support.spit(file, bundle.encode({ format = 'ocap-bundle-1', main = 'main', modules = modules }))
      for _ = 1, 2 do
        local r = launch({ [name] = { bundleSpec = file } }):await()
        roots[name] = r.rootKref
        memory[name] = kernel.K:vatMemory(kernel:getSubcluster(r.subclusterId).vats[name])
      end
    end
    assert.is_true(math.abs(memory.good - memory.bad) < 64, ('%d bytes against %d'):format(memory.good, memory.bad))
    assert.equal(42, kernel:queueMessage(roots.good, 'which', {}):await())
    local err = rejection(kernel:queueMessage(roots.bad, 'which', {}))
    assert.matches("error loading module 'helper': helper:1: ", tostring(err))
  end)

  it('refuses bytecode in a bundle, even the very code the kernel made of a text', function()
    local dir = vatDir('one')
    local helper = support.slurp(dir .. '/helper.lua')
    -- The kernel has compiled the helper's text under this chunk name.
    local r = launch({ a = { sourceSpec = dir .. '/m.lua' } }):await()
    assert.equal('one', kernel:queueMessage(r.rootKref, 'which', {}):await())
    local cases = {
      { module = 'helper', where = 'main:2: ',
        modules = { main = MAIN, helper = string.dump(load(helper, '=helper', 't')) } },
      { module = 'main', where = '', modules = { main = string.dump(load(MAIN, '=main', 't')), helper = helper } },
    }
    for _, case in ipairs(cases) do
      local file = dir .. '/' .. case.module .. '.bundle'
      support.spit(file, bundle.encode({ format = 'ocap-bundle-1', main = 'main', modules = case.modules }))
      for _ = 1, 2 do
        assert.equal(('vat "b" failed to start: %serror loading module \'%s\': '
            .. "attempt to load a binary chunk (mode is 't')"):format(case.where, case.module),
          launchError({ b = { bundleSpec = file } }))
      end
    end
  end)
end)
