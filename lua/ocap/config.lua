--- Validation of ClusterConfig and VatConfig tables (docs/api.md §5). Every
--- error names the field it is about.

local M = {}

local CLUSTER_KEYS = {
  bootstrap = true, forceReset = true, services = true, io = true, vats = true, bundles = true,
}
local VAT_KEYS = {
  sourceSpec = true, bundleSpec = true, bundleName = true, parameters = true,
  creationOptions = true, platformConfig = true, globals = true,
}

--- The endowments a vat may ask for by name (docs/api.md §3, docs/security.md).
M.ALLOWED_GLOBALS = {
  'print', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval',
  'os.time', 'os.clock', 'os.date', 'math.random',
}

local function isSequence(t)
  if type(t) ~= 'table' then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

--- A value as an error message shows it: numbers exactly (NaN and the
--- infinities by name), strings quoted, anything else by its type.
local function show(v)
  if type(v) == 'number' then
    if v ~= v then return 'nan' end
    if v == math.huge then return 'inf' end
    if v == -math.huge then return '-inf' end
    if math.type(v) == 'integer' then return tostring(v) end
    return ('%.17g'):format(v)
  end
  if type(v) == 'string' then return ('%q'):format(v) end
  return type(v)
end
M.show = show

--- The numeric limits of creationOptions: each is an integral number (an
--- integer, or a float with an integral value such as 1e8) from min to
--- max, and the message says what the field must be. The bounds keep
--- every value exact and far from overflowing the kernel's arithmetic.
M.LIMITS = {
  memoryLimit = { min = 65536, max = 1 << 40, what = 'an integer number of bytes, at least 65536 and at most 2^40' },
  maxMessageBytes = { min = 1024, max = 1 << 40, what = 'an integer number of bytes, from 1024 to 2^40' },
  maxMessageSlots = { min = 0, max = 1 << 40, what = 'an integer number of slots, from 0 to 2^40' },
  maxCrankBytes = { min = 1024, max = 1 << 40, what = 'an integer number of bytes, from 1024 to 2^40' },
  maxQueuedBytes = { min = 1024, max = 1 << 40, what = 'an integer number of bytes, from 1024 to 2^40' },
  maxLogBytes = { min = 0, max = 1 << 40, what = 'an integer number of bytes, from 0 to 2^40' },
  maxTimers = { min = 0, max = 1 << 40, what = 'an integer number of timers, from 0 to 2^40' },
}
-- How creationOptions.meter.mode meters the budget (docs/security.md).
M.METER_MODES = { time = true, instructions = true }
M.INSTRUCTIONS = { min = 1, max = 1000000000000000, what = 'a positive integral number, at most 1e15' }

--- Checks one optional numeric field. NaN, the infinities, fractions and
--- anything out of range are refused with the field and the value.
local function checkLimit(field, v, spec)
  if v == nil then return true end
  local n = type(v) == 'number' and math.tointeger(v)
  if not n or n < spec.min or n > spec.max then
    return nil, ('%s: must be %s, got %s'):format(field, spec.what, show(v))
  end
  return true
end
M.checkLimit = checkLimit

local function checkVat(name, vc, cfg, allowed)
  local where = 'ClusterConfig.vats.' .. tostring(name)
  if type(name) ~= 'string' or not name:match('^[%w_%-%.]+$') then
    return nil, ('ClusterConfig.vats: invalid vat name %q'):format(tostring(name))
  end
  if type(vc) ~= 'table' then return nil, where .. ': must be a table' end
  for k in pairs(vc) do
    if not VAT_KEYS[k] then return nil, ('%s: unknown key %q'):format(where, tostring(k)) end
  end
  local n = (vc.sourceSpec and 1 or 0) + (vc.bundleSpec and 1 or 0) + (vc.bundleName and 1 or 0)
  if n ~= 1 then
    return nil, where .. ': exactly one of sourceSpec, bundleSpec, bundleName is required'
  end
  for _, k in ipairs({ 'sourceSpec', 'bundleSpec', 'bundleName' }) do
    if vc[k] ~= nil and type(vc[k]) ~= 'string' then
      return nil, ('%s.%s: must be a string'):format(where, k)
    end
  end
  if vc.bundleName and not (cfg.bundles and cfg.bundles[vc.bundleName]) then
    return nil, ('%s.bundleName: no bundle named %q in ClusterConfig.bundles'):format(where, vc.bundleName)
  end
  if vc.parameters ~= nil then
    if type(vc.parameters) ~= 'table' then return nil, where .. '.parameters: must be a table' end
    local ok, err = pcall(require('ocap.marshal').serializeData, vc.parameters)
    if not ok then
      return nil, ('%s.parameters: not plain data: %s'):format(where, tostring(err))
    end
  end
  local co = vc.creationOptions
  if co ~= nil then
    if type(co) ~= 'table' then return nil, where .. '.creationOptions: must be a table' end
    for k in pairs(co) do
      if k ~= 'meter' and not M.LIMITS[k] then
        return nil, ('%s.creationOptions: unknown key %q'):format(where, tostring(k))
      end
    end
    local names = {}
    for k in pairs(M.LIMITS) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      local ok, err = checkLimit(where .. '.creationOptions.' .. k, co[k], M.LIMITS[k])
      if not ok then return nil, err end
    end
    if co.meter ~= nil then
      local field = where .. '.creationOptions.meter'
      if type(co.meter) ~= 'table' then return nil, field .. ': must be a table, got ' .. show(co.meter) end
      for k in pairs(co.meter) do
        if k ~= 'instructions' and k ~= 'mode' then
          return nil, ('%s: unknown key %q'):format(field, tostring(k))
        end
      end
      local mode = co.meter.mode
      if mode ~= nil and not M.METER_MODES[mode] then
        return nil, ("%s.mode: must be 'time' or 'instructions', got %s"):format(field, show(mode))
      end
      local ok, err = checkLimit(field .. '.instructions', co.meter.instructions, M.INSTRUCTIONS)
      -- The budget may be left to its default only when a mode is given.
      if ok and co.meter.instructions == nil and mode == nil then
        ok, err = nil, field .. '.instructions: must be ' .. M.INSTRUCTIONS.what .. ', got nil'
      end
      if not ok then return nil, err end
    end
  end
  if vc.globals ~= nil then
    if not isSequence(vc.globals) then return nil, where .. '.globals: must be a sequence of names' end
    -- allowedGlobalNames can only narrow the fixed list, never widen it.
    local ok = {}
    for _, g in ipairs(M.ALLOWED_GLOBALS) do ok[g] = true end
    if allowed then
      local narrowed = {}
      for _, g in ipairs(allowed) do narrowed[g] = ok[g] end
      ok = narrowed
    end
    for _, g in ipairs(vc.globals) do
      if not ok[g] then
        return nil, ('Vat "%s" requested unknown global "%s"'):format(name, tostring(g))
      end
    end
  end
  return true
