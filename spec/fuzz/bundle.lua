-- The bundle target: a bundle file, launched as
-- ClusterConfig.vats.<name>.bundleSpec. An input that starts with `#` is the
-- file's contents as they are, to fuzz its structure; any other input is
-- `<main>\0<name>\0<source>\0<name>\0<source>...`, written as `ocap bundle`
-- would write it, to fuzz the module names and sources.
-- The fuzzed vat runs with small limits; a clean refusal (a rejected
-- launch) is fine. It raises, which fails the run, when decoding the
-- bundle raises, when a launch is accepted that decoding refuses, when the
-- launch fails with anything but an error value, or when the kernel is not
-- sound afterwards: a canary vat must still answer, and no vat of the
-- fuzzed subcluster may be left running.
local Kernel = require 'ocap.kernel'
local bundle = require 'ocap.bundle'
local ocap = require 'ocap'

local SOURCE = assert(os.getenv('OCAP_SOURCE_DIR'), 'OCAP_SOURCE_DIR is not set')
local path = os.tmpname()
-- The file goes when the state is closed (the harness closes it at exit).
local sentinel = setmetatable({}, { __gc = function() os.remove(path) end })

local kernel = Kernel.make({ logger = function() end })
local canary = kernel:launchSubcluster({
  bootstrap = 'echo', vats = { echo = { sourceSpec = SOURCE .. '/spec/vats/echo.lua' } },
}):await()

local function write(text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

-- Terminates every subcluster but the canary's.
local function cleanUp()
  for _, sc in ipairs(kernel:getSubclusters()) do
    if sc.id ~= canary.subclusterId then kernel:terminateSubcluster(sc.id):await() end
  end
end

-- The file contents an input stands for.
local function fileOf(input)
  if input:sub(1, 1) == '#' then return input end
  local parts = {}
  for piece in (input .. '\0'):gmatch('([^%z]*)%z') do parts[#parts + 1] = piece end
  local modules = {}
  for i = 2, #parts - 1, 2 do modules[parts[i]] = parts[i + 1] end
  return bundle.encode({ format = 'ocap-bundle-1', main = parts[1], modules = modules })
end

return function(input)
  local _ = sentinel
  input = fileOf(input)
  local ok, decoded, why = pcall(bundle.decode, input)
  if not ok then error('bundle.decode raised: ' .. tostring(decoded)) end
  write(input)
  local launched, r = pcall(ocap.await, kernel:launchSubcluster({
    bootstrap = 'v',
    vats = { v = { bundleSpec = path,
      creationOptions = { memoryLimit = 16 << 20, meter = { instructions = 2000000 } } } },
  }))
  if launched and not decoded then error('a launch took a bundle that decode refuses: ' .. tostring(why)) end
  if not launched then
    -- A bootstrap that waits forever is the vat's business, not a fault.
    local never = type(r) == 'string' and r:find('can never settle', 1, true)
    if not never and (type(r) ~= 'table' or type(r.message) ~= 'string') then
      error('a launch failed with ' .. tostring(r))
    end
  end
  cleanUp()
  local answer = kernel:queueMessage(canary.rootKref, 'ping', { 7 }):await()
  if answer ~= 7 then error('the canary answered ' .. tostring(answer)) end
  local vats = kernel:getStatus().vats
  if #vats ~= 1 then error(('%d vats are running, only the canary should be'):format(#vats)) end
  return launched
end
