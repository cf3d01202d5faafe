-- Revocation holds on every path a message can take to a revoked object
-- (issue #9, item 1): a bank vat with an admin facet, revoked by the host
-- or through the kernel facet, drained by the host or by another vat.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local support = require 'support'
local rejection = support.rejection
local E = ocap.E

local BANK = 'spec/vats/bank.lua'
local CLIENT = 'spec/vats/bank_client.lua'
local USER = 'spec/vats/service_user.lua'

local REVOKED = '[KERNEL:OBJECT_REVOKED] Target object has been revoked'

--- Launches the bank and a client vat in its own subcluster.
local function launch(kernel)
  local bank = kernel:launchSubcluster({ bootstrap = 'bank', vats = { bank = { sourceSpec = BANK } } }):await()
  local client = kernel:launchSubcluster({ bootstrap = 'c', vats = { c = { sourceSpec = CLIENT } } }):await()
  return {
    bank = kernel:getPresence(bank.rootKref, 'bank'),
    bankKref = bank.rootKref,
    bankVat = kernel:getSubcluster(bank.subclusterId).vats.bank,
    client = client.rootKref,
  }
end

local function balance(kernel, s)
  return kernel:queueMessage(s.bankKref, 'balance', {}):await()
end

--- Asserts that p rejected as revoked and that the bank kept its money.
local function assertRefused(kernel, s, p)
  local e = rejection(p)
  assert.equal(REVOKED, e.message)
  assert.equal('OBJECT_REVOKED', e.code)
  assert.equal(100, balance(kernel, s))
end

describe('revocation', function()
  local kernel, s, admin, adminKref
  before_each(function()
    kernel = testing.makeKernel()
    s = launch(kernel)
    admin = E(s.bank).getAdmin():await()
    adminKref = kernel:krefOf(admin)
  end)
  after_each(function() kernel:stop() end)

  describe('refuses a message from the host', function()
    it('sent directly', function()
      kernel:revoke(adminKref)
      assertRefused(kernel, s, E(admin).drain())
    end)

    it('already in the run queue when revoked', function()
      local p = E(admin).drain()
      kernel:revoke(adminKref)
      assertRefused(kernel, s, p)
    end)

    it('sent to a promise already resolved to the object', function()
      local p = E(s.bank).getAdmin()
      p:await()
      kernel:revoke(adminKref)
      assertRefused(kernel, s, E(p).drain())
    end)

    it('pipelined to a result the owner resolves later to its own object', function()
      kernel:revoke(adminKref)
      local r = E(E(s.bank).getAdminLater()).drain()
      kernel:run()
      E(s.bank).releaseAdmin():await()
      assertRefused(kernel, s, r)
    end)

    it('pipelined before the revocation, resolved after it', function()
      local r = E(E(s.bank).getAdminLater()).drain()
      kernel:run() -- the pipelined message has been routed before revoke
      kernel:revoke(adminKref)
      E(s.bank).releaseAdmin():await()
      assertRefused(kernel, s, r)
    end)

    it('sent to a promise the owner exported inside data', function()
      local rec = E(s.bank).promiseForAdmin():await()
      local r = E(rec.admin).drain()
      kernel:run()
      kernel:revoke(adminKref)
      E(s.bank).releaseAdmin():await()
      assertRefused(kernel, s, r)
    end)
  end)

  describe('refuses a message from another vat', function()
    it('sent directly', function()
      kernel:revoke(adminKref)
      assertRefused(kernel, s, kernel:queueMessage(s.client, 'drain', { admin }))
    end)

    it('pipelined to a result the owner resolves later', function()
      local r = kernel:queueMessage(s.client, 'pipelineDrain', { s.bank })
      kernel:run()
      kernel:revoke(adminKref)
      E(s.bank).releaseAdmin():await()
      assertRefused(kernel, s, r)
    end)

    it('held by its runtime before the revocation and sent after it', function()
      kernel:queueMessage(s.client, 'holdDrain', {}):await()
      kernel:revoke(adminKref)
      assertRefused(kernel, s, kernel:queueMessage(s.client, 'releaseDrain', { admin }))
    end)

    it('sent to a promise the owner exported inside data', function()
      local r = kernel:queueMessage(s.client, 'drainExported', { s.bank })
      kernel:run()
      kernel:revoke(adminKref)
      E(s.bank).releaseAdmin():await()
      assertRefused(kernel, s, r)
    end)
  end)

  it('lets the owner call its own object through its Lua reference', function()
    kernel:revoke(adminKref)
    assert.equal(100, E(s.bank).drainDirectly():await())
    assert.equal(0, balance(kernel, s))
    assert.equal(0, E(s.bank).drainEventually():await())
  end)
end)

describe('revocation of an object of the host', function()
  it('refuses vats and queueMessage, and lets the host call its own exo', function()
    local calls = 0
    local svc = ocap.makeDefaultExo('svc', { poke = function() calls = calls + 1; return 'poked' end })
    local kernel = testing.makeKernel({ services = { svc = svc } })
    local kref = kernel.services.svc.info.kref
    local r = kernel:launchSubcluster({ bootstrap = 'u', services = { 'svc' },
      vats = { u = { sourceSpec = USER } } }):await()
    kernel:revoke(kref)
    local res = kernel:queueMessage(r.rootKref, 'try', { 'svc', 'poke' }):await()
    assert.is_false(res.ok)
    assert.equal(REVOKED, res.value.message)
    assert.equal(REVOKED, rejection(kernel:queueMessage(kref, 'poke', {})).message)
    assert.equal(0, calls)
    assert.equal('poked', E(svc).poke():await())
    kernel:stop()
  end)
end)

describe('revocation through the kernel facet', function()
  local kernel
  after_each(function() kernel:stop() end)

  it('refuses pipelined messages like a host revocation', function()
    kernel = testing.makeKernel({ systemSubclusters = { { name = 'sys', config = {
      bootstrap = 'u', services = { 'kernelFacet' }, vats = { u = { sourceSpec = USER } } } } } })
    local sys = kernel:getSystemSubclusterRoot('sys')
    local s = launch(kernel)
    local admin = E(s.bank).getAdmin():await()
    local r = kernel:queueMessage(s.client, 'pipelineDrain', { s.bank })
    kernel:run()
    kernel:queueMessage(sys, 'facet', { 'revoke', kernel:krefOf(admin) }):await()
    assert.is_true(kernel:queueMessage(sys, 'facet', { 'isRevoked', kernel:krefOf(admin) }):await())
    E(s.bank).releaseAdmin():await()
    assertRefused(kernel, s, r)
  end)
end)

describe('revocation across restarts', function()
  local kernel, s, adminKref
  before_each(function()
    kernel = testing.makeKernel({ database = testing.tempDir() })
    s = launch(kernel)
    adminKref = kernel:krefOf(E(s.bank).getAdmin():await())
  end)
  after_each(function() kernel:stop() end)

  local function checkAll()
    local admin = kernel:getPresence(adminKref, 'admin')
    assertRefused(kernel, s, E(admin).drain())
    assertRefused(kernel, s, kernel:queueMessage(s.client, 'drain', { admin }))
    local r1 = E(E(s.bank).getAdminLater()).drain()
    local r2 = kernel:queueMessage(s.client, 'pipelineDrain', { s.bank })
    kernel:run()
    E(s.bank).releaseAdmin():await()
    assertRefused(kernel, s, r1)
    assertRefused(kernel, s, r2)
  end

  it('holds after a kernel restart', function()
    kernel:revoke(adminKref)
    kernel = testing.restart(kernel)
    s.bank = kernel:getPresence(s.bankKref, 'bank')
    assert.is_true(kernel:isRevoked(adminKref))
    checkAll()
  end)

  it('holds after the owner vat restarts', function()
    kernel:revoke(adminKref)
    kernel:restartVat(s.bankVat):await()
    -- The durable admin is the same object again, under the same kref.
    assert.equal(adminKref, kernel:krefOf(E(s.bank).getAdmin():await()))
    checkAll()
  end)

  it('drops a message queued before the revocation and run after a restart', function()
    local admin = kernel:getPresence(adminKref, 'admin')
    E.sendOnly(admin).drain()
    kernel:revoke(adminKref)
    kernel = testing.restart(kernel)
    kernel:run()
    s.bank = kernel:getPresence(s.bankKref, 'bank')
    assert.equal(100, balance(kernel, s))
  end)
end)
