local M = {}
function M.buildRootObject() error('cannot build') end
return M
