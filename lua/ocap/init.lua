--- `require 'ocap'` in a host script or kernel service.
local api = require 'ocap.api'

return api.make({
  Kernel = require 'ocap.kernel',
})
