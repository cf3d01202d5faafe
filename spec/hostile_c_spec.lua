-- Vat code attacking the runtime's C functions: each attack ends in the
-- Lua behaviour or a clean error, and the kernel carries on.
local testing = require 'ocap.testing'

local HOSTILE = 'spec/vats/hostile_c.lua'

describe('the runtime C functions under attack', function()
  local kernel, root
  setup(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({ bootstrap = 'h', vats = { h = { sourceSpec = HOSTILE } } }):await().rootKref
  end)
  teardown(function() kernel:stop() end)

  it('ignores extra arguments to string.rep however many there are', function()
    assert.equal('aa', kernel:queueMessage(root, 'repExtraArgs', {}):await())
  end)

  it('ignores extra arguments to table.concat however many there are', function()
    assert.equal('x,y', kernel:queueMessage(root, 'concatExtraArgs', {}):await())
  end)

  it('runs a task in a worker of its own, not in a task that yields', function()
    assert.same({ 'nothing', 'fulfilled', 'secret' }, kernel:queueMessage(root, 'stealTask', {}):await())
  end)

  it('gives vat code runtime modules it cannot change', function()
    local r = kernel:queueMessage(root, 'interceptRuntime', {}):await()
    assert.equal(0, r[1]) -- nothing privileged reached the vat's function
    assert.equal(32, r[2]) -- 16 fields, each refused to assignment and to rawset
    assert.matches("cannot modify runtime module 'ocap.", r[3], 1, true)
    assert.is_true(r[4]) -- pairs still lists a module's functions
  end)

  it('lets no table vat code makes stand for liveslots\' in E()\'s module', function()
    assert.same({ false, true, 5 }, kernel:queueMessage(root, 'fakeEventual', { kernel:getPresence(root) }):await())
  end)

  it('keeps the ocap.marshal module out of reach of ocap.marshal', function()
    assert.same({ 'string', '#1' }, kernel:queueMessage(root, 'marshalModule', {}):await())
  end)

  it('gives vat code no promise metatable to put a finalizer in', function()
    local r = kernel:queueMessage(root, 'promiseFinalizer', {}):await()
    assert.equal('userdata', r[1]) -- getmetatable answers the queue, not a table
    assert.is_false(r[2])
    assert.equal(0, r[3]) -- no finalizer of vat code ran, metered or not
    assert.is_true(r[4])
  end)

  it('refuses a tracked promise written into a protected table', function()
    local r = kernel:queueMessage(root, 'trackProtected', {}):await()
    assert.is_false(r[1])
    assert.matches('cannot modify a protected object', r[2], 1, true)
    assert.equal(1, r[3]) -- the hardened table reads as it was made
    assert.is_true(r[4]) -- a plain table still takes one
    assert.is_true(r[5])
  end)

  it('decodes capdata whose slots table claims 2^61 slots', function()
    -- The reference codec's answer: the slot named is absent.
    local r = kernel:queueMessage(root, 'sparseSlots', {}):await()
    assert.is_true(r[1])
    assert.is_false(r[2])
    assert.matches('slot', r[3])
  end)
end)
