local M = {}
function M.buildRootObject( -- unterminated
return M
