-- Bob answers greetings and counts them.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(vatPowers, parameters)
  local log = vatPowers.logger:subLogger { tags = { 'bob' } }
  local greeting = parameters.greeting or 'Hello'
  local count = 0
  return ocap.makeDefaultExo('bob', {
    hello = function(_, from)
      count = count + 1
      log:log(('greeting %s (#%d)'):format(from, count))
      return ('%s, %s! This is Bob.'):format(greeting, from)
    end,
    ping = function(_, i) return i end,
  })
end

return M
