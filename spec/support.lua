--- Helpers shared by the specs (not a spec itself).
local ocap = require 'ocap'

local M = {}

--- The rejection of p, which must reject with an error value or data table.
function M.rejection(p)
  local ok, err = pcall(ocap.await, p)
  assert(not ok, 'expected a rejection, got ' .. tostring(err))
  assert(type(err) == 'table', 'expected an error value, got ' .. tostring(err))
  return err
end

--- The getStatus().terminatedVats record of vatId, if any.
function M.terminatedRecord(kernel, vatId)
  for _, rec in ipairs(kernel:getStatus().terminatedVats) do
    if rec.id == vatId then return rec end
  end
end

--- Whether vatId is among the kernel's running vats.
function M.isLive(kernel, vatId)
  for _, v in ipairs(kernel:getStatus().vats) do
    if v.id == vatId then return true end
  end
  return false
end

return M
