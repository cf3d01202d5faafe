--- Helpers for busted specs that drive real kernels (docs/api.md §9).
local Kernel = require 'ocap.kernel'
local logview = require 'ocap.logview'

local M = {}

local tempDirs = {}

-- Every kernel makeKernel made, and how many of its log entries came
-- before the current test (see the busted hook below).
local made = setmetatable({}, { __mode = 'k' })

local function removeAll()
  for i = #tempDirs, 1, -1 do
    os.execute("rm -rf '" .. tempDirs[i]:gsub("'", "'\\''") .. "'")
    tempDirs[i] = nil
  end
end

-- Removes the temp directories when the Lua state closes (end of run).
M._sentinel = setmetatable({}, { __gc = removeAll })

--- A fresh empty directory, removed after the run.
---@return string path
function M.tempDir()
  local base = os.getenv('TMPDIR') or '/tmp'
  for _ = 1, 100 do
    local path = ('%s/ocap-test-%d-%06d'):format(base, os.time(), math.random(0, 999999))
    if os.execute("mkdir '" .. path .. "' 2>/dev/null") then
      tempDirs[#tempDirs + 1] = path
      return path
    end
  end
  error('testing.tempDir: cannot create a temporary directory')
end

--- Removes the temporary directories now (also done at exit).
M.cleanup = removeAll

--- A kernel whose log entries are captured (in memory unless `database`).
---@param options table|nil Kernel.make options
function M.makeKernel(options)
  local opts = {}
  for k, v in pairs(options or {}) do opts[k] = v end
  local captured = {}
  local userLogger = opts.logger
  opts.logger = function(entry)
    captured[#captured + 1] = entry
    if userLogger then userLogger(entry) end
  end
  if opts.database == nil then opts.database = false end
  local ok, kernel = pcall(Kernel.make, opts)
  if not ok then error(kernel, 2) end -- at the spec's line, not this one
  kernel._testOptions = options or {}
  function kernel.logs() return captured end
  made[kernel] = 0
  return kernel
end

--- Stops a kernel and makes a new one on the same database.
---@param kernel table a kernel made by testing.makeKernel
---@param options table|nil options replacing the original ones
function M.restart(kernel, options)
  kernel:stop()
  local opts = {}
  for k, v in pairs(kernel._testOptions or {}) do opts[k] = v end
  opts.resetStorage = nil
  for k, v in pairs(options or {}) do opts[k] = v end
  return M.makeKernel(opts)
end

-- ---- the busted hook ----
--
-- Under busted, a failing test's report is rewritten before busted's own
-- output handler sees it: an error raised by ocap's modules (a rejection
-- raised by `await`, say) is placed at the first line outside them, which
-- is the spec's own, and the log entries the test's kernels captured are
-- appended, since vats tell what went wrong only through their logs.

local LOG_TAIL = 40 -- entries shown per kernel, the last ones

-- The directory of ocap's modules, in full (tracebacks shorten long paths
-- to their end, so files are recognised by their last two components).
local ocapDir = debug.getinfo(1, 'S').source:match('^@(.*)[/\\][^/\\]*$')

local function isOcapFile(file)
  local name = ocapDir and file:match('ocap[/\\]([%w_]+)%.lua$')
  local f = name and io.open(ocapDir .. '/' .. name .. '.lua')
  if f then f:close() end
  return f ~= nil
end

-- The first "file:line" of a traceback that is neither C nor ocap's.
local function specLine(traceback)
  for file, line in tostring(traceback):gmatch('\n%s*([^\n]-):(%d+):') do
    if file ~= '[C]' and not isOcapFile(file) then return file .. ':' .. line end
  end
end

local RANK = { debug = 1, log = 2, warn = 3, error = 4, none = 5 }

local function capturedLogs()
  -- The default logger's threshold ($OCAP_LOG) applies here too: the
  -- tracebacks at debug level are one OCAP_LOG=debug away.
  local min = RANK[logview.threshold()]
  local kernels = {}
  for kernel in pairs(made) do kernels[#kernels + 1] = kernel end
  table.sort(kernels, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, kernel in ipairs(kernels) do
    local shown = {}
    for i, e in ipairs(kernel.logs()) do
      if i > made[kernel] and (RANK[e.level] or 2) >= min then shown[#shown + 1] = e end
    end
    if #shown > 0 then
      local first = math.max(1, #shown - LOG_TAIL + 1)
      out[#out + 1] = ('\n\nocap.testing: log of a kernel of this test (%d entries%s):'):format(
        #shown, first > 1 and (', the last %d'):format(LOG_TAIL) or '')
      for i = first, #shown do out[#out + 1] = '\n  ' .. logview.format(shown[i]) end
    end
  end
  return table.concat(out)
end

local function rewrite(message, trace)
  message = tostring(message)
  local at, file = message:match('^(([^\n]-):%d+): ')
  if at and isOcapFile(file) then
    local line = trace and specLine(trace.traceback)
    if line then message = line .. message:sub(#at + 1) end
  end
  return message .. capturedLogs()
end

local function hookBusted()
  local busted = package.loaded['busted']
  local ok, subscribe = pcall(function() return busted.subscribe end)
  if not ok or type(subscribe) ~= 'function' then return end
  local subs, republishing = {}, false
  local function on(channel, fn, opts)
    subs[#subs + 1] = { busted.subscribe(channel, fn, opts), channel }
  end
  on({ 'test', 'start' }, function()
    for kernel in pairs(made) do made[kernel] = #kernel.logs() end
    return nil, true
  end)
  for _, status in ipairs({ 'failure', 'error' }) do
    on({ status, 'it' }, function(element, parent, message, trace)
      if republishing then return nil, true end
      local better = rewrite(message, trace)
      if better == message then return nil, true end
      -- Messages are strings, so the report is published again with the
      -- better one and this publication stops here.
      republishing = true
      busted.publish({ status, 'it' }, element, parent, better, trace)
      republishing = false
      return nil, false
    end, { priority = 1 })
  end
  -- busted reloads this module for every spec file: one hook at a time.
  on({ 'file', 'end' }, function()
    for _, s in ipairs(subs) do busted.unsubscribe(s[1].id, s[2]) end
    return nil, true
  end)
end
hookBusted()

--- Messages of the captured log entries, optionally of one level.
function M.messages(kernel, level)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if level == nil or e.level == level then out[#out + 1] = e.message end
  end
  return out
end

return M