end

local IO_TYPES = { socket = true, file = true, console = true, listen = true, network = true }
local IO_DIRECTIONS = { ['in'] = true, out = true, inout = true }
local IO_KEYS = { type = true, path = true, hostport = true, direction = true }
-- The key each type cannot do without.
local IO_NEEDS = { socket = 'path', file = 'path', listen = 'hostport', network = 'hostport' }

--- Checks ClusterConfig.io: channel name -> IOConfig.
local function checkIO(io)
  local where = 'ClusterConfig.io'
  if type(io) ~= 'table' then
    return nil, ('%s: must be a table of channel name = IOConfig, got %s'):format(where, type(io))
  end
  local names = {}
  for name in pairs(io) do
    if type(name) ~= 'string' then
      return nil, ('%s: channel names must be strings, got %s'):format(where, type(name))
    end
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local ch, at = io[name], where .. '.' .. name
    if type(ch) ~= 'table' then return nil, ('%s: must be an IOConfig table, got %s'):format(at, type(ch)) end
    for k in pairs(ch) do
      if not IO_KEYS[k] then return nil, ('%s: unknown key %q'):format(at, tostring(k)) end
    end
    if not IO_TYPES[ch.type] then
      return nil, ('%s.type: must be one of "socket", "file", "console", "listen", "network", got %s')
        :format(at, type(ch.type) == 'string' and ('%q'):format(ch.type) or type(ch.type))
    end
    if ch.direction ~= nil and not IO_DIRECTIONS[ch.direction] then
      return nil, ('%s.direction: must be "in", "out" or "inout"'):format(at)
    end
    for _, k in ipairs({ 'path', 'hostport' }) do
      if ch[k] ~= nil and type(ch[k]) ~= 'string' then return nil, ('%s.%s: must be a string'):format(at, k) end
    end
    local need = IO_NEEDS[ch.type]
    if need and (ch[need] == nil or ch[need] == '') then
      return nil, ('%s.%s: required for type "%s"'):format(at, need, ch.type)
    end
  end
  return true
end

--- Validates a ClusterConfig. Returns true, or nil and a message.
---@param cfg table
---@param allowedGlobals string[]|nil
function M.validateCluster(cfg, allowedGlobals)
  if type(cfg) ~= 'table' then return nil, 'ClusterConfig: must be a table' end
  for k in pairs(cfg) do
    if not CLUSTER_KEYS[k] then return nil, ('ClusterConfig: unknown key %q'):format(tostring(k)) end
  end
  if type(cfg.vats) ~= 'table' or next(cfg.vats) == nil then
    return nil, 'ClusterConfig.vats: at least one vat is required'
  end
  if type(cfg.bootstrap) ~= 'string' then
    return nil, 'ClusterConfig.bootstrap: must name one of the vats'
  end
  if cfg.vats[cfg.bootstrap] == nil then
    return nil, ('ClusterConfig.bootstrap: no vat named %q'):format(cfg.bootstrap)
  end
  if cfg.services ~= nil then
    if not isSequence(cfg.services) then return nil, 'ClusterConfig.services: must be a sequence of names' end
    for i, s in ipairs(cfg.services) do
      if type(s) ~= 'string' then return nil, ('ClusterConfig.services[%d]: must be a string'):format(i) end
    end
  end
  if cfg.bundles ~= nil and type(cfg.bundles) ~= 'table' then
    return nil, 'ClusterConfig.bundles: must be a table'
  end
  if cfg.forceReset ~= nil and type(cfg.forceReset) ~= 'boolean' then
    return nil, 'ClusterConfig.forceReset: must be a boolean'
  end
  if cfg.io ~= nil then
    local ok, err = checkIO(cfg.io)
    if not ok then return nil, err end
  end
  local names = {}
  for name in pairs(cfg.vats) do names[#names + 1] = tostring(name) end
  table.sort(names)
  for _, name in ipairs(names) do
    local ok, err = checkVat(name, cfg.vats[name], cfg, allowedGlobals)
    if not ok then return nil, err end
  end
  return true
end

return M
