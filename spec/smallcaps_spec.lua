-- The C smallcaps codec (core/lsmallcaps.c) against the Lua one it
-- replaces on the hot path (ocap.marshal's reference): the same bodies and
-- slots for many random values, the same values back for their bodies, and
-- the same errors for broken bodies. Random values use a fixed seed, so a
-- failure names a case that can be replayed.
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local testing = require 'ocap.testing'
local support = require 'support'

local codec = pass.codec
local ref = marshal.reference

-- Objects and promises that remember their slot, for both codecs.
local slotOf, objOf = setmetatable({}, { __mode = 'k' }), {}
local function far(iface)
  local o = pass.registerRemotable({}, iface)
  slotOf[o] = 'o-' .. (#objOf + 1)
  objOf[#objOf + 1] = o
  objOf[slotOf[o]] = o
  return o
end
local function promise()
  local p = pass.registerPromise({})
  slotOf[p] = 'p-' .. (#objOf + 1)
  objOf[#objOf + 1] = p
  objOf[slotOf[p]] = p
  return p
end
local function valToSlot(v) return slotOf[v] end
local calls
local function slotToVal(slot, iface, style)
  calls[#calls + 1] = table.concat({ slot, tostring(iface), style }, ' ')
  return objOf[slot] or (style == 'promise' and promise() or far(iface))
end

-- Random values ---------------------------------------------------------------

local R = math.random
local SPECIAL = '!"#$%&\'()*+,-'
local PIECES = { 'a', 'z', ' ', '0', '9', '.', '/', '\\', '"', '\n', '\t', '\0', '\31', '\127',
  '\u{E9}', '\u{E000}', '\u{FFFF}', '\u{1F600}', '\u{10FFFF}', '\255' }

local function randString()
  local n = R(0, 6)
  local parts = {}
  if R(4) == 1 then
    local i = R(#SPECIAL)
    parts[1] = SPECIAL:sub(i, i)
  end
  for _ = 1, n do parts[#parts + 1] = PIECES[R(#PIECES)] end
  return table.concat(parts)
end

local function randKey()
  local k = R(8)
  if k == 1 then return tostring(R(0, 20)) end
  if k == 2 then return ({ '4294967294', '4294967295', '01', '-1', '10', '2' })[R(6)] end
  if k == 3 then return randString() end
  return ({ 'a', 'b', 'n', 'name', 'x_y', 'Z', '' })[R(7)]
end

local function randFloat()
  local k = R(8)
  if k == 1 then return ({ 0 / 0, math.huge, -math.huge, -0.0, 5e-324, 1.7976931348623157e308 })[R(6)] end
  if k == 2 then return 2.0 ^ R(-1074, 1023) * (R(2) == 1 and 1 or -1) end
  if k == 3 then return R(-1000, 1000) / 8 end
  if k == 4 then return string.unpack('d', string.pack('i8', R(math.mininteger, math.maxinteger))) end
  if k == 5 then return (R() - 0.5) * 10 ^ R(-30, 30) end
  return R() * 10 ^ R(-8, 22)
end

local function randInteger()
  local k = R(5)
  if k == 1 then return R(math.mininteger, math.maxinteger) end
  if k == 2 then return 9007199254740992 + R(-2, 2) end
  if k == 3 then return -9007199254740992 + R(-2, 2) end
  return R(-1000, 1000)
end

local randValue
local function randContainer(depth)
  local k = R(7)
  if k == 1 or k == 2 then
    local t = {}
    for i = 1, R(0, 4) do t[i] = randValue(depth + 1) end
    return R(3) == 1 and pass.array(table.unpack(t)) or t
  elseif k == 3 then
    return table.pack(randValue(depth + 1), nil, randValue(depth + 1))
  elseif k == 4 then
    return pass.makeError(randString(), R(2) == 1 and 'TypeError' or randString())
  end
  local t = {}
  for _ = 1, R(0, 5) do t[randKey()] = randValue(depth + 1) end
  return t
end

randValue = function(depth)
  local k = R(depth > 4 and 6 or 9)
  if k == 1 then return randString() end
  if k == 2 then return randInteger() end
  if k == 3 then return randFloat() end
  if k == 4 then return ({ true, false, pass.null })[R(3)] end
  if k == 5 then
    local r = R(4)
    if r == 1 then return nil end
    if r == 2 then return promise() end
    return #objOf > 0 and R(2) == 1 and objOf[R(#objOf)] or far(R(3) == 1 and randString() or 'Alleged: x')
  end
  if k == 6 then return R(0, 3) end
  local t = randContainer(depth)
  if R(6) == 1 then pass.harden(t) end
  return t
end

-- Comparing values --------------------------------------------------------------

local function same(a, b, seen)
  if a ~= a then return b ~= b end
  if type(a) ~= type(b) then return false end
  if type(a) == 'number' then return a == b and math.type(a) == math.type(b) end
  if type(a) ~= 'table' or rawequal(a, b) then return rawequal(a, b) or a == b end
  seen = seen or {}
  if seen[a] then return seen[a] == b end
  seen[a] = b
  if getmetatable(a) ~= getmetatable(b) then return false end
  if pass.isError(a) then return a.message == b.message and a.name == b.name and a.code == b.code end
  for k, v in next, a do
    if not same(v, rawget(b, k), seen) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end

local function attempt(f, ...)
  calls = {}
  local r = table.pack(pcall(f, ...))
  -- The Lua decoder meets record members in hash order, the C one in text
  -- order: the same calls, maybe in another order.
  table.sort(calls)
  r.calls = table.concat(calls, ';')
  return r
end

describe('the C smallcaps codec', function()
  it('is the one ocap.marshal uses here', function()
    assert.is_table(codec)
    assert.equal('#[1,"x"]', codec.encode({ 1, 'x' }).body)
  end)

  it('reads a body that is only a small integer as the Lua codec does', function()
    for _, body in ipairs({ '#0', '#-0', '#7', '#-42', '#123456789012345', '#-123456789012345',
      '#1234567890123456', '#9007199254740993', '#007', '#-', '#1.0', '#1e3', '#12a' }) do
      local l = table.pack(pcall(ref.unserialize, { body = body, slots = {} }))
      local ok, v = codec.decode(body)
      if ok then
        assert.is_true(l[1], body)
        assert.equal(l[2], v, body)
        assert.equal(math.type(l[2]), math.type(v), body)
      end
    end
    assert.same({ true, 7 }, { codec.decode('#7') })
    assert.same({ true, -42 }, { codec.decode('#-42') })
    assert.same({ false }, { codec.decode('#007') })
  end)

  it('encodes a call from arguments as they come, nils and count included', function()
    assert.equal('#["m",[]]', (codec.encodeCallArgs('m', nil)))
    assert.equal('#["m",[1,"x",true]]', (codec.encodeCallArgs('m', nil, 1, 'x', true)))
    for _, args in ipairs({ table.pack(1, nil), table.pack(nil), table.pack(nil, 2), table.pack({ 1 }, 'y') }) do
      assert.equal(codec.encodeCallParts('m', args, valToSlot),
        (codec.encodeCallArgs('m', valToSlot, table.unpack(args, 1, args.n))))
    end
    assert.is_nil(codec.encodeCallArgs(nil, valToSlot, 1))
  end)

  it('encodes random values as the Lua codec does, and decodes them back alike', function()
    math.randomseed(20261201)
    local cm = marshal.makeMarshal(valToSlot, slotToVal)
    local lm = ref.makeMarshal(valToSlot, slotToVal)
    local taken, decoded, calledAsValues = 0, 0, 0
    for i = 1, 3000 do
      local v = randValue(0)
      local lok, lcd = pcall(lm.serialize, v)
      local cok, ccd = pcall(cm.serialize, v)
      assert.equal(lok, cok, 'case ' .. i)
      if lok then
        assert.equal(lcd.body, ccd.body, 'case ' .. i)
        assert.same(lcd.slots, ccd.slots, 'case ' .. i)
        local t = codec.encode(v, valToSlot)
        if t then taken = taken + 1 end
        -- The two-value form liveslots uses: the same body, and the same
        -- slots, nil for none.
        local body, slots = codec.encodeParts(v, valToSlot)
        assert.equal(t and t.body, body, 'case ' .. i)
        assert.same(t and t.slots[1] and t.slots or nil, slots, 'case ' .. i)
        local l = attempt(lm.unserialize, lcd)
        local c = attempt(cm.unserialize, lcd)
        assert.is_true(l[1], lcd.body)
        assert.is_true(c[1], lcd.body)
        assert.is_true(same(l[2], c[2]), lcd.body)
        assert.equal(l.calls, c.calls, lcd.body)
        if codec.decode(lcd.body, lcd.slots, slotToVal) then decoded = decoded + 1 end
      else
        assert.equal(lcd, ccd, 'case ' .. i)
      end
      local args = table.pack(v, randValue(1))
      lok, lcd = pcall(lm.serializeCall, 'method', args)
      cok, ccd = pcall(cm.serializeCall, 'method', args)
      assert.equal(lok, cok, 'call ' .. i)
      if lok then assert.equal(lcd.body, ccd.body, 'call ' .. i) end
      if lok then
        -- decodeCall answers the method and the arguments of a call body
        -- as values, those decode finds; it leaves other shapes (args
        -- that are a record, when a nil made args.n a field).
        local whole = attempt(codec.decode, lcd.body, lcd.slots, slotToVal)
        local parts = attempt(codec.decodeCall, lcd.body, lcd.slots, slotToVal)
        assert.is_true(whole[1] and parts[1], lcd.body)
        if parts[2] then
          assert.is_true(whole[2], lcd.body)
          local methargs = whole[3]
          assert.equal(methargs[1], parts[3], lcd.body)
          local n = parts.n - 3
          assert.equal(methargs[2].n or #methargs[2], n, lcd.body)
          for j = 1, n do assert.is_true(same(methargs[2][j], parts[3 + j]), lcd.body) end
          calledAsValues = calledAsValues + 1
        end
      end
      local t = codec.encodeCall('method', args, valToSlot)
      local body, slots = codec.encodeCallParts('method', args, valToSlot)
      assert.equal(t and t.body, body, 'call ' .. i)
      assert.same(t and t.slots[1] and t.slots or nil, slots, 'call ' .. i)
      -- The arguments as they come, as table.pack gathers them.
      local abody, aslots = codec.encodeCallArgs('method', valToSlot, table.unpack(args, 1, args.n))
      assert.equal(body, abody, 'call ' .. i)
      assert.same(slots, aslots, 'call ' .. i)
    end
    -- The comparison is worth something only if the C codec did the work.
    assert.is_true(taken > 2500, 'encoded by C: ' .. taken)
    assert.is_true(decoded > 2500, 'decoded by C: ' .. decoded)
    assert.is_true(calledAsValues > 2500, 'calls decoded as values: ' .. calledAsValues)
  end)

  it('reads a call of plain arguments in one pass as the Lua codec does', function()
    -- decodeCall reads [method, [args...]] without its scan when the
    -- arguments are plain strings, short integers and booleans written
    -- as the encoder writes them; these bodies are near that form.
    local many = {}
    for i = 1, 65 do many[i] = tostring(i) end
    local bodies = { '#["m",[]]', '#["m",[1,-2,0,"x","",true,false]]', '#["",[7]]',
      '#["m",[123456789012345,-123456789012345]]', '#["m",[1234567890123456]]',
      '#["m",[12345678901234567890123]]', '#["m",[-0]]', '#["m",[007]]', '#["m",[00]]',
      '#["m",[1.5]]', '#["m",[1e3]]', '#["m",[1E3]]', '#["m",[-]]', '#["m",[--1]]',
      '#["m",["#undefined"]]', '#["m",["!x"]]', '#["m",["-5"]]', '#["m",["+5"]]',
      '#["m",["a\\"b"]]', '#["m",["a\\nb"]]', '#["m",["\1"]]', '#["m",["\127é"]]',
      '#["!m",[1]]', '#["#undefined",[1]]', '#[ "m",[1]]', '#["m", [1]]', '#["m",[1] ]',
      '#["m",[1 ,2]]', '#["m",[1,]]', '#["m",[,1]]', '#["m",[1]]x', '#["m",[1]', '#["m",[1]]]',
      '#["m"]', '#["m",[tru]]', '#["m",[truex]]', '#["m",[true1]]', '#["m",[falsey]]',
      '#["m",[null]]', '#["m",[[1]]]', '#["m",[{}]]', '#["m",["$0"]]', '#["m",1]', '#[1,[1]]',
      '#["m",["x"1]]', '#["m",["unterminated]]', '#"m"', '#[]', '#', '',
      '#["m",[' .. table.concat(many, ',', 1, 64) .. ']]', '#["m",[' .. table.concat(many, ',') .. ']]' }
    local read = 0
    for _, body in ipairs(bodies) do
      local l = table.pack(pcall(ref.unserialize, { body = body, slots = {} }))
      local c = table.pack(codec.decodeCall(body))
      if c[1] then
        read = read + 1
        assert.is_true(l[1], body)
        local methargs = l[2]
        assert.equal(methargs[1], c[2], body)
        assert.equal(methargs[2].n or #methargs[2], c.n - 2, body)
        for j = 1, c.n - 2 do
          assert.is_true(same(methargs[2][j], c[2 + j]), body)
        end
      end
    end
    assert.is_true(read >= 20, 'calls read: ' .. read)
  end)

  it('gives the Lua codec\'s value or error for broken bodies', function()
    math.randomseed(7)
    local cm = marshal.makeMarshal(valToSlot, slotToVal)
    local lm = ref.makeMarshal(valToSlot, slotToVal)
    local INSERTS = { '"', '\\', '[', ']', '{', '}', ',', ':', '!', '#', '$', '&', '+', '-', "'", '%',
      '0', '9', '.', 'e', ' ', '\\u0000', '\\ud800', '"$0"', '"&0"', '"$0.y"', '"#undefined"', '{}',
      '"!a":1', '"#error":"x"', '{ }' }
    for _ = 1, 3000 do
      local ok, cd = pcall(lm.serialize, randValue(0))
      local b = ok and cd.body or '#[]'
      for _ = 1, R(1, 3) do
        local at = R(2, #b + 1)
        local op = R(3)
        if op == 1 then
          b = b:sub(1, at - 1) .. INSERTS[R(#INSERTS)] .. b:sub(at)
        elseif op == 2 then
          b = b:sub(1, at - 1) .. b:sub(at + 1)
        else
          b = b:sub(1, at - 1) .. INSERTS[R(#INSERTS)] .. b:sub(at + 1)
        end
      end
      local slots = { 'o-1', 'p-2', 'o-3' }
      local l = attempt(lm.unserialize, { body = b, slots = slots })
      local c = attempt(cm.unserialize, { body = b, slots = slots })
      assert.equal(l[1], c[1], b)
      if l[1] then
        assert.is_true(same(l[2], c[2]), b)
      else
        assert.equal(l[2], c[2], b)
      end
    end
  end)

  it('leaves nesting beyond 1000 levels to the Lua error, without a C stack overflow', function()
    local ok, err = pcall(marshal.unserializeData, { body = '#' .. ('['):rep(200000) .. (']'):rep(200000) })
    assert.is_false(ok)
    assert.matches('invalid capdata body', err, 1, true)
    local t = {}
    local cur = t
    for _ = 1, 100000 do
      cur[1] = {}
      cur = cur[1]
    end
    ok, err = pcall(marshal.serializeData, t)
    assert.is_false(ok)
    assert.matches('cannot pass structure nested deeper than 1000 levels', err, 1, true)
    assert.is_nil(codec.encode(t))
  end)

  it('decodes the error records it encodes, and leaves other forms to the Lua codec', function()
    local body = codec.encode(pass.makeError('[KERNEL:OBJECT_REVOKED] gone', 'Error')).body
    local ok, e = codec.decode(body)
    assert.is_true(ok)
    assert.is_true(pass.isError(e))
    assert.equal('OBJECT_REVOKED', e.code)
    assert.equal('#x', select(2, codec.decode('#{"#error":"!#x","name":"RangeError"}')).message)
    -- Extra fields (errorId, as @endo/marshal may write) and other orders
    -- are the Lua codec's; it reads them the same way.
    for _, b in ipairs({ '#{"#error":"x","name":"E","errorId":"error:1"}', '#{"name":"E","#error":"x"}' }) do
      assert.is_false(codec.decode(b))
      e = marshal.unserializeData({ body = b })
      assert.equal('x', e.message)
      assert.equal('E', e.name)
    end
  end)

  it('leaves symbols, byte arrays, big integers and tagged values to the Lua codec', function()
    -- They are rare, and the hot path stays as it was; ocap.marshal gives
    -- the Lua codec's bodies (spec/marshal_spec.lua checks them).
    local cases = {
      { pass.symbol('foo'), '#"%foo"' },
      { pass.bytes('\222\173'), '#"*dead"' },
      { pass.bigint('-123456789012345678901234'), '#"-123456789012345678901234"' },
      { pass.makeTagged('t', { 1 }), '#{"#tag":"t","payload":[1]}' },
      { { pass.symbol('a'), 1 }, '#["%a",1]' },
    }
    for _, case in ipairs(cases) do
      assert.is_nil(codec.encode(case[1]))
      assert.equal(case[2], marshal.serializeData(case[1]).body)
      assert.equal(case[2], ref.serializeData(case[1]).body)
      assert.is_false(codec.decode(case[2]))
      assert.equal(case[2], marshal.serializeData(marshal.unserializeData({ body = case[2] })).body)
    end
  end)

  it('leaves records of more than 100,000 keys to the Lua codec', function()
    local rec = {}
    for i = 1, 100001 do rec['k' .. i] = i end
    assert.is_nil(codec.encode(rec))
    rec.k1 = nil
    assert.is_table(codec.encode(rec))
  end)

  it('reaches slots only through the slotToVal it is given', function()
    assert.is_false(codec.decode('#"$0.Alleged: x"', { 'o-1' }, nil))
    assert.is_false(codec.decode('#"&0"', {}, slotToVal))
    assert.is_nil(codec.encode(far('Alleged: y'), nil))
  end)
end)

describe('the Lua codec', function()
  it('is loaded only when the C codec leaves something to it', function()
    -- A fresh Lua state (this one has loaded it for the comparisons above).
    local script = [[
      local marshal = require 'ocap.marshal'
      local pass = require 'ocap.pass'
      local m = marshal.makeMarshal(function() return 'o-1' end, function() return {} end)
      local far = pass.registerRemotable({}, 'Alleged: x')
      for _, v in ipairs({ 1, 'x', { a = { 1.5, far } }, pass.makeError('boom'), pass.array() }) do
        m.unserialize(m.serialize(v))
      end
      m.unserialize(m.serializeCall('ping', table.pack(1, { far })))
      io.write(package.loaded['ocap.marshal.reference'] and 'loaded' or 'not loaded', ' ')
      pcall(m.serialize, { print })
      io.write(package.loaded['ocap.marshal.reference'] and 'loaded' or 'not loaded')
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, 'w'))
    f:write(script)
    f:close()
    local child = assert(io.popen('lua5.4 ' .. path .. ' 2>&1'))
    local out = child:read('a')
    child:close()
    os.remove(path)
    assert.equal('not loaded loaded', out)
  end)
end)

describe('the C smallcaps codec in a vat', function()
  local kernel
  after_each(function() if kernel then kernel:stop() end end)

  it('charges the vat for decoding', function()
    -- The echo vat is sent a message too large for its meter to decode:
    -- the delivery is refused, as it was when Lua decoded it, because the
    -- codec charges the vat for its work; a small message still goes.
    kernel = testing.makeKernel()
    local r = kernel:launchSubcluster({ bootstrap = 'echo', vats = { echo = {
      sourceSpec = 'spec/vats/echo.lua', creationOptions = { meter = { instructions = 1000000 } } } } }):await()
    local big = {}
    for i = 1, 100000 do big[i] = i end
    local err = support.rejection(kernel:queueMessage(r.rootKref, 'echo', { big }))
    assert.matches('too costly to decode', err.message, 1, true)
    assert.equal(3, kernel:queueMessage(r.rootKref, 'ping', { 3 }):await())
  end)
end)
