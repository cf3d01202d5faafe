--- Structured loggers: entries { level, tags, vatId, message, data }.
local M = {}

local getmetatable, ipairs, pairs, select, tostring, type = getmetatable, ipairs, pairs, select, tostring, type

local LEVELS = { 'debug', 'log', 'warn', 'error' }

--- Makes a logger whose entries go to emit(entry).
---@param emit fun(entry: table)
---@param tags string[]|nil
---@param vatId string|nil
function M.make(emit, tags, vatId)
  local logger = {}
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

-- Renders a log datum for humans: a table shallowly, keys sorted, so that
-- `{ traceback = ... }` shows the traceback rather than `table: 0x...`.
local function show(v, depth)
  if type(v) ~= 'table' or getmetatable(v) ~= nil then return tostring(v) end
  if depth > 1 then return '{...}' end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local x = v[k]
    x = type(x) == 'string' and (x:find('\n') and '\n' .. x or ('%q'):format(x)) or show(x, depth + 1)
    parts[#parts + 1] = math.type(k) == 'integer' and x or (tostring(k) .. ' = ' .. x)
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- Formats an entry for humans: one line, plus the lines of any multi-line
--- datum (a traceback).
function M.format(entry)
  local parts = { '[' .. entry.level .. ']' }
  if entry.vatId then parts[#parts + 1] = entry.vatId end
  if entry.tags and #entry.tags > 0 then parts[#parts + 1] = '[' .. table.concat(entry.tags, ',') .. ']' end
  parts[#parts + 1] = entry.message
  local data = entry.data
  if data then
    for i = 1, data.n or #data do parts[#parts + 1] = show(data[i], 1) end
  end
  return table.concat(parts, ' ')
end

local RANK = { debug = 1, log = 2, warn = 3, error = 4, none = 5 }

--- The level below which the default logger drops entries: `$OCAP_LOG`
--- (`debug`, `log`, `warn`, `error` or `none`), else `log`.
function M.threshold()
  local want = os and os.getenv and os.getenv('OCAP_LOG')
  return RANK[want] and want or 'log'
end

--- The logger a kernel uses when it is given none: entries at or above
--- the threshold (`M.threshold()`, read when it is made) go to stderr.
---@return fun(entry: table)
function M.default()
  local min = RANK[M.threshold()]
  return function(entry)
    if (RANK[entry.level] or 2) >= min then io.stderr:write(M.format(entry), '\n') end
  end
end

return M
