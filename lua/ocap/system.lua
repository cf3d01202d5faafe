--- System subclusters and the kernel facet: the privileged side of a
--- kernel, kept apart from the ordinary management plane (see
--- docs/system-subclusters.md and docs/services.md).
local promise = require 'ocap.promise'
local exo = require 'ocap.exo'

local M = {}

--- Makes the kernelFacet service: a systemOnly exo over the kernel's API.
---@param kernel table the host-side kernel object
function M.makeKernelFacet(kernel)
  local function await(p) return promise.await(p) end
  return exo.makeDefaultExo('kernelFacet', {
    ping = function() return 'pong' end,
    getStatus = function() return kernel:getStatus() end,
    getSubclusters = function() return kernel:getSubclusters() end,
    getSubcluster = function(_, id) return kernel:getSubcluster(id) end,
    -- `refs` (optional, name -> presence) is added to the bootstrap vat's
    -- parameters: Omnium hands a caplet its providers' roots this way.
    launchSubcluster = function(_, config, refs)
      local r = await(kernel:launchSubcluster(config, refs and { parameterRefs = refs } or nil))
      return { subclusterId = r.subclusterId, rootKref = r.rootKref, bootstrapResult = r.bootstrapResult,
        root = kernel:getPresence(r.rootKref) }
    end,
    terminateSubcluster = function(_, id) return await(kernel:terminateSubcluster(id)) end,
    getSystemSubclusterRoot = function(_, name) return kernel:getSystemSubclusterRoot(name) end,
    queueMessage = function(_, target, method, args)
      return await(kernel:queueMessage(target, method, args))
    end,
    getPresence = function(_, kref, iface) return kernel:getPresence(kref, iface) end,
    pingVat = function(_, vatId) return await(kernel:pingVat(vatId)) end,
    restartVat = function(_, vatId) return await(kernel:restartVat(vatId)) end,
    upgradeVat = function(_, vatId, spec) return await(kernel:upgradeVat(vatId, spec)) end,
    upgradeSubcluster = function(_, id, config) return await(kernel:upgradeSubcluster(id, config)) end,
    terminateVat = function(_, vatId, reason) return await(kernel:terminateVat(vatId, reason)) end,
    revoke = function(_, kref) kernel:revoke(kref) end,
    isRevoked = function(_, kref) return kernel:isRevoked(kref) end,
    -- A facet method runs inside a crank, which reset must not wipe: it
    -- runs once that crank has committed (docs/api.md).
    reset = function() kernel:_outsideCrank(function() kernel:reset() end) end,
  })
end

--- Validates Kernel.make's systemSubclusters list; returns it by name.
function M.checkDeclared(list)
  local byName, order = {}, {}
  if list ~= nil and type(list) ~= 'table' then
    error(('Kernel.make: option systemSubclusters must be a list of { name = ..., config = ... }, got %s')
      :format(type(list)), 0)
  end
  -- A single entry without the list braces around it is the usual slip.
  local stray = {}
  for k in pairs(list or {}) do
    if math.type(k) ~= 'integer' or k < 1 or k > #list then stray[#stray + 1] = tostring(k) end
  end
  if #stray > 0 then
    table.sort(stray)
    error(('Kernel.make: option systemSubclusters must be a list of { name = ..., config = ... }, '
      .. 'but it has the key %q (put the entry in a list: systemSubclusters = { { name = ... } })')
      :format(stray[1]), 0)
  end
  for i, entry in ipairs(list or {}) do
    if type(entry) ~= 'table' or type(entry.name) ~= 'string' or entry.name == '' then
      error(('Kernel.make: systemSubclusters[%d] needs a name'):format(i), 3)
    end
    if type(entry.config) ~= 'table' then
      error(('Kernel.make: systemSubclusters[%d] (%s) needs a config'):format(i, entry.name), 3)
    end
    if byName[entry.name] then
      error(('Kernel.make: duplicate system subcluster name "%s"'):format(entry.name), 3)
    end
    byName[entry.name] = entry
    order[#order + 1] = entry.name
  end
  return byName, order
end

--- Launches the declared system subclusters that are new, keeps the ones
--- already in the database (bootstrap is not sent again), and terminates
--- the ones no longer declared.
function M.start(kernel, list)
  local byName, order = M.checkDeclared(list)
  local K = kernel.K
  local prefix = 'systemSubcluster.'
  local after
  local stale = {}
  while true do
    local key = K:kvNext(prefix, after)
    if not key then break end
    after = key
    local name = key:sub(#prefix + 1)
    if not byName[name] then stale[#stale + 1] = { name = name, id = K:kvGet(key) } end
  end
  for _, s in ipairs(stale) do
    kernel:_terminateSubclusterNow(s.id, ('system subcluster "%s" is no longer declared'):format(s.name))
    K:kvDelete(prefix .. s.name)
  end
  K:commit()
  for _, name in ipairs(order) do
    local id = K:kvGet(prefix .. name)
    if id and byName[name].config.forceReset then
      -- forceReset: start this system subcluster afresh, baggage and all.
      kernel:_terminateSubclusterNow(id, ('system subcluster "%s" reset'):format(name))
      id = nil
    end
    if not (id and kernel:getSubcluster(id)) then
      local ok, r = pcall(promise.await, kernel:launchSubcluster(byName[name].config,
        { system = true, name = name }))
      if not ok then
        local msg = type(r) == 'table' and r.message or tostring(r)
        error(('system subcluster "%s" failed to launch: %s'):format(name, tostring(msg)), 0)
      end
      K:kvSet(prefix .. name, r.subclusterId)
      K:commit()
    end
  end
end

--- The root kref of a system subcluster.
function M.root(kernel, name)
  local id = kernel.K:kvGet('systemSubcluster.' .. tostring(name))
  local sc = id and kernel:_get('subcluster.' .. id)
  if not sc then error(('System subcluster "%s" not found'):format(tostring(name)), 0) end
  return sc.rootKref
end

return M
