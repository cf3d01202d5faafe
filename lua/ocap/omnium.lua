--- Omnium: caplets (installable vat applications with manifests) and the
--- system subcluster that installs them into a kernel (see docs/caplets.md).
local M = {}

local FIELDS = { 'id', 'name', 'version', 'bundleSpec', 'requestedServices', 'providedServices' }
local KNOWN = {}
for _, f in ipairs(FIELDS) do KNOWN[f] = true end

-- Values are shown as JSON would show them, so that an error points at
-- what is in the manifest file.
local function show(v)
  if type(v) == 'string' then return ('%q'):format(v) end
  if type(v) == 'table' then return 'a table' end
  if type(v) == 'userdata' then return 'null' end
  return tostring(v)
end

local function fail(field, fmt, ...)
  error(('CapletManifest.%s: ' .. fmt):format(field, ...), 0)
end

-- Semantic versions 2.0: MAJOR.MINOR.PATCH, numbers without leading zeros,
-- then an optional pre-release and build metadata of dot-separated
-- identifiers.
local function isNumber(s) return s:match('^%d+$') and (s == '0' or s:sub(1, 1) ~= '0') end

local function identifiers(s, numeric)
  if s == '' then return false end
  for ident in (s .. '.'):gmatch('(.-)%.') do
    if not ident:match('^[0-9A-Za-z%-]+$') then return false end
    if numeric and ident:match('^%d+$') and not isNumber(ident) then return false end
  end
  return true
end

--- Whether s is a semantic version `MAJOR.MINOR.PATCH[-pre][+build]`.
---@param s string
---@return boolean
function M.isSemver(s)
  if type(s) ~= 'string' then return false end
  local core, rest = s:match('^([^-+]*)(.*)$')
  local a, b, c = core:match('^(%d+)%.(%d+)%.(%d+)$')
  if not (a and isNumber(a) and isNumber(b) and isNumber(c)) then return false end
  local pre, build = rest:match('^%-([^+]*)(.*)$')
  if pre then
    if not identifiers(pre, true) then return false end
    rest = build
  end
  if rest ~= '' then
    local meta = rest:match('^%+(.*)$')
    if not (meta and identifiers(meta, false)) then return false end
  end
  return true
end

local function checkServices(m, field)
  local list = m[field]
  if list == nil then return {} end
  if type(list) ~= 'table' then fail(field, '%s is not a list of service names', show(list)) end
  local seen, out = {}, {}
  for k in pairs(list) do
    if math.type(k) ~= 'integer' or k < 1 or k > #list then
      fail(field, 'has the key %s; it must be a list of service names', show(k))
    end
  end
  for i, name in ipairs(list) do
    if name == 'registry' then
      fail(field .. '[' .. i .. ']', '"registry" is reserved (every caplet gets parameters.registry)')
    end
    if type(name) ~= 'string' or not name:match('^[%a_][%w_]*$') then
      fail(field .. '[' .. i .. ']', '%s is not a service name (letters, digits and _, not first a digit)',
        show(name))
    end
    if seen[name] then fail(field, '%s is listed twice', show(name)) end
    seen[name] = true
    out[i] = name
  end
  return out
end

