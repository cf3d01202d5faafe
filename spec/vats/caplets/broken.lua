-- A caplet whose buildRootObject throws: Omnium must refuse to install it.
local M = {}

function M.buildRootObject()
  error('broken caplet refuses to build')
end

return M
