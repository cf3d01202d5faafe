--- The endowments a vat may request (VatConfig.globals): print and the
--- timers. ocap.vatboot loads this only for a vat that requests one, when
--- the kernel installs them at boot.
local promise = require 'ocap.promise'
local liveslots = require 'ocap.liveslots'

local M = {}

local type, error, tostring, tonumber, select = type, error, tostring, tonumber, select
local pack, unpack, concat = table.pack, table.unpack, table.concat
local max = math.max

--- The endowments of one vat.
---@param syscall table the vat's syscalls (timerStart and timerStop when it has timers)
---@param ls table the vat's liveslots instance, which gets onTimer
---@param log function(level, message) the runtime's own log
---@param explain function(message) -> message, for errors vat code raises
---@param makeLogger function() -> the vat's logger
---@return table
function M.make(syscall, ls, log, explain, makeLogger)
  local endow = {}
  local vatLogger
  function endow.print(...)
    local n = select('#', ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    vatLogger = vatLogger or makeLogger()
    vatLogger:log(concat(parts, '\t'))
  end
  local timers, nextTimer = {}, 1
  local function startTimer(fn, ms, repeating, ...)
    if type(fn) ~= 'function' then error('setTimeout: callback must be a function', 3) end
    ms = tonumber(ms) or 0
    local id = nextTimer
    nextTimer = nextTimer + 1
    timers[id] = { fn = fn, args = pack(...), repeating = repeating }
    syscall.timerStart(id, ms, repeating and max(ms, 1) or 0)
    return id
  end
  local function clearTimer(id)
    if timers[id] then
      timers[id] = nil
      syscall.timerStop(id)
    end
  end
  function endow.setTimeout(fn, ms, ...) return startTimer(fn, ms, false, ...) end
  function endow.setInterval(fn, ms, ...) return startTimer(fn, ms, true, ...) end
  endow.clearTimeout = clearTimer
  endow.clearInterval = clearTimer

  -- Liveslots' dispatch is the vat's, so that a delivery goes through no
  -- extra call; it hands timer deliveries to this.
  function ls.onTimer(id)
    local t = timers[id]
    if not t then return end
    if not t.repeating then timers[id] = nil end
    local p = promise.spawn(t.fn, unpack(t.args, 1, t.args.n))
    promise.onSettle(p, function(ok, err)
      if not ok then
        log('error', 'timer callback failed: ' .. tostring(liveslots.normalizeError(explain(err))))
      end
    end)
    promise.drain()
    ls.saveCounters()
  end

  return endow
end

return M
