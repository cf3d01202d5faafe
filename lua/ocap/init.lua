--- `require 'ocap'` in a host script or kernel service.
local api = require 'ocap.api'
local Kernel = require 'ocap.kernel'

return api.make({ Kernel = Kernel }, function()
  local k = Kernel.current()
  return k and k.ls.marshal
end)