local function resolveBundle(spec, baseDir)
  if spec:sub(1, 7) == 'file://' then
    local path = spec:sub(8)
    if path:sub(1, 1) ~= '/' then
      fail('bundleSpec', '%s is not a file:// URL with an absolute path', show(spec))
    end
    return (path:gsub('%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end))
  end
  if spec:match('^%a[%w+.-]*://') then
    fail('bundleSpec', '%s: only file:// URLs are supported', show(spec))
  end
  if spec:sub(1, 1) == '/' or not baseDir then return spec end
  return baseDir .. '/' .. spec
end

--- Validates a manifest field by field and returns a normalized copy: the
--- service lists present, and `bundleSpec` a path (a `file://` URL decoded,
--- a relative path joined to `baseDir` when one is given). Raises
--- `CapletManifest.<field>: <problem>` naming the first bad field.
---@param m table the manifest as decoded from JSON
---@param baseDir string|nil the manifest's directory
---@return table manifest
function M.validateManifest(m, baseDir)
  if type(m) ~= 'table' then error(('CapletManifest: %s is not an object'):format(show(m)), 0) end
  local unknown = {}
  for k in pairs(m) do
    if not KNOWN[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    fail(unknown[1], 'unknown field (the fields are %s)', table.concat(FIELDS, ', '))
  end
  for _, f in ipairs({ 'id', 'name', 'version', 'bundleSpec' }) do
    if m[f] == nil then fail(f, 'missing') end
    if type(m[f]) ~= 'string' then fail(f, '%s is not a string', show(m[f])) end
  end
  if not m.id:match('^[\33-\126]+$') then
    fail('id', '%s is not printable ASCII without spaces', show(m.id))
  end
  if m.name == '' then fail('name', '"" is empty') end
  if not M.isSemver(m.version) then fail('version', '%s is not a semantic version', show(m.version)) end
  if m.bundleSpec == '' then fail('bundleSpec', '"" is empty') end
  return {
    id = m.id, name = m.name, version = m.version,
    bundleSpec = resolveBundle(m.bundleSpec, baseDir),
    requestedServices = checkServices(m, 'requestedServices'),
    providedServices = checkServices(m, 'providedServices'),
  }
end

--- Reads `<dir>/manifest.json` (or a manifest file itself) and validates it;
--- a relative bundleSpec is taken relative to the manifest's directory.
---@param path string a caplet directory or a manifest file
---@return table manifest
function M.load(path)
  local file, dir = path, path
  if path:match('%.json$') then
    dir = path:match('^(.*)/[^/]*$') or '.'
  else
    file = path .. '/manifest.json'
  end
  if dir:sub(1, 1) ~= '/' then
    local pwd = os.getenv('PWD')
    if pwd then dir = (dir == '.') and pwd or (pwd .. '/' .. dir) end
  end
  local f, err = io.open(file, 'rb')
  if not f then error(('CapletManifest: cannot read %q: %s'):format(file, tostring(err)), 0) end
  local text = f:read('a')
  f:close()
  local cjson = require('cjson.safe')
  local m, jerr = cjson.decode(text)
  if m == nil then error(('CapletManifest: %s is not JSON: %s'):format(file, tostring(jerr)), 0) end
  local ok, res = pcall(M.validateManifest, m, dir)
  if not ok then error(('%s (in %s)'):format(tostring(res), file), 0) end
  return res
end

-- ---- Omnium, the system subcluster ----

--- The name Omnium's system subcluster is declared under.
M.NAME = 'omnium'

-- Where the controller vat's source is: next to the installed module
-- (ocap/vats/omnium/), or in the source tree (vats/omnium/).
local function controllerPath()
  local here = package.searchpath('ocap.omnium', package.path)
  local dir = here and here:match('^(.*)/[^/]*$') or '.'
  for _, p in ipairs({ dir .. '/vats/omnium/controller.lua', dir .. '/../../vats/omnium/controller.lua' }) do
    local f = io.open(p, 'rb')
    if f then
      f:close()
      return p
    end
  end
  error('ocap.omnium: vats/omnium/controller.lua not found next to ' .. tostring(here), 0)
end

--- The systemSubclusters entry that makes a kernel run Omnium.
---@return table entry { name = 'omnium', config = ClusterConfig }
function M.subcluster()
  return { name = M.NAME, config = {
    bootstrap = 'controller', services = { 'kernelFacet' },
    vats = { controller = { sourceSpec = controllerPath() },
      registry = { sourceSpec = controllerPath():gsub('controller%.lua$', 'registry.lua') } },
  } }
end

--- The host facade over a kernel's Omnium: caplet.load/install/uninstall/
--- list/get/getCapletRoot/callCapletMethod/upgrade and services.list. Every call
--- but load returns a promise; bad input rejects and changes nothing.
---@param kernel table a kernel made with omnium.subcluster() declared
---@return table facade
function M.attach(kernel)
  local promise = require 'ocap.promise'
  local pass = require 'ocap.pass'
  local root = kernel:getSystemSubclusterRoot(M.NAME)
  local function send(method, ...)
    return kernel:queueMessage(root, method, table.pack(...))
  end
  local caplet = { load = M.load }
  function caplet.install(manifest)
    local ok, m = pcall(M.validateManifest, manifest)
    if not ok then return promise.reject(pass.makeError(m)) end
    return send('install', m, os.time())
  end
  function caplet.upgrade(manifest)
    local ok, m = pcall(M.validateManifest, manifest)
    if not ok then return promise.reject(pass.makeError(m)) end
    return send('upgrade', m)
  end
  function caplet.uninstall(id, opts) return send('uninstall', id, opts or {}) end
  function caplet.list() return send('list') end
  function caplet.get(id) return send('get', id) end
  function caplet.getCapletRoot(id) return send('getCapletRoot', id) end
  function caplet.callCapletMethod(id, method, args) return send('callCapletMethod', id, method, args or {}) end
  local services = {}
  function services.list() return send('services') end
  function services.revoke(name) return send('revoke', name) end
  return { caplet = caplet, services = services, root = root }
end

return M
