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

local byte = string.byte

--- Where the last '/' of a path is, or nil. A path's name and directory
--- are cut there rather than by patterns: an unanchored match tries at
--- every byte, backtracking, which cost about 10K instructions a launch
--- of a vat (as much as reading its file).
local function lastSlash(path)
  for i = #path, 1, -1 do
    if byte(path, i) == 47 then return i end
  end
end

--- The directory of a path whose last '/' is at slash (or nil): what
--- `path:match('^(.*)/[^/]*$') or '.'` is.
local function dirname(path, slash)
  return slash and path:sub(1, slash - 1) or '.'
end

--- The module name of a main file whose last '/' is at slash (or nil):
--- what `path:match('([^/]+)%.lua$') or path` is, its file name without
--- `.lua` (a file named only `.lua` has none, and is named by its path).
local function mainName(path, slash)
  local file = slash and path:sub(slash + 1) or path
  if #file > 4 and file:sub(-4) == '.lua' then return file:sub(1, -5) end
  return path
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

local find = string.find

-- A literal require: `require 'm'`, `require("m")` and the like, matched
-- from where a plain search found the word.
local REQUIRE_AT = "^require%s*%(?%s*['\"]([%w_%.%-]+)['\"]"

--- Module names a chunk requires with a literal string, in order: the
--- names `src:gmatch(REQUIRE_AT without its '^')` gives. A gmatch tries
--- the pattern at every byte of the source, where only a byte that starts
--- the word `require` can begin a match; finding the word plainly and
--- trying the pattern there only costs a tenth as much. As gmatch does, a
--- search goes on where a match ended, or at the byte after a failed try
--- (`requirequire'x'` requires x).
---@param src string
---@return string[]
function M.requiresOf(src)
  local names, init = {}, 1
  while true do
    local at = find(src, 'require', init, true)
    if not at then return names end
    local _, e, name = find(src, REQUIRE_AT, at)
    if e then
      names[#names + 1] = name
      init = e + 1
    else
      init = at + 1
    end
  end
end

local requiresOf = M.requiresOf

--- Whether every module src requires with a literal name is part of
--- ocap's runtime: a lenient build of such a source (M.build) bundles it
--- alone, whatever is next to it, and reads no other file.
---@param src string
---@return boolean
function M.requiresOnlyRuntime(src)
  for _, name in ipairs(requiresOf(src)) do
    if not reserved(name) then return false end
  end
  return true
end

--- Builds a bundle table from a main file: the file and, transitively, the
--- modules it requires (with a literal name) from its own directory.
--- Strict (the default, for `ocap bundle`): a module that is neither next
--- to the file nor part of ocap's runtime, or a syntax error, is an error.
--- Lenient (`options.lenient`, for a kernel loading a sourceSpec): such
--- modules, and files next to the vat named like runtime modules, are left
--- out and sources are not checked, so the vat itself reports what it
--- really requires at run time, where it really does. Only a main file
--- named like a runtime module fails a lenient build. `options.source`
--- is the main file's contents, for a caller that has read them already.
---@param mainPath string
---@param options { lenient: boolean, source: string|nil }|nil
---@return table|nil bundle, string|nil err
function M.build(mainPath, options)
  local lenient = options and options.lenient
  local src, err = options and options.source, nil
  if not src then src, err = readFile(mainPath) end
  if not src then return nil, ('cannot read %s: %s'):format(mainPath, tostring(err)) end
  if not lenient then
    local ok, perr = load(src, '=' .. mainPath, 't')
    if not ok then return nil, perr end
  end
  local slash = lastSlash(mainPath)
  local main = mainName(mainPath, slash)
  if reserved(main) then return nil, ('%s: %s'):format(mainPath, shadowError(main)) end
  local modules = { [main] = src }
  local dir = dirname(mainPath, slash)
  local searchPath = dir .. '/?.lua;' .. dir .. '/?/init.lua'
  local queue = requiresOf(src)
  local i = 1
  while i <= #queue do
    local name = queue[i]
    i = i + 1
    -- Runtime modules come from the kernel, never from the bundle; a file
    -- that would provide one next to the vat is a mistake worth naming
    -- (a lenient build leaves it out: the vat gets the runtime's).
    if reserved(name) then
      local path = not lenient and package.searchpath(name, searchPath)
      if path then return nil, ('%s: %s'):format(path, shadowError(name)) end
    elseif not modules[name] then
      local path = package.searchpath(name, searchPath)
      local msrc = path and readFile(path)
      if msrc then
        if not lenient then
          local lok, lerr = load(msrc, '=' .. path, 't')
          if not lok then return nil, lerr end
        end
        modules[name] = msrc
        for _, n in ipairs(requiresOf(msrc)) do queue[#queue + 1] = n end
      elseif not lenient then
        return nil, ('%s requires %q, which is not in %s (a vat gets ocap, ocap.* and cjson, '
          .. 'and the modules next to it)'):format(mainPath, name, dir)
      end
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

local USAGE = [[
usage: ocap bundle [-o OUT] [--] FILE.lua|DIR...

Makes a .bundle file from each vat FILE.lua: the vat and the modules it
requires from its own directory, so a kernel can keep the vat's code and
restart it without the sources. ocap, ocap.* and cjson come with every vat
and are not bundled. FILE.bundle is written next to FILE.lua.

A directory DIR stands for the vats in it: its .lua files that define
buildRootObject (the modules they require are bundled into them).

  -o OUT      with one vat: the bundle file to write; with several vats, or
              a directory: the directory to write the bundles in. Missing
              directories are created.
  --          end of the options
  -h, --help  print this help
]]

local function usageError(msg)
  io.stderr:write('ocap bundle: ', msg, " (see 'ocap bundle --help')\n")
  return 2
end

local function plural(n, word) return ('%d %s%s'):format(n, word, n == 1 and '' or 's') end

--- The vats of directory dir: its .lua files that define buildRootObject.
local function vatsIn(sys, dir)
  local names, err = sys.listdir(dir)
  if not names then return nil, err end
  local vats = {}
  for _, name in ipairs(names) do
    local path = dir:gsub('/+$', '') .. '/' .. name
    if name:match('%.lua$') and not sys.isdir(path) then
      local src = readFile(path)
      if src and src:find('buildRootObject', 1, true) then vats[#vats + 1] = path end
    end
  end
  return vats
end

--- Writes text to path, creating its missing parent directories.
local function writeFile(sys, path, text)
  local parent = path:match('^(.*)/[^/]*$')
  if parent and parent ~= '' and not sys.isdir(parent) then
    local ok, err = sys.mkdirs(parent)
    if not ok then return nil, err end
  end
  local f, err = io.open(path, 'wb')
  if not f then return nil, ('cannot write %s'):format(err) end
  f:write(text)
  f:close()
  return true
end

--- `ocap bundle [-o OUT] FILE.lua|DIR...` (the ocap command's subcommand).
---@param args table the arguments after `bundle`
---@return integer status
function M.main(args)
  local sys = require 'ocap.sys'
  local inputs, out = {}, nil
  local i, flags = 1, true
  while i <= #args do
    local a = args[i]
    if flags and a == '--' then
      flags = false
    elseif flags and (a == '--help' or a == '-h') then
      io.stdout:write(USAGE)
      return 0
    elseif flags and a == '-o' then
      out = args[i + 1]
      if out == nil or out == '' then return usageError('-o needs a file or directory') end
      i = i + 1
    elseif flags and a:sub(1, 1) == '-' and #a > 1 then
      return usageError(('unknown option %s'):format(a))
    else
      inputs[#inputs + 1] = a
    end
    i = i + 1
  end
  if #inputs == 0 then return usageError('no vat file given') end

  local files, fromDir = {}, false
  for _, input in ipairs(inputs) do
    if sys.isdir(input) then
      local vats, err = vatsIn(sys, input)
      if not vats then
        io.stderr:write('ocap bundle: cannot list ', err, '\n')
        return 1
      end
      if #vats == 0 then
        return usageError(('%s has no vat files (.lua files defining buildRootObject); give the vat files'
          .. ' to bundle'):format(input))
      end
      for _, v in ipairs(vats) do files[#files + 1] = v end
      fromDir = true
    elseif not input:match('%.lua$') then
      return usageError(('%s is not a .lua file or a directory'):format(input))
    else
      files[#files + 1] = input
    end
  end

  -- With several vats, -o names the directory the bundles go to.
  local outDir = out and (#files > 1 or fromDir or sys.isdir(out) or out:match('/$')) and out:gsub('/+$', '')
  if outDir == '' then outDir = '/' end
  for _, file in ipairs(files) do
    local b, err = M.build(file)
    if not b then
      io.stderr:write('ocap bundle: ', err, '\n')
      return 1
    end
    local base = file:gsub('%.lua$', '') .. '.bundle'
    local target = outDir and (outDir .. '/' .. base:match('[^/]*$')) or out or base
    local ok, werr = writeFile(sys, target, M.encode(b))
    if not ok then
      io.stderr:write('ocap bundle: ', werr, '\n')
      return 1
    end
    local n = 0
    for _ in pairs(b.modules) do n = n + 1 end
    print(('%s -> %s (%s)'):format(file, target, plural(n, 'module')))
  end
  return 0
end

return M
