-- The weather example of the ocap-kernel guide, in Lua: a host service
-- backed by the host's own data, a system subcluster whose vat keeps the
-- service in baggage, and a report asked for by the host.
--
--   build/ocap run --db DIR host/examples/weather/host.lua
--
-- Run it twice with the same database: the second run restores the system
-- subcluster (no second bootstrap) and the vat still reaches the service.
local ocap = require 'ocap'

local here = (arg and arg[0] or ''):match('^(.*)/[^/]*$') or '.'

-- The host application's own data, which vats can only reach through the
-- service.
local hostApp = {
  temperatures = { London = 14, Paris = 17, Oslo = 3 },
  forecast = function(city, days)
    local out = {}
    for i = 1, days do out[i] = ({ 'sun', 'rain', 'clouds' })[(#city + i) % 3 + 1] end
    return out
  end,
}

-- 1. The kernel service.
local weatherService = ocap.makeDefaultExo('weatherService', {
  getTemperature = function(_, city)
    local t = hostApp.temperatures[city]
    if not t then error('unknown city ' .. tostring(city)) end
    return t
  end,
  getForecast = function(_, city, days) return hostApp.forecast(city, days) end,
})

-- 2. The kernel, with the service registered before the system subcluster starts.
local kernel = ocap.Kernel.make {
  services = { weatherService = weatherService },
  systemSubclusters = {
    {
      name = 'weather-system',
      config = {
        bootstrap = 'weatherVat',
        services = { 'weatherService', 'kernelFacet' },
        vats = {
          weatherVat = {
            sourceSpec = here .. '/weather-vat.lua',
            parameters = { defaultCity = 'London' },
          },
        },
      },
    },
  },
  logger = function(e)
    if e.level ~= 'debug' then print(('[%s] %s'):format(e.vatId or 'kernel', e.message)) end
  end,
}

-- 3. Ask the system subcluster's root for reports.
local rootKref = kernel:getSystemSubclusterRoot('weather-system')
print(kernel:queueMessage(rootKref, 'getWeatherReport', { 'Paris' }):await())
print(kernel:queueMessage(rootKref, 'getWeatherReport', {}):await())
local ok, err = pcall(ocap.await, kernel:queueMessage(rootKref, 'getWeatherReport', { 'Atlantis' }))
print(ok and 'unexpected success' or ('Atlantis: ' .. tostring(err.message)))
print('vats in the kernel, as the weather vat sees them: '
  .. kernel:queueMessage(rootKref, 'kernelStatus', {}):await())
kernel:stop()
