-- A vat that spends kernel-side resources on demand: big messages, many
-- timers, log entries, and records that are costly to decode.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_, parameters, baggage)
  if parameters.failBuildIfMarked and baggage:has('marked') then
    error('baggage is marked: ' .. tostring(baggage:get('marked')))
  end
  local peers = {}
  return ocap.makeDefaultExo('budget', {
    bootstrap = function(_, vats) peers = vats end,
    peer = function(_, name) return peers[name] end,
    ping = function(_, i) return i end,
    put = function(_, k, v)
      if baggage:has(k) then baggage:set(k, v) else baggage:init(k, v) end
      return v
    end,
    get = function(_, k) return baggage:has(k) and baggage:get(k) or nil end,
    spin = function(_, n)
      local x = 0
      for i = 1, n do x = x + i end
      return x
    end,
  })
end

return M
