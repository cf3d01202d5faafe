-- The weather vat: a system vat that keeps the host's weather service in
-- baggage, so it keeps working after the host restarts.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(vatPowers, parameters, baggage)
  local log = vatPowers.logger:subLogger { tags = { 'weather' } }
  local defaultCity = parameters.defaultCity or 'London'
  local weatherService = baggage:has('weatherService') and baggage:get('weatherService') or nil

  return ocap.makeDefaultExo('root', {
    bootstrap = function(_, _vats, services)
      weatherService = services.weatherService
      baggage:init('weatherService', weatherService)
      baggage:init('kernelFacet', services.kernelFacet)
      log:log('bootstrapped with the weather service')
    end,
    getWeatherReport = function(_, city)
      local target = city or defaultCity
      local temp = E(weatherService).getTemperature(target):await()
      local forecast = E(weatherService).getForecast(target, 3):await()
      return ('%s: %dC. Next 3 days: %s'):format(target, temp, table.concat(forecast, ', '))
    end,
    kernelStatus = function()
      local status = E(baggage:get('kernelFacet')).getStatus():await()
      return #status.vats
    end,
  })
end

return M
