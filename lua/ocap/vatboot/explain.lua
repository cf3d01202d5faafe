--- What an error about an absent endowment adds: which VatConfig.globals
--- entry would provide it. Loaded on a vat's first error (ocap.vatboot).
local M = {}

local type, rawget = type, rawget

-- The endowments a vat may request (VatConfig.globals), by the words Lua
-- uses when code calls or indexes one that is absent.
local MISSING = {
  ["global 'print'"] = 'print', ["global 'setTimeout'"] = 'setTimeout',
  ["global 'clearTimeout'"] = 'clearTimeout', ["global 'setInterval'"] = 'setInterval',
  ["global 'clearInterval'"] = 'clearInterval', ["global 'os'"] = 'os',
  ["field 'time'"] = 'os.time', ["field 'clock'"] = 'os.clock', ["field 'date'"] = 'os.date',
  ["field 'random'"] = 'math.random',
}

--- Adds to a Lua error about an absent endowment which VatConfig.globals
--- entry would provide it. Absent endowments stay nil to read, so code
--- may test for them; only the error of using one says more.
---@param env table the vat's globals
---@param message any
function M.explainMissing(env, message)
  if type(message) ~= 'string' then return message end
  local what = message:match('attempt to %a+ a nil value %(([^)]*)%)')
  local name = what and MISSING[what]
  if not name then return message end
  local lib, fn = name:match('^(%a+)%.(%a+)$')
  if lib then
    -- A field of that name is an endowment's only if that library lacks it.
    local t = rawget(env, lib)
    if t ~= nil and (type(t) ~= 'table' or rawget(t, fn) ~= nil) then return message end
  elseif rawget(env, name) ~= nil then
    return message
  end
  local add = name == 'os' and '"os.time", "os.clock" or "os.date"' or ('"%s"'):format(name)
  return ('%s: %s is an endowment this vat did not request; add %s to VatConfig.globals')
    :format(message, lib and (lib .. '.' .. fn) or name, add)
end

return M
