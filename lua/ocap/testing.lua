--- Helpers for busted specs that drive real kernels (API.md §9).
local Kernel = require 'ocap.kernel'

local M = {}

local tempDirs = {}

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
  local kernel = Kernel.make(opts)
  kernel._testOptions = options or {}
  function kernel.logs() return captured end
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

--- Messages of the captured log entries, optionally of one level.
function M.messages(kernel, level)
  local out = {}
  for _, e in ipairs(kernel:logs()) do
    if level == nil or e.level == level then out[#out + 1] = e.message end
  end
  return out
end

return M
