-- A vat that makes the OCapN values Lua has no type for (symbols, byte
-- arrays, integers beyond 64 bits, tagged values) and errors, sends them
-- to another object's echo, and checks what comes back.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

local function samples()
  return {
    symbol = ocap.symbol('hello'),
    bytes = ocap.bytes('\0\1\254\255'),
    bigint = ocap.bigint('-123456789012345678901234'),
    tagged = ocap.makeTagged('copySet',
      ocap.array(ocap.symbol('a'), ocap.bytes('b'), ocap.bigint('99999999999999999999'))),
    error = ocap.makeError('boom'), -- OCapN errors carry no name: it is 'Error' after a trip
  }
end

-- Whether back is the value v was, after a trip.
local function same(v, back)
  local style = ocap.passStyleOf(v)
  if style ~= ocap.passStyleOf(back) then return false end
  if style == 'tagged' then
    if v.tag ~= back.tag then return false end
    for i = 1, 3 do
      if v.payload[i] ~= back.payload[i] then return false end
    end
    return true
  end
  if style == 'error' then return v.message == back.message and v.name == back.name end
  return v == back -- symbols, byte arrays and big integers are interned
end

function M.buildRootObject()
  return ocap.makeDefaultExo('values', {
    samples = function() return samples() end,
    -- Sends each sample to target's echo; for each, the pass style of
    -- what came back and whether it is the same value.
    roundTrip = function(_, target)
      local report = {}
      for name, v in pairs(samples()) do
        local ok, back = pcall(ocap.await, E(target).echo(v))
        report[name] = ok and { style = ocap.passStyleOf(back), same = same(v, back) }
          or { failed = tostring(back) }
      end
      return report
    end,
    -- Whether v is the sample of that name.
    check = function(_, name, v) return same(samples()[name], v) end,
  })
end

return M
