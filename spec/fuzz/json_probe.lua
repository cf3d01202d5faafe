-- The JSON probe: decodes its input with `cjson` configured as
-- ocap.marshal configures it, and returns a canonical text of the value.
-- spec/fuzz/dual.c runs it in a vat (the vat JSON decoder, core/ljson.c) and
-- in the host (lua-cjson) and compares the two answers.
local cjson = require('cjson').new()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(1000)

local MAX_SAFE = 9007199254740992 -- 2^53

local dump

-- Numbers are written so that the integer 1 and the float 1.0 look alike,
-- since lua-cjson gives floats where the vat decoder gives integers, and
-- ocap.marshal makes both integers.
local function number(v)
  if math.type(v) == 'integer' then return string.format('%d', v) end
  if v ~= v then return 'nan' end
  local i = math.tointeger(v)
  if i and i <= MAX_SAFE and i >= -MAX_SAFE then return string.format('%d', i) end
  return string.format('%.17g', v)
end

local function key(k)
  if type(k) == 'number' then return '#' .. number(k) end
  return string.format('%q', k)
end

dump = function(v, out)
  local t = type(v)
  if t == 'table' then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    local texts = {}
    for i, k in ipairs(keys) do texts[i] = { key(k), k } end
    table.sort(texts, function(a, b) return a[1] < b[1] end)
    out[#out + 1] = '{'
    for _, kt in ipairs(texts) do
      out[#out + 1] = kt[1]
      out[#out + 1] = '='
      dump(v[kt[2]], out)
      out[#out + 1] = ','
    end
    out[#out + 1] = '}'
  elseif t == 'number' then
    out[#out + 1] = number(v)
  elseif t == 'string' then
    out[#out + 1] = string.format('%q', v)
  elseif t == 'boolean' then
    out[#out + 1] = tostring(v)
  elseif v == cjson.null then
    out[#out + 1] = 'null'
  else
    error('the decoder made a ' .. t)
  end
end

return function(text)
  local ok, v = pcall(cjson.decode, text)
  if not ok then return false, tostring(v) end
  local out = {}
  dump(v, out)
  return true, table.concat(out)
end
