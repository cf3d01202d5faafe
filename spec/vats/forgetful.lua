-- A vat that uses endowments whether or not it asked for them, for the
-- specs of the hint an absent one gives (errors_spec.lua).
-- luacheck: read globals setTimeout clearTimeout setInterval clearInterval
local ocap = require 'ocap'

local M = {}

local uses = {
  print = function() print('hello') end,
  setTimeout = function() setTimeout(function() end, 1) end,
  clearTimeout = function() clearTimeout(1) end,
  setInterval = function() setInterval(function() end, 1) end,
  clearInterval = function() clearInterval(1) end,
  ['os.time'] = function() return os.time() end,
  ['os.clock'] = function() return os.clock() end,
  ['os.date'] = function() return os.date() end,
  ['math.random'] = function() return math.random(6) end,
  ['a table field'] = function() local t = {} return t.time() end,
}

function M.buildRootObject(_vatPowers, parameters)
  if parameters.atTopLevel then uses[parameters.atTopLevel]() end
  return ocap.makeDefaultExo('forgetful', {
    use = function(_, name) return uses[name]() end,
    has = function(_, name) return rawget(_ENV, name) ~= nil end,
  })
end

return M
