-- A new version of upgrade_v1.lua that cannot take over: it first leaves
-- traces (baggage and durable state written, a store made, a message
-- sent, a timer armed when it may), then fails as parameters.fail says.
-- None of it may survive the failed upgrade.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, parameters, baggage)
  baggage:set('count', -1)
  baggage:init('junk', ocap.makeScalarMapStore('junk'))
  ocap.prepareExo(baggage, 'clock', { tick = function() return 0 end })
  ocap.prepareExo(baggage, 'newSingleton', { hi = function() return 'hi' end })
  if baggage:has('peer') then ocap.E.sendOnly(baggage:get('peer')).increment() end
  if setTimeout then setTimeout(function() baggage:set('count', -2) end, 0) end -- luacheck: ignore 113
  local fail = parameters.fail
  if fail ~= 'kind' then
    ocap.prepareExoClass(baggage, 'Account', nil, function() return {} end, {})
  end
  if fail == 'throw' then error('v3 cannot start') end
  if fail == 'pending' then ocap.makePromiseKit().promise:await() end
  if fail == 'loop' then while true do end end
  if fail == 'memory' then
    local t = {}
    for i = 1, math.huge do t[i] = ('x'):rep(64) .. i end
    return t
  end
  if fail == 'noroot' then return {} end
  return ocap.makeDefaultExo('root', { version = function() return 3 end })
end

return M
