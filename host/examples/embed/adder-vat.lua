-- A vat that asks the host's C service `calc` to add numbers.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject()
  local calc
  return ocap.makeDefaultExo('adder', {
    bootstrap = function(_, _vats, services) calc = services.calc end,
    sum = function(_, a, b) return { total = E(calc).add(a, b):await(), by = 'C' } end,
    later = function(_, n) return E(calc).slowDouble(n):await() end,
    broken = function(_) return E(calc).fail():await() end,
  })
end

return M
