--- Vat bundles: a vat's main chunk and the modules it requires, in one
--- file, so a kernel can store it and restart the vat without the sources.
---
--- A bundle file holds the smallcaps encoding of
---   { format = 'ocap-bundle-1', main = <module name>, modules = { [name] = source } }
local marshal = require 'ocap.marshal'

local M = {}

local FORMAT = 'ocap-bundle-1'

--- The contents of a file, or nil and the error.
local function readFile(path)
  local f, err = io.open(path, 'rb')
  if not f then return nil, err end
  local s = f:read('a')
  f:close()
  return s
end

M.readFile = readFile

local function dirname(path)
  return path:match('^(.*)/[^/]*$') or '.'
end

--- Whether a module name belongs to ocap's runtime (`ocap`, `ocap.*`,
--- `cjson`): a vat gets those from the kernel, and a bundle module of such
--- a name would stand in for the runtime, so bundles cannot hold one.
---@param name string
---@return boolean
local function reserved(name)
  return name == 'ocap' or name == 'cjson' or name:sub(1, 5) == 'ocap.'
end

--- Says why a module of this name cannot be bundled.
local function shadowError(name)
  return ('module "%s" would shadow ocap\'s runtime (a bundle cannot contain ocap, ocap.* or cjson)')
    :format(name)
end

--- The first reserved module name of a bundle (its main first), if any.
local function shadowed(bundle)
  if reserved(bundle.main) then return bundle.main end
  local names = {}
  for name in pairs(bundle.modules) do
    if type(name) == 'string' and reserved(name) then names[#names + 1] = name end
  end
  table.sort(names)
  return names[1]
end

--- Module names a chunk requires with a literal string.
local function requiresOf(src)
  local names = {}
  for name in src:gmatch("require%s*%(?%s*['\"]([%w_%.%-]+)['\"]") do names[#names + 1] = name end
  return names
end

--- Builds a bundle table from a main file.
---@param mainPath string
---@return table|nil bundle, string|nil err
function M.build(mainPath)
  local src, err = readFile(mainPath)
  if not src then return nil, ('cannot read %s: %s'):format(mainPath, tostring(err)) end
  local ok, perr = load(src, '=' .. mainPath, 't')
  if not ok then return nil, perr end
  local main = mainPath:match('([^/]+)%.lua$') or mainPath
  if reserved(main) then return nil, ('%s: %s'):format(mainPath, shadowError(main)) end
  local modules = { [main] = src }
  local searchPath = dirname(mainPath) .. '/?.lua;' .. dirname(mainPath) .. '/?/init.lua'
  local queue = requiresOf(src)
  local i = 1
  while i <= #queue do
    local name = queue[i]
    i = i + 1
    -- Runtime modules come from the kernel, never from the bundle; a file
    -- that would provide one next to the vat is a mistake worth naming.
    if reserved(name) then
      local path = package.searchpath(name, searchPath)
      if path then return nil, ('%s: %s'):format(path, shadowError(name)) end
    elseif not modules[name] then
      local path = package.searchpath(name, searchPath)
      if not path then
        return nil, ('%s requires %q, which is not next to it'):format(mainPath, name)
      end
      local msrc = assert(readFile(path))
      local lok, lerr = load(msrc, '=' .. path, 't')
      if not lok then return nil, lerr end
      modules[name] = msrc
      for _, n in ipairs(requiresOf(msrc)) do queue[#queue + 1] = n end
    end
  end
  return { format = FORMAT, main = main, modules = modules }
end

--- Encodes a bundle as file contents.
function M.encode(bundle)
  return marshal.serializeData(bundle).body
end

--- Decodes file contents; returns the bundle or nil, err.
function M.decode(text)
  local ok, b = pcall(marshal.unserializeData, { body = text, slots = {} })
  if not ok or type(b) ~= 'table' or b.format ~= FORMAT or type(b.main) ~= 'string'
    or type(b.modules) ~= 'table' or type(b.modules[b.main]) ~= 'string' then
    return nil, 'not an ocap bundle'
  end
  -- Decoding is where a bundle from a file enters: one holding a runtime
  -- module is refused here (and again by the kernel when the vat starts).
  local bad = shadowed(b)
  if bad then return nil, 'a bundle whose ' .. shadowError(bad) end
  return b
end

--- `ocap bundle FILE.lua... [-o OUT]`
function M.main(args)
  local files, out = {}, nil
  local i = 1
  while i <= #args do
    if args[i] == '-o' then
      out = args[i + 1]
      i = i + 1
    else
      files[#files + 1] = args[i]
    end
    i = i + 1
  end
  if #files == 0 then
    io.stderr:write('ocap bundle: no vat file given\n')
    return 2
  end
  if out and #files > 1 then
    io.stderr:write('ocap bundle: -o needs exactly one input file\n')
    return 2
  end
  for _, file in ipairs(files) do
    local b, err = M.build(file)
    if not b then
      io.stderr:write('ocap bundle: ', err, '\n')
      return 1
    end
    local target = out or (file:gsub('%.lua$', '') .. '.bundle')
    local f = assert(io.open(target, 'wb'))
    f:write(M.encode(b))
    f:close()
    print(('%s -> %s (%d module%s)'):format(file, target, (function()
      local n = 0
      for _ in pairs(b.modules) do n = n + 1 end
      return n
    end)(), ''))
  end
  return 0
end

return M
