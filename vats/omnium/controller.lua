-- Omnium's controller vat: installs caplets as subclusters through the
-- kernel facet and keeps what it installed in baggage, so that the list
-- survives kernel restarts. Every refusal is decided before anything
-- changes, so a failed call leaves Omnium's state as it was.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

-- Raises a plain message (no position): it is the rejection the host sees.
local function refuse(fmt, ...) error(fmt:format(...), 0) end

local function messageOf(reason)
  if type(reason) == 'table' and reason.message then return tostring(reason.message) end
  return tostring(reason)
end

function M.buildRootObject(vatPowers, _parameters, baggage)
  local log = vatPowers.logger:subLogger { tags = { 'omnium' } }
  if not baggage:has('order') then baggage:init('order', {}) end

  local function facet() return baggage:get('kernelFacet') end
  local function record(id)
    local key = 'caplet:' .. tostring(id)
    return baggage:has(key) and baggage:get(key) or nil
  end
  local function known(id)
    local r = record(id)
    if not r then refuse('no caplet "%s" is installed', tostring(id)) end
    return r
  end
  local function provider(name)
    local key = 'service:' .. name
    return baggage:has(key) and baggage:get(key) or nil
  end
  -- The installed caplets that request one of the services r provides.
  local function dependents(r)
    local provides, out = {}, {}
    for _, s in ipairs(r.manifest.providedServices) do provides[s] = true end
    for _, id in ipairs(baggage:get('order')) do
      local other = record(id)
      for _, s in ipairs(other.manifest.requestedServices) do
        if provides[s] then out[#out + 1] = id break end
      end
    end
    return out
  end
  -- The operations that change Omnium's state await the kernel midway, and
  -- other deliveries run meanwhile: each waits for the previous one to
  -- finish, so that its checks still hold when it writes.
  local last
  local function exclusive(fn)
    return function(...)
      local previous = last
      local kit = ocap.makePromiseKit()
      last = kit.promise
      if previous then pcall(ocap.await, previous) end
      local ok, r = pcall(fn, ...)
      kit.resolve(true)
      if last == kit.promise then last = nil end
      if not ok then error(r, 0) end
      return r
    end
  end

  -- A copy of the installed record, without the root presence (plain data).
  local function public(r)
    return { manifest = r.manifest, subclusterId = r.subclusterId, rootKref = r.rootKref,
      installedAt = r.installedAt }
  end

  return ocap.makeDefaultExo('omnium', {
    bootstrap = function(_, vats, services)
      baggage:init('kernelFacet', services.kernelFacet)
      baggage:init('registry', vats.registry)
      baggage:init('registryPublic', E(vats.registry).getPublic():await())
      log:log('omnium ready')
    end,

    install = exclusive(function(_, manifest, installedAt)
      local id = manifest.id
      if record(id) then refuse('caplet "%s" is already installed', id) end
      for _, s in ipairs(manifest.providedServices) do
        local other = provider(s)
        if other then
          refuse('caplet "%s" provides service "%s", which caplet "%s" already provides', id, s, other)
        end
      end
      local roots = { registry = baggage:get('registryPublic') }
      for _, s in ipairs(manifest.requestedServices) do
        local p = provider(s)
        if not p then
          refuse('caplet "%s" requests service "%s", which no installed caplet provides', id, s)
        end
        roots[s] = record(p).root
      end
      local config = { bootstrap = 'caplet', vats = { caplet = { bundleSpec = manifest.bundleSpec } } }
      local ok, r = pcall(ocap.await, E(facet()).launchSubcluster(config, roots))
      if not ok then refuse('caplet "%s" failed to install: %s', id, messageOf(r)) end
      -- The registrations are the last step that can fail: should one,
      -- the caplet goes again and nothing of it is recorded.
      local registry, registered = baggage:get('registry'), {}
      for _, s in ipairs(manifest.providedServices) do
        local rok, rerr = pcall(ocap.await, E(registry).register(s, r.root))
        if not rok then
          for _, done in ipairs(registered) do pcall(ocap.await, E(registry).withdraw(done)) end
          pcall(ocap.await, E(facet()).terminateSubcluster(r.subclusterId))
          refuse('caplet "%s" failed to install: registering service "%s": %s', id, s, messageOf(rerr))
        end
        registered[#registered + 1] = s
      end
      baggage:init('caplet:' .. id, { manifest = manifest, subclusterId = r.subclusterId,
        rootKref = r.rootKref, installedAt = installedAt, root = r.root })
      for _, s in ipairs(manifest.providedServices) do baggage:init('service:' .. s, id) end
      local order = baggage:get('order')
      order[#order + 1] = id
      baggage:set('order', order)
      log:log('installed', id, r.subclusterId)
      return { capletId = id, subclusterId = r.subclusterId }
    end),

    uninstall = exclusive(function(_, id, opts)
      local r = known(id)
      local deps = dependents(r)
      if #deps > 0 and not (opts and opts.force) then
        refuse('caplet "%s" provides services that %s depend on (use force to uninstall anyway)', id,
          table.concat(deps, ', '))
      end
      E(facet()).terminateSubcluster(r.subclusterId):await()
      for _, s in ipairs(r.manifest.providedServices) do
        if baggage:has('service:' .. s) then
          baggage:delete('service:' .. s)
          E(baggage:get('registry')).withdraw(s):await()
        end
      end
      baggage:delete('caplet:' .. id)
      local order, kept = baggage:get('order'), {}
      for _, other in ipairs(order) do
        if other ~= id then kept[#kept + 1] = other end
      end
      baggage:set('order', kept)
      log:log('uninstalled', id)
      return true
    end),

    -- A new version of an installed caplet: a vat upgrade of its subcluster,
    -- so its baggage is kept; a failed upgrade leaves the old version.
    upgrade = exclusive(function(_, manifest)
      local id = manifest.id
      local r = known(id)
      if manifest.version == r.manifest.version then
        refuse('caplet "%s" is already at version %s', id, manifest.version)
      end
      for _, f in ipairs({ 'requestedServices', 'providedServices' }) do
        if table.concat(manifest[f], ' ') ~= table.concat(r.manifest[f], ' ') then
          refuse('caplet "%s": an upgrade cannot change %s', id, f)
        end
      end
      local config = { bootstrap = 'caplet', vats = { caplet = { bundleSpec = manifest.bundleSpec } } }
      local ok, res = pcall(ocap.await, E(facet()).upgradeSubcluster(r.subclusterId, config))
      if not ok then refuse('caplet "%s" failed to upgrade: %s', id, messageOf(res)) end
      local from = r.manifest.version
      r.manifest = manifest
      baggage:set('caplet:' .. id, r)
      log:log('upgraded', id, from, manifest.version)
      return { capletId = id, from = from, to = manifest.version, incarnation = res.incarnation }
    end),

    list = function() return baggage:get('order') end,
    get = function(_, id)
      local r = record(id)
      return r and public(r) or nil
    end,
    getCapletRoot = function(_, id) return known(id).root end,
    callCapletMethod = function(_, id, method, args)
      local r = known(id)
      if type(method) ~= 'string' then refuse('caplet "%s": method name must be a string', id) end
      args = args or {}
      local ok, res = pcall(ocap.await, E(r.root)[method](table.unpack(args, 1, #args)))
      if not ok then refuse('caplet "%s": %s failed: %s', id, method, messageOf(res)) end
      return res
    end,
    -- Withdraws a service: every forwarder the registry handed out for it
    -- is revoked for good, and no caplet provides it any more.
    revoke = exclusive(function(_, name)
      local key = 'service:' .. tostring(name)
      if not baggage:has(key) then refuse('no service "%s"', tostring(name)) end
      baggage:delete(key)
      return E(baggage:get('registry')).withdraw(name):await()
    end),
    services = function()
      local out = {}
      for _, id in ipairs(baggage:get('order')) do
        for _, s in ipairs(record(id).manifest.providedServices) do
          if baggage:has('service:' .. s) then out[#out + 1] = { name = s, capletId = id } end
        end
      end
      table.sort(out, function(a, b) return a.name < b.name end)
      return out
    end,
  })
end

return M
