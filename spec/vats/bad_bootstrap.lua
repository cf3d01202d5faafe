local ocap = require 'ocap'
local M = {}
function M.buildRootObject()
  return ocap.makeDefaultExo('root', { bootstrap = function() error('bootstrap exploded') end })
end
return M
