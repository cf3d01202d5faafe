--- Structured loggers: entries { level, tags, vatId, message, data }.
--- Every vat loads this module; what only the host needs (checking a
--- vat's entries, formatting, the default logger) is in ocap.logview.
local M = {}

local ipairs, select, tostring, type = ipairs, select, tostring, type

local LEVELS = { 'debug', 'log', 'warn', 'error' }

--- Makes a logger whose entries go to emit(entry).
---@param emit fun(entry: table)
---@param tags string[]|nil
---@param vatId string|nil
---@param into table|nil the table to make the logger of (a new one by default)
function M.make(emit, tags, vatId, into)
  local logger = into or {}
  tags = tags or {}
  for _, level in ipairs(LEVELS) do
    logger[level] = function(self, ...)
      if self ~= logger then error(('use logger:%s(...), not logger.%s(...)'):format(level, level), 2) end
      local n = select('#', ...)
      local message = n > 0 and (...) or ''
      if type(message) ~= 'string' then message = tostring(message) end
      local data
      if n > 1 then data = table.pack(select(2, ...)) end
      emit({ level = level, tags = tags, vatId = vatId, message = message, data = data })
    end
  end
  function logger.subLogger(_, opts)
    local more = {}
    for i = 1, #tags do more[#more + 1] = tags[i] end
    local extra = opts and opts.tags or {}
    for i = 1, #extra do more[#more + 1] = tostring(extra[i]) end
    return M.make(emit, more, vatId)
  end
  return logger
end

return M
