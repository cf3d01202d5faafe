--- The host's view of log entries: what it accepts from a vat, how it
--- prints an entry, and the default logger. Vats never load it (their
--- side is ocap.logger), so it costs their heaps nothing.
local M = {}

local getmetatable, ipairs, pairs, tostring, type = getmetatable, ipairs, pairs, tostring, type
local sgsub, sbyte, sformat = string.gsub, string.byte, string.format
local mtointeger, mmin = math.tointeger, math.min

--- How many tags and data fields of a vat's entry reach the host; the
--- kernel has already bounded the entry's size and shape (lsyscall.c).
M.MAX_TAGS = 16
M.MAX_FIELDS = 64

local ESCAPES = { ['\n'] = '\\n', ['\r'] = '\\r' }
local function escapeChar(c) return ESCAPES[c] or sformat('\\x%02x', sbyte(c)) end

--- Escapes control characters (newlines, carriage returns, escape
--- sequences...; tabs are kept), so that a string can never make a log
--- line look like more than one, or like something else on a terminal.
---@param s string
---@return string
function M.escape(s)
  return (sgsub(s, '[%z\1-\8\10-\31\127]', escapeChar))
end
local escape = M.escape

-- A multi-line datum (a traceback) keeps its lines, each indented, so
-- that none can pass for an entry of its own: entries start at column 0.
local function indentLines(s)
  s = sgsub(s, '[%z\1-\8\11-\31\127]', escapeChar)
  return (sgsub(s, '\n', '\n    '))
end

--- The entry of a vat's log call as the host may trust it: a string
--- message and string tags with control characters escaped, at most
--- MAX_TAGS tags, and a data sequence of at most MAX_FIELDS values whose
--- `n` is its real length. `fields` is the decoded payload, whatever the
--- vat put in it.
---@param vatId string
---@param level string
---@param fields any
function M.fromVat(vatId, level, fields)
  if type(fields) ~= 'table' then fields = { message = fields } end
  local message = fields.message
  if message == nil then
    message = ''
  elseif type(message) == 'table' then
    message = '(a table, not a message)'
  elseif type(message) ~= 'string' then
    message = tostring(message)
  end
  local tags = {}
  if type(fields.tags) == 'table' then
    for i = 1, M.MAX_TAGS do
      local t = fields.tags[i]
      if t == nil then break end
      tags[i] = escape(tostring(t))
    end
  end
  local data
  if type(fields.data) == 'table' then
    local d = fields.data
    local n = mtointeger(d.n)
    if not n or n < 0 or n > M.MAX_FIELDS then n = mmin(#d, M.MAX_FIELDS) end
    data = { n = n }
    for i = 1, n do data[i] = d[i] end
  end
  return { level = level, tags = tags, vatId = vatId, message = escape(message), data = data }
end

-- Renders a log datum for humans: a table shallowly, keys sorted, so that
-- `{ traceback = ... }` shows the traceback rather than `table: 0x...`.
local function show(v, depth)
  if type(v) ~= 'table' or getmetatable(v) ~= nil then return escape(tostring(v)) end
  if depth > 1 then return '{...}' end
  local keys = {}
  for k in pairs(v) do
    keys[#keys + 1] = k
    if #keys > M.MAX_FIELDS then break end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local x = v[k]
    x = type(x) == 'string' and (x:find('\n') and '\n    ' .. indentLines(x) or escape(('%q'):format(x)))
      or show(x, depth + 1)
    parts[#parts + 1] = math.type(k) == 'integer' and x or (escape(tostring(k)) .. ' = ' .. x)
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- Formats an entry for humans: one line, plus the indented lines of any
--- multi-line datum (a traceback). Everything from the entry is escaped,
--- so no part of it can start a line that looks like another entry, and
--- only the first MAX_FIELDS data values are shown.
function M.format(entry)
  local parts = { '[' .. escape(tostring(entry.level)) .. ']' }
  if entry.vatId then parts[#parts + 1] = escape(tostring(entry.vatId)) end
  local tags = entry.tags
  if type(tags) == 'table' and #tags > 0 then
    local shown = {}
    for i = 1, mmin(#tags, M.MAX_TAGS) do shown[i] = escape(tostring(tags[i])) end
    parts[#parts + 1] = '[' .. table.concat(shown, ',') .. ']'
  end
  parts[#parts + 1] = escape(tostring(entry.message))
  local data = entry.data
  if type(data) == 'table' then
    local n = mtointeger(data.n) or #data
    for i = 1, mmin(n, M.MAX_FIELDS) do parts[#parts + 1] = show(data[i], 1) end
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
