-- The smallcaps probe: decodes capdata with ocap.marshal as liveslots does,
-- and checks what it decoded. The input is `<slot> <slot>...\n<body>` as
-- the kernel stores capdata (without a newline it is all body, no slots).
-- spec/fuzz/dual.c runs it in a vat (the vat JSON decoder below marshal) and
-- in the host (lua-cjson) and compares the two answers.
--
-- It raises, which fails the run, when:
-- - decoding raises something other than an error message;
-- - the C codec (ocap.smallcaps, which vats and the `ocap` host have) and
--   marshal's Lua reference codec disagree on a body, in what they decode
--   or in how they encode it again;
-- - marshal's fast paths and its general path disagree on a body;
-- - a decoded value does not serialize, or serializing and decoding again
--   is not a fixed point (the value changed on the way).
local marshal = require 'ocap.marshal'
local pass = require 'ocap.pass'

local find, sub, gmatch, concat = string.find, string.sub, string.gmatch, table.concat

-- Stand-ins for what liveslots makes of slots: a remotable or a promise
-- that remembers its slot.
local slotOf = setmetatable({}, { __mode = 'k' })

local function slotToVal(slot, iface, style)
  local v = {}
  slotOf[v] = slot
  if style == 'promise' then return pass.registerPromise(v) end
  return pass.registerRemotable(v, iface)
end

local function valToSlot(v)
  return slotOf[v]
end

local function text(cd)
  return cd.body .. '\n' .. concat(cd.slots, ' ')
end

return function(input)
  local slots, body = {}, input
  local nl = find(input, '\n', 1, true)
  if nl then
    for s in gmatch(sub(input, 1, nl - 1), '[^ ]+') do slots[#slots + 1] = s end
    body = sub(input, nl + 1)
  end
  local m = marshal.makeMarshal(valToSlot, slotToVal)
  local ok, v = pcall(m.unserialize, { body = body, slots = slots })
  if not ok and type(v) ~= 'string' then error('unserialize raised a ' .. type(v)) end
  local ref = marshal.reference.makeMarshal(valToSlot, slotToVal)
  local rok, rv = pcall(ref.unserialize, { body = body, slots = slots })
  if rok ~= ok or (not ok and rv ~= v) then
    error(('the codec %s, the reference %s, on %q'):format(ok and 'decodes' or ('refuses: ' .. v),
      rok and 'decodes' or ('refuses: ' .. tostring(rv)), input))
  end
  if ok then
    local a, b = text(ref.serialize(v)), text(ref.serialize(rv))
    if a ~= b then error(('the codec and the reference decode %q as %q and %q'):format(input, a, b)) end
    local c = text(m.serialize(v))
    if c ~= a then error(('the codec and the reference encode %q as %q and %q'):format(input, c, a)) end
  end
  if #slots == 0 then
    -- Without slots the fast paths apply; the general path must agree.
    local gok, gv = pcall(marshal.unserializeData, { body = body, slots = {} })
    if gok ~= ok then
      error(('fast path %s, general path %s on %q'):format(ok and 'decodes' or ('refuses: ' .. v),
        gok and 'decodes' or ('refuses: ' .. tostring(gv)), body))
    end
    if ok and text(m.serialize(v)) ~= text(m.serialize(gv)) then
      error(('fast and general paths decode %q differently'):format(body))
    end
  end
  if not ok then return false, v end
  local sok, cd = pcall(m.serialize, v)
  if not sok then error(('decoded %q, which does not serialize: %s'):format(body, tostring(cd))) end
  local again = m.serialize(m.unserialize(cd))
  if text(again) ~= text(cd) then
    error(('not a fixed point: %q -> %q -> %q'):format(body, text(cd), text(again)))
  end
  return true, text(cd)
end
