-- The syrup target: the input is Syrup bytes for ocap.syrup.decode.
-- A clean refusal (`syrup: <what> at byte <n>`) is fine. It raises, which
-- fails the run, when the decoder raises anything else, when check() and
-- decode() disagree on whether the input is canonical, when a decoded value
-- does not encode again, or when encoding is not stable: the bytes of a
-- decoded value must decode and encode to the same bytes. An accepted input
-- whose structs hold only strings and no void values must encode back to
-- itself, byte for byte: the decoder takes canonical input only.
-- The module is the build's lib/ocap/syrup.so (ctest runs in the build
-- directory).
package.cpath = './lib/?.so;' .. package.cpath
local syrup = require 'ocap.syrup'

return function(input)
  local canonical = syrup.check(input)
  local ok, v = pcall(syrup.decode, input)
  if not ok then
    if type(v) ~= 'string' or not v:match('^syrup: .* at byte %d+$') then
      error('decode raised an unclean error: ' .. tostring(v))
    end
    -- The binding refuses more than the reader (non-string struct keys).
    if canonical and not v:match('dictionary key is not a string') then
      error('check accepted what decode refused: ' .. v)
    end
    return false
  end
  if not canonical then error('decode accepted what check refused') end
  local ok2, bytes = pcall(syrup.encode, v)
  if not ok2 then error('a decoded value does not encode: ' .. tostring(bytes)) end
  local again = syrup.encode(syrup.decode(bytes))
  if again ~= bytes then error('encoding is not stable') end
  -- Void struct values are left out of the Lua table, so only inputs
  -- without them must come back unchanged.
  if bytes ~= input and not input:find("<4'void>", 1, true) then
    error('an accepted input does not encode back to itself')
  end
  return true
end
