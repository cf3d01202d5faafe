-- A vat that takes its logger at start and first uses it later: the
-- logger fills itself then (core/lruntime.c), and until then vat code
-- cannot reach or replace what fills it.
local ocap = require 'ocap'

local MOD = {}

function MOD.buildRootObject(vatPowers)
  local log = vatPowers.logger
  -- What vat code can see and do of the logger before its first use.
  local function untouched()
    local mt = getmetatable(log)
    local replaced = pcall(setmetatable, log, { __index = function() return print end })
    local written = pcall(rawset, log, 'log', function() end)
    return { type(mt), mt == false, replaced, written, rawget(log, 'log') == nil, next(log) == nil }
  end
  local before = untouched()
  return ocap.makeDefaultExo('loggerHolder', {
    before = function() return before end,
    -- Its first use, a method call.
    use = function(_, message)
      log:log(message)
      log:subLogger({ tags = { 'sub' } }):warn(message)
      return { getmetatable(log) == nil, type(rawget(log, 'log')), log == vatPowers.logger,
        pcall(log.log, 'not a method call') }
    end,
    -- Its first use, a write: the vat's own method stays the logger's,
    -- as it would on a logger made whole at its first read.
    assign = function(_, message)
      log.log = function(_, m) return 'mine ' .. m end
      log:warn(message)
      return { tostring((log:log(message))), type(log.debug) }
    end,
    -- Its first use, pairs: it lists the logger's methods.
    keys = function()
      local keys = {}
      for k, v in pairs(log) do keys[#keys + 1] = k .. ':' .. type(v) end
      table.sort(keys)
      return keys
    end,
  })
end

return MOD
