local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'

-- Expected bodies were checked against @endo/marshal (smallcaps,
-- errorTagging off) for the corresponding JavaScript values.

local function body(v)
  return marshal.serializeData(v).body
end

local function decode(b, slots)
  return marshal.unserializeData({ body = b, slots = slots or {} })
end

-- A marshal whose slots are names given by the test: objects made with
-- `far(iface, slot)` / `promise(slot)`, and whose calls are counted.
local function fixture()
  local f = { toSlot = {}, fromSlot = {}, valToSlotCalls = 0, slotToValCalls = {} }
  function f.far(iface, slot)
    local obj = pass.registerRemotable({}, iface)
    f.toSlot[obj] = slot
    f.fromSlot[slot] = obj
    return obj
  end
  function f.promise(slot)
    local p = pass.registerPromise({})
    f.toSlot[p] = slot
    f.fromSlot[slot] = p
    return p
  end
  f.m = marshal.makeMarshal(function(v, style)
    f.valToSlotCalls = f.valToSlotCalls + 1
    f.lastStyle = style
    return f.toSlot[v]
  end, function(slot, iface, style)
    f.slotToValCalls[#f.slotToValCalls + 1] = { slot, iface, style }
    local v = f.fromSlot[slot]
    if v == nil then
      if style == 'promise' then v = f.promise(slot) else v = f.far(iface, slot) end
    end
    return v
  end)
  return f
end

describe('ocap.marshal', function()
  describe('serialize follows the passable values table', function()
    local rows = {
      { 'nil', nil, '#"#undefined"' },
      { 'null', pass.null, '#null' },
      { 'true', true, '#true' },
      { 'false', false, '#false' },
      { 'integer', 42, '#42' },
      { 'negative integer', -7, '#-7' },
      { 'zero', 0, '#0' },
      { '2^53', 9007199254740992, '#9007199254740992' },
      { '-2^53', -9007199254740992, '#-9007199254740992' },
      { '2^53 + 1', 9007199254740993, '#"+9007199254740993"' },
      { '-(2^53 + 1)', -9007199254740993, '#"-9007199254740993"' },
      { 'maxinteger', math.maxinteger, '#"+9223372036854775807"' },
      { 'mininteger', math.mininteger, '#"-9223372036854775808"' },
      { '0.1', 0.1, '#0.1' },
      { '0.1 + 0.2', 0.1 + 0.2, '#0.30000000000000004' },
      { '1/3', 1 / 3, '#0.3333333333333333' },
      { '123.456', 123.456, '#123.456' },
      { '4.35', 4.35, '#4.35' },
      { '1e21', 1e21, '#1e+21' },
      { '1e21 + 1e6', 1e21 + 1e6, '#1.000000000000001e+21' },
      { '1e20', 1e20, '#100000000000000000000' },
      { '2^60 as a float', 2.0 ^ 60, '#1152921504606847000' },
      { '1e-7', 1e-7, '#1e-7' },
      { '-1e-7', -1e-7, '#-1e-7' },
      { '1.5e-7', 1.5e-7, '#1.5e-7' },
      { '0.000001', 0.000001, '#0.000001' },
      { '1.25e-6', 1.25e-6, '#0.00000125' },
      { '5e-324', 5e-324, '#5e-324' },
      { 'largest float', 1.7976931348623157e308, '#1.7976931348623157e+308' },
      { 'integral float', 3.0, '#3' },
      { '2^53 as a float', 2.0 ^ 53, '#9007199254740992' },
      { '-0', -0.0, '#0' },
      { 'NaN', 0 / 0, '#"#NaN"' },
      { 'Infinity', math.huge, '#"#Infinity"' },
      { '-Infinity', -math.huge, '#"#-Infinity"' },
      { 'string', 'hello', '#"hello"' },
      { 'empty string', '', '#""' },
      { 'string starting with #', '#foo', '#"!#foo"' },
      { 'string starting with !', '!foo', '#"!!foo"' },
      { 'string starting with -', '-x', '#"!-x"' },
      { 'string starting with $', '$money', '#"!$money"' },
      { 'string starting with .', '.x', '#".x"' },
      { 'JSON escapes', 'a\0\31\127"\\/\b\f\n\r\t\u{E9}\u{1F600}',
        '#"a\\u0000\\u001f\127\\"\\\\/\\b\\f\\n\\r\\t\u{E9}\u{1F600}"' },
      { 'array', { 1, 'two', true }, '#[1,"two",true]' },
      { 'methargs with no arguments', { 'getValue', pass.array() }, '#["getValue",[]]' },
      { 'empty array', pass.array(), '#[]' },
      { 'packed array with nils', table.pack(1, nil, 3, nil), '#[1,"#undefined",3,"#undefined"]' },
      { 'marked array of nil', pass.array(nil), '#["#undefined"]' },
      { 'empty record', {}, '#{}' },
      { 'record', { b = 1, a = 2, c = { 'x' } }, '#{"a":2,"b":1,"c":["x"]}' },
      { 'record with n only', { n = 2 }, '#{"n":2}' },
      { 'escaped record key', { ['#tag'] = 1 }, '#{"!#tag":1}' },
      { 'record keys in JS order', { b = 1, ['10'] = 2, ['2'] = 3, a = 4, ['#tag'] = 1, ['!x'] = 2 },
        '#{"2":3,"10":2,"!!x":2,"!#tag":1,"a":4,"b":1}' },
      { 'index-like keys', { ['4294967295'] = 1, ['4294967294'] = 2, ['01'] = 3, ['1'] = 4, ['-1'] = 5 },
        '#{"1":4,"4294967294":2,"!-1":5,"01":3,"4294967295":1}' },
      { 'keys in UTF-16 order', { ['\u{E000}'] = 1, ['\u{1F600}'] = 2, z = 3 },
        '#{"z":3,"\u{1F600}":2,"\u{E000}":1}' },
      { 'ASCII keys', { [''] = 1, [' '] = 2, ['a b'] = 3, A = 4, _ = 5, ['~'] = 6 },
        '#{"":1," ":2,"A":4,"_":5,"a b":3,"~":6}' },
      { 'error', pass.makeError('boom'), '#{"#error":"boom","name":"Error"}' },
      { 'named error with escaped message', pass.makeError('#x', 'RangeError'),
        '#{"#error":"!#x","name":"RangeError"}' },
      { 'kernel error (code is not written)', pass.makeError('[KERNEL:OBJECT_REVOKED] Target object has been revoked'),
        '#{"#error":"[KERNEL:OBJECT_REVOKED] Target object has been revoked","name":"Error"}' },
    }
    for _, row in ipairs(rows) do
      it(row[1], function()
        local capdata = marshal.serializeData(row[2])
        assert.equal(row[3], capdata.body)
        assert.same({}, capdata.slots)
      end)
    end

    it('escapes every special first character and nothing else', function()
      assert.equal([=[#["!!","!\"","!#","!$","!%","!&","!'","!(","!)","!*","!+","!,","!-",".","/"," "]]=],
        body({ '!', '"', '#', '$', '%', '&', "'", '(', ')', '*', '+', ',', '-', '.', '/', ' ' }))
    end)

    it('writes remotables as $i.iface at first and $i after', function()
      local f = fixture()
      local foo, bar = f.far('Alleged: foo', 'ko1'), f.far('Alleged: bar', 'ko2')
      local capdata = f.m.serialize({ foo, bar, foo, bar })
      assert.equal('#["$0.Alleged: foo","$1.Alleged: bar","$0","$1"]', capdata.body)
      assert.same({ 'ko1', 'ko2' }, capdata.slots)
      assert.equal(2, f.valToSlotCalls)
    end)

    it('writes promises as &i', function()
      local f = fixture()
      local p = f.promise('kp1')
      local capdata = f.m.serialize({ p, p })
      assert.equal('#["&0","&0"]', capdata.body)
      assert.same({ 'kp1' }, capdata.slots)
      assert.equal('promise', f.lastStyle)
    end)

    it('matches the kernel examples', function()
      local f = fixture()
      local thing, kp3 = f.far('Alleged: thing', 'ko9'), f.promise('kp3')
      local capdata = f.m.serialize({ p = kp3, o = thing, n = 9007199254740993 })
      assert.equal('#{"n":"+9007199254740993","o":"$0.Alleged: thing","p":"&1"}', capdata.body)
      assert.same({ 'ko9', 'kp3' }, capdata.slots)

      local alice, bob = f.far('Alleged: vatRoot', 'ko4'), f.far('Alleged: vatRoot', 'ko5')
      local facet = f.far('Alleged: undefined', 'ko3')
      capdata = f.m.serialize({ 'bootstrap', { { alice = alice, bob = bob }, { kernelFacet = facet } } })
      assert.equal('#["bootstrap",[{"alice":"$0.Alleged: vatRoot","bob":"$1.Alleged: vatRoot"},'
        .. '{"kernelFacet":"$2.Alleged: undefined"}]]', capdata.body)
      assert.same({ 'ko4', 'ko5', 'ko3' }, capdata.slots)

      capdata = f.m.serialize(f.far('Alleged: SharedObject', 'ko7'))
      assert.equal('#"$0.Alleged: SharedObject"', capdata.body)
      assert.same({ 'ko7' }, capdata.slots)
    end)

    it('numbers slots in sorted key order, as Endo does', function()
      local f = fixture()
      local r = f.far('Alleged: r', 'ko1')
      local capdata = f.m.serialize({ ['2'] = r, ['10'] = f.far('Alleged: s', 'ko2') })
      -- "10" sorts before "2", so it is encoded first, but JS emits "2" first.
      assert.equal('#{"2":"$1.Alleged: r","10":"$0.Alleged: s"}', capdata.body)
      assert.same({ 'ko2', 'ko1' }, capdata.slots)
    end)

    it('sees through hardened tables', function()
      local v = pass.harden({ b = { 1, 2 }, a = pass.array(), c = { x = 'y' } })
      assert.equal('#{"a":[],"b":[1,2],"c":{"x":"y"}}', body(v))
      assert.equal('#[1,"#undefined"]', body(pass.harden(table.pack(1, nil))))
    end)

    it('allows shared (acyclic) tables', function()
      local shared = { 1 }
      assert.equal('#[[1],[1],{"a":[1]}]', body({ shared, shared, { a = shared } }))
    end)

    it('allows nesting up to 1000 levels', function()
      local t = {}
      local cur = t
      for _ = 2, 1000 do
        cur[1] = {}
        cur = cur[1]
      end
      local b = body(t)
      assert.equal(1 + 2 * 1000, #b)
      assert.equal(b, body(decode(b)))
      cur[1] = {}
      assert.has_error(function() body(t) end)
    end)

    it('survives a nested serialize from valToSlot', function()
      local inner
      local m = marshal.makeMarshal(function(v)
        return marshal.serializeData({ 'nested', pass.remotableIface(v) }).body
      end, function() end)
      inner = pass.registerRemotable({}, 'Alleged: x')
      local capdata = m.serialize({ 'a', inner, 'b' })
      assert.equal('#["a","$0.Alleged: x","b"]', capdata.body)
      assert.same({ '#["nested","Alleged: x"]' }, capdata.slots)
    end)
  end)

  describe('serialize refuses non-passables', function()
    local function refuses(v, message)
      local ok, err = pcall(marshal.serializeData, v)
      assert.is_false(ok)
      assert.equal(message, err)
    end

    it('names the problem', function()
      refuses(print, 'cannot pass function')
      refuses(coroutine.create(print), 'cannot pass thread (coroutine)')
      refuses(setmetatable({}, { __index = {} }), 'cannot pass table with a foreign metatable')
      refuses({ 1, 2, x = 3 }, 'cannot pass table with mixed integer and string keys')
      refuses({ [1.5] = 'x' }, 'cannot pass table with a float key (1.5)')
      refuses({ 1, nil, 3 }, 'cannot pass sparse array (index 2 is nil; set n as table.pack does)')
    end)

    it('names userdata', function()
      local ok, err = pcall(marshal.serializeData, { io.stdout })
      assert.is_false(ok)
      assert.matches('^cannot pass userdata %(file %(0x%x+%)%) %(at %[1%]%)$', err)
    end)

    it('says where the value is', function()
      refuses({ 'm', { 1, { cb = print } } }, 'cannot pass function (at [2][2].cb)')
      refuses({ a = { ['odd key'] = coroutine.create(print) } }, 'cannot pass thread (coroutine) (at .a["odd key"])')
      refuses({ x = { { [true] = 1 } } }, 'cannot pass table with a boolean key (at .x[1])')
    end)

    it('refuses cycles', function()
      local t = {}
      t.self = t
      refuses(t, 'cannot pass cyclic structure (at .self)')
      local u = { a = { b = {} } }
      u.a.b.c = u.a
      refuses({ root = u }, 'cannot pass cyclic structure (at .root.a.b.c)')
      local arr = pass.array()
      arr[1] = arr
      refuses(arr, 'cannot pass cyclic structure (at [1])')
    end)

    it('refuses remotables and promises as plain data', function()
      refuses({ pass.registerRemotable({}, 'x') }, 'cannot pass remotable as plain data (at [1])')
      refuses(pass.registerPromise({}), 'cannot pass promise as plain data')
    end)
  end)

  describe('unserialize', function()
    it('reads every row back', function()
      assert.is_nil(decode('#"#undefined"'))
      assert.equal(pass.null, decode('#null'))
      assert.is_true(decode('#true'))
      assert.is_false(decode('#false'))
      assert.equal('hello', decode('#"hello"'))
      assert.equal('#foo', decode('#"!#foo"'))
      assert.equal('!foo', decode('#"!!foo"'))
      assert.equal('.x', decode('#".x"'))
      assert.equal(0.1, decode('#0.1'))
      assert.equal(1e21, decode('#1e+21'))
      assert.equal(5e-324, decode('#5e-324'))
      assert.equal(math.huge, decode('#"#Infinity"'))
      assert.equal(-math.huge, decode('#"#-Infinity"'))
      local nan = decode('#"#NaN"')
      assert.is_true(nan ~= nan)
      assert.same({ 'getValue', {} }, decode('#["getValue",[]]'))
      assert.same({ a = 2, b = 1 }, decode('#{"a":2,"b":1}'))
      assert.same({ ['#tag'] = 1, ['!x'] = 2, y = '$' }, decode('#{"!#tag":1,"!!x":2,"y":"!$"}'))
    end)

    it('gives integers as Lua integers', function()
      assert.equal('integer', math.type(decode('#3')))
      assert.equal('integer', math.type(decode('#-3')))
      assert.equal('integer', math.type(decode('#3.0')))
      assert.equal('integer', math.type(decode('#1e2')))
      assert.equal('integer', math.type(decode('#9007199254740992')))
      assert.equal('integer', math.type(decode('#-0')))
      assert.equal('float', math.type(decode('#3.5')))
      assert.equal('float', math.type(decode('#1e+21')))
      assert.equal('float', math.type(decode('#9007199254740994')))
      local t = decode('#[1,{"n":2}]')
      assert.equal('integer', math.type(t[1]))
      assert.equal('integer', math.type(t[2].n))
    end)

    it('reads bigints as Lua integers', function()
      assert.equal(9007199254740993, decode('#"+9007199254740993"'))
      assert.equal(math.mininteger, decode('#"-9223372036854775808"'))
      assert.equal(math.maxinteger, decode('#"+9223372036854775807"'))
      assert.equal(1, decode('#"+1"'))
      assert.equal('integer', math.type(decode('#"+1"')))
      assert.equal(-400, decode('#"-400"'))
    end)

    it('tells [] from {}', function()
      local v = decode('#[[],{},{"a":{},"b":[]},"{}",["{}"]]')
      assert.is_true(pass.isArray(v[1]))
      assert.equal('copyRecord', pass.passStyleOf(v[2]))
      assert.equal('copyRecord', pass.passStyleOf(v[3].a))
      assert.is_true(pass.isArray(v[3].b))
      assert.equal('{}', v[4])
      assert.equal('{}', v[5][1])
      assert.equal('{}', decode('#"{}"'))
      assert.equal('copyRecord', pass.passStyleOf(decode('#{}')))
      assert.is_true(pass.isArray(decode('#[]')))
      assert.equal('copyRecord', pass.passStyleOf(decode('#{"x\\"{}":{}}')['x"{}']))
    end)

    it('marks arrays and counts undefined elements with n', function()
      local v = decode('#[1,"#undefined",3,"#undefined"]')
      assert.equal(4, v.n)
      assert.equal(1, v[1])
      assert.is_nil(v[2])
      assert.equal(3, v[3])
      assert.is_true(pass.isArray(v))
      assert.is_nil(rawget(decode('#[1,2]'), 'n'))
      assert.equal(1, decode('#["#undefined"]').n)
      assert.same({}, decode('#{"a":"#undefined"}'))
    end)

    it('reads errors, deriving kernel codes', function()
      local e = decode('#{"#error":"[KERNEL:OBJECT_REVOKED] Target object has been revoked","name":"Error"}')
      assert.is_true(pass.isError(e))
      assert.equal('Error', e.name)
      assert.equal('[KERNEL:OBJECT_REVOKED] Target object has been revoked', e.message)
      assert.equal('OBJECT_REVOKED', e.code)
      e = decode('#{"#error":"!#x","name":"RangeError","errorId":"error:anon-marshal#1"}')
      assert.equal('#x', e.message)
      assert.equal('RangeError', e.name)
      assert.is_nil(e.code)
      assert.equal('VAT_FATAL:METER_EXHAUSTED',
        decode('#{"#error":"[KERNEL:VAT_FATAL:METER_EXHAUSTED] out","name":"Error"}').code)
    end)

    it('turns slots into values, once per slot', function()
      local f = fixture()
      local v = f.m.unserialize({
        body = '#{"n":"+1","o":"$0.Alleged: thing","p":"&1","q":["$0","&1"]}',
        slots = { 'ko9', 'kp3' },
      })
      assert.equal(1, v.n)
      assert.equal(f.fromSlot.ko9, v.o)
      assert.equal(f.fromSlot.kp3, v.p)
      assert.equal(v.o, v.q[1])
      assert.equal(v.p, v.q[2])
      assert.is_true(pass.isRemotable(v.o))
      assert.is_true(pass.isPromise(v.p))
      table.sort(f.slotToValCalls, function(a, b) return a[1] < b[1] end)
      assert.same({ { 'ko9', 'Alleged: thing', 'remotable' }, { 'kp3', nil, 'promise' } }, f.slotToValCalls)
    end)

    it('passes the iface even when a bare reference is met first', function()
      local f = fixture()
      local v = f.m.unserialize({ body = '#{"2":"$0","10":"$0.Alleged: x","a":"$0"}', slots = { 'ko1' } })
      assert.equal(v['2'], v['10'])
      assert.same({ { 'ko1', 'Alleged: x', 'remotable' } }, f.slotToValCalls)
    end)

    it('refuses malformed and reserved encodings', function()
      local function refuses(b, message, slots)
        local ok, err = pcall(decode, b, slots)
        assert.is_false(ok)
        assert.matches(message, err, 1, true)
      end
      for _, c in ipairs({ "'", '(', ')', ',' }) do
        refuses('#"' .. c .. 'x"', 'Special char "' .. c .. '" reserved for future use')
      end
      refuses('#"\\"x"', 'Special char "\\"" reserved for future use')
      refuses('#["\'"]', 'reserved for future use')
      refuses('#[{},"\'"]', 'reserved for future use')
      refuses('#[{},"\\u0027x"]', 'reserved for future use')
      refuses('#"#foo"', 'unknown constant "#foo"')
      refuses('#{"#foo":1}', 'unrecognized record type "#foo"')
      refuses('#{"$0":1}', 'record key "$0" must decode to a string', { 'ko1' })
      refuses('#{"+1":1}', 'record key "+1" must decode to a string')
      refuses('#{"(x":1}', 'Special char "(" reserved for future use')
      refuses('#"-1x"', 'invalid bigint encoding')
      local ok, err = pcall(fixture().m.unserialize, { body = '#["$0.Alleged: x","$1.Alleged: y"]', slots = { 'ko1' } })
      assert.is_false(ok)
      assert.equal('remotable "$1.Alleged: y" refers to slot 1, but there are 1 slots', err)
      refuses('#"$0.Alleged: x"', 'cannot unserialize remotable "$0.Alleged: x" as plain data', { 'ko1' })
      refuses('#"$x"', 'invalid remotable encoding')
      refuses('#"&0"', 'cannot unserialize promise "&0" as plain data', { 'kp1' })
      refuses('#{"#error":1,"name":"Error"}', 'error message must decode to a string')
      refuses('#[1,', 'invalid capdata body')
      refuses('#NaN', 'invalid capdata body')
      refuses('[1]', 'capdata body must start with "#"')
      refuses('#{"!a":1,"a":2}', 'duplicate record key "a"')
    end)
  end)

  -- The OCapN kinds Lua has no type for. The bodies follow
  -- @endo/marshal's encodeToSmallcaps.js and are those of its
  -- test/marshal-smallcaps.test.js where it has them ("%foo", "%@@@@foo",
  -- '{"#tag":"foo","payload":"bar"}', '{"#tag":"!!foo","payload":"!!bar"}',
  -- the error bodies); big integers are what its `bigint` case writes for
  -- 123456789012345678901234n. Byte arrays are `"*<hex>"`, the encoding
  -- of Endo's open proposal (test/byteArray.test.js of endojs/endo pull
  -- request 3226: "*deadbeef"); released @endo/marshal refuses them.
  describe('symbols, byte arrays, big integers and tagged values', function()
    local rows = {
      { 'a symbol', pass.symbol('foo'), '#"%foo"' },
      { 'a symbol whose name starts with @@', pass.symbol('@@foo'), '#"%@@@@foo"' },
      { 'a symbol that needs JSON escapes', pass.symbol('a"b'), '#"%a\\"b"' },
      { 'the empty symbol', pass.symbol(''), '#"%"' },
      { 'a byte array', pass.bytes('\222\173\190\239'), '#"*deadbeef"' },
      { 'the empty byte array', pass.bytes(''), '#"*"' },
      { 'all byte values', pass.bytes('\0\1\127\128\255'), '#"*00017f80ff"' },
      { 'an integer beyond 64 bits', pass.bigint('123456789012345678901234'), '#"+123456789012345678901234"' },
      { 'a negative one', pass.bigint('-123456789012345678901234'), '#"-123456789012345678901234"' },
      { 'just beyond int64', pass.bigint('9223372036854775808'), '#"+9223372036854775808"' },
      { 'just below int64', pass.bigint('-9223372036854775809'), '#"-9223372036854775809"' },
      { 'a tagged value', pass.makeTagged('foo', 'bar'), '#{"#tag":"foo","payload":"bar"}' },
      { 'a tagged value with special strings', pass.makeTagged('!foo', '!bar'), '#{"#tag":"!!foo","payload":"!!bar"}' },
      { 'a tagged value without a payload', pass.makeTagged('t', nil), '#{"#tag":"t","payload":"#undefined"}' },
      { 'a tagged value holding the others', pass.makeTagged('copySet', pass.array(pass.symbol('a'), pass.bytes('\1'),
        pass.bigint('-99999999999999999999'), pass.makeTagged('x', { k = pass.null }))),
        '#{"#tag":"copySet","payload":["%a","*01","-99999999999999999999",{"#tag":"x","payload":{"k":null}}]}' },
      { 'an error', pass.makeError('msg', 'ReferenceError'), '#{"#error":"msg","name":"ReferenceError"}' },
      { 'an error with a special message', pass.makeError('#NaN'), '#{"#error":"!#NaN","name":"Error"}' },
      { 'in records and arrays', { s = pass.symbol('x'), b = { pass.bytes('AB') } }, '#{"b":["*4142"],"s":"%x"}' },
    }
    for _, row in ipairs(rows) do
      it(row[1] .. ' encodes and decodes back', function()
        assert.equal(row[3], body(row[2]))
        local back = decode(row[3])
        assert.equal(row[3], body(back))
        local style = pass.passStyleOf(row[2])
        assert.equal(style, pass.passStyleOf(back))
        if style ~= 'tagged' and style ~= 'error' and style ~= 'copyRecord' then
          assert.equal(row[2], back) -- the same value: they are interned
        end
      end)
    end

    it('reads every case of hex, and bigints with signs and leading zeros', function()
      assert.equal(pass.bytes('\171\205'), decode('#"*ABcd"'))
      assert.equal(pass.bigint('123456789012345678901234'), decode('#"+000123456789012345678901234"'))
      assert.equal('#"+123456789012345678901234"', body(decode('#"+000123456789012345678901234"')))
      assert.equal(-5, decode('#"-0005"'))
      assert.equal(0, decode('#"-0"'))
      assert.equal(math.mininteger, decode('#"-9223372036854775808"'))
      assert.equal('bigint', pass.passStyleOf(decode('#"-9223372036854775809"')))
    end)

    it('reads tagged values with their payload, from Endo\'s order of keys or another', function()
      local t = decode('#{"payload":{"b":["%s"]},"#tag":"!#t"}')
      assert.equal('tagged', pass.passStyleOf(t))
      assert.equal('#t', t.tag)
      assert.equal(pass.symbol('s'), t.payload.b[1])
      assert.is_true(pass.isFrozen(t.payload))
    end)

    it('refuses malformed ones, saying why', function()
      local function refuses(b, message)
        local ok, err = pcall(decode, b)
        assert.is_false(ok)
        assert.equal(message, err)
      end
      refuses('#{"#tag":"x"}', 'tagged value (#tag) "x" without a payload')
      refuses('#{"#tag":"x","payload":1,"#error":"y"}', 'tagged value (#tag) with an unexpected key "#error"')
      refuses('#{"#tag":1,"payload":1}', 'tagged value tag must decode to a string')
      refuses('#{"#tag":"%s","payload":1}', 'tagged value tag must decode to a string')
      refuses('#"*abc"', 'invalid byteArray encoding "*abc" (pairs of hex digits expected)')
      refuses('#"*0g"', 'invalid byteArray encoding "*0g" (pairs of hex digits expected)')
      refuses('#"%@@iterator"', 'well-known symbol "%@@iterator" has no Lua value')
      refuses('#"+12x"', 'invalid bigint encoding "+12x"')
      refuses('#"+"', 'invalid bigint encoding "+"')
      refuses('#"- 1"', 'invalid bigint encoding "- 1"')
      refuses('#{"%s":1}', 'record key "%s" must decode to a string')
      refuses('#{"*ab":1}', 'record key "*ab" must decode to a string')
      local deep = '#' .. ('{"#tag":"t","payload":'):rep(1001) .. '1' .. ('}'):rep(1001)
      local ok, err = pcall(decode, deep)
      assert.is_false(ok)
      assert.matches('invalid capdata body', err, 1, true)
      local nested = 1
      for _ = 1, 1001 do nested = pass.makeTagged('t', nested) end
      ok, err = pcall(body, nested)
      assert.is_false(ok)
      assert.matches('cannot pass structure nested deeper than 1000 levels', err, 1, true)
    end)

    it('makes them with clear errors for wrong arguments', function()
      assert.has_error(function() pass.bigint('12a') end, 'bigint: "12a" is not a decimal integer')
      assert.has_error(function() pass.bigint('') end, 'bigint: "" is not a decimal integer')
      assert.has_error(function() pass.bigint(1.5) end, 'bigint: expected a decimal string or an integer, got float')
      assert.has_error(function() pass.symbol(1) end, 'symbol: the name must be a string, got number')
      assert.has_error(function() pass.bytes({}) end, 'bytes: expected a string, got table')
      assert.has_error(function() pass.makeTagged(nil, 1) end, 'makeTagged: the tag must be a string, got nil')
      local ok, err = pcall(body, pass.makeTagged('t', { f = print }))
      assert.is_false(ok)
      assert.matches('^cannot pass function', err)
    end)
  end)

  describe('round trips', function()
    it('unserialize(serialize(v)) is deep-equal to v', function()
      local f = fixture()
      local far, p = f.far('Alleged: far', 'ko1'), f.promise('kp1')
      local values = {
        { 'getValue', pass.array() },
        { a = { b = { c = { 1, 2.5, 'x', true, false, pass.null } } }, ['#k'] = '!v', ['-'] = '$' },
        { far, p, far, { far = far, p = p } },
        pass.makeError('[KERNEL:OBJECT_DELETED] gone'),
        { 9007199254740993, math.mininteger, math.maxinteger, 1e300, -1e-300, 5e-324 },
        { ['\u{E000}'] = 1, ['\u{1F600}'] = { ['10'] = 1, ['9'] = 2 } },
        'ünïcödé \u{1F600}',
        { 'a\0b', '\127', '/' },
      }
      for _, v in ipairs(values) do
        local capdata = f.m.serialize(v)
        local back = f.m.unserialize(capdata)
        assert.same(v, back)
        assert.equal(capdata.body, f.m.serialize(back).body)
      end
      local e = f.m.unserialize(f.m.serialize(pass.makeError('[KERNEL:OBJECT_DELETED] gone')))
      assert.equal('OBJECT_DELETED', e.code)
      local packed = f.m.unserialize(f.m.serialize(table.pack('a', nil, 'c', nil)))
      assert.equal(4, packed.n)
      assert.equal('c', packed[3])
    end)

    it('serialize(unserialize(body)) == body for canonical bodies', function()
      local bodies = {
        '#["getValue",[]]',
        '#{"n":"+9007199254740993","o":"$0.Alleged: thing","p":"&1"}',
        '#["bootstrap",[{"alice":"$0.Alleged: vatRoot","bob":"$1.Alleged: vatRoot"},'
          .. '{"kernelFacet":"$2.Alleged: undefined"}]]',
        '#{"#error":"[KERNEL:OBJECT_REVOKED] Target object has been revoked","name":"Error"}',
        '#"#undefined"',
        '#[[],{},[{}],{"a":[]},null,"#undefined","#NaN","#Infinity","#-Infinity"]',
        '#{"2":3,"10":2,"!!x":2,"!#tag":1,"a":4,"b":1}',
        '#[0.1,1e+21,1e-7,123.456,5e-324,1.7976931348623157e+308,-9007199254740992]',
        '#"a\\u0000\\u001f\127\\"\\\\/\\b\\f\\n\\r\\t\u{E9}\u{1F600}"',
        '#{"z":3,"\u{1F600}":2,"\u{E000}":1}',
      }
      local slots = { 'ko4', 'ko5', 'ko3' }
      for _, b in ipairs(bodies) do
        local f = fixture()
        local v = f.m.unserialize({ body = b, slots = slots })
        assert.equal(b, f.m.serialize(v).body)
      end
    end)
  end)

  describe('formatNumber', function()
    it('formats as JavaScript does', function()
      local cases = {
        { 0, '0' }, { -0.0, '0' }, { 1.0, '1' }, { -1.5, '-1.5' }, { 1e21, '1e+21' }, { 1e-7, '1e-7' },
        { 123e-20, '1.23e-18' }, { 0.000001, '0.000001' }, { 2 ^ 70, '1.1805916207174113e+21' },
        { 0 / 0, 'NaN' }, { math.huge, 'Infinity' }, { -math.huge, '-Infinity' },
        -- powers of two whose nearest 16-digit decimal does not read back
        { 2 ^ -1000, '9.332636185032189e-302' }, { 2.0 ^ 1000, '1.0715086071862673e+301' },
      }
      for _, case in ipairs(cases) do
        assert.equal(case[2], marshal.formatNumber(case[1]))
      end
    end)
  end)

  describe('fast paths', function()
    local m = marshal.makeMarshal(function() return 'o+1' end, function() return {} end)
    local samples = { 0, 1, -1, 42, 2 ^ 53 // 1, -(2 ^ 53 // 1), 2 ^ 53 // 1 + 1, 1.5, true, false, '',
      'ping', 'hello world', 'a,b', '#x', '!x', '-x', '.x', 'tab\t', 'quote"', 'back\\', 'é', nil,
      pass.null, { 1, 2 }, { a = 1 } }
    local n = 26

    it('serialize a value exactly as the general encoder does', function()
      for i = 1, n do
        local v = samples[i]
        assert.equal(marshal.serializeData(v).body, m.serialize(v).body, 'sample ' .. i)
      end
    end)

    it('serialize calls exactly as the general encoder does', function()
      for i = 1, n do
        for j = 1, n do
          local args = table.pack(samples[i], samples[j])
          local general = marshal.serializeData(pass.array('method', args)).body
          assert.equal(general, m.serializeCall('method', args).body, ('samples %d, %d'):format(i, j))
        end
      end
      assert.equal('#["ping",[]]', m.serializeCall('ping', table.pack()).body)
      assert.equal(marshal.serializeData(pass.array('!odd', table.pack(1))).body,
        m.serializeCall('!odd', table.pack(1)).body)
    end)

    it('decode what they encode, like the general decoder', function()
      for i = 1, n do
        for j = 1, n do
          local text = marshal.serializeData(pass.array('method', table.pack(samples[i], samples[j]))).body
          local fast = m.unserialize({ body = text, slots = {} })
          local general = marshal.unserializeData({ body = text, slots = {} })
          assert.same(general, fast, text)
          assert.equal(math.type(general[2][1]), math.type(fast[2][1]), text)
          assert.equal(pass.isArray(general[2]), pass.isArray(fast[2]), text)
        end
        local text = marshal.serializeData(samples[i]).body
        local fast = m.unserialize({ body = text, slots = {} })
        local general = marshal.unserializeData({ body = text, slots = {} })
        if general ~= general then
          assert.is_true(fast ~= fast)
        else
          assert.same(general, fast, text)
          assert.equal(math.type(general), math.type(fast), text)
        end
      end
    end)

    it('leave malformed bodies to the general decoder and its errors', function()
      for _, text in ipairs({ '#["m",[1,]]', '#["m",[,1]]', '#["m",[1 2]]', '#12345678901234567', '#"a' }) do
        local ok1, e1 = pcall(m.unserialize, { body = text, slots = {} })
        local ok2, e2 = pcall(marshal.unserializeData, { body = text, slots = {} })
        assert.equal(ok2, ok1, text)
        if ok1 then assert.same(e2, e1, text) end
      end
    end)
  end)
end)

describe('symbols, byte arrays, big integers, tagged values and errors between vats', function()
  local testing = require 'ocap.testing'
  local ocap = require 'ocap'
  local kernel
  after_each(function() if kernel then kernel:stop() end end)

  it('go from a vat to another and back as the same values', function()
    kernel = testing.makeKernel()
    local values = kernel:launchSubcluster({ bootstrap = 'values',
      vats = { values = { sourceSpec = 'spec/vats/values.lua' } } }):await().rootKref
    local echo = kernel:launchSubcluster({ bootstrap = 'echo',
      vats = { echo = { sourceSpec = 'spec/vats/echo.lua' } } }):await().rootKref
    local report = kernel:queueMessage(values, 'roundTrip', { kernel:getPresence(echo) }):await()
    local styles = { symbol = 'symbol', bytes = 'byteArray', bigint = 'bigint', tagged = 'tagged', error = 'error' }
    for name, style in pairs(styles) do
      assert.same({ style = style, same = true }, report[name], name)
    end
    -- The host reads them too, and gives them back to the vat as they were.
    local samples = kernel:queueMessage(values, 'samples', {}):await()
    assert.equal(ocap.symbol('hello'), samples.symbol)
    assert.equal(ocap.bytes('\0\1\254\255'), samples.bytes)
    assert.equal('-123456789012345678901234', samples.bigint.digits)
    assert.equal('copySet', samples.tagged.tag)
    for name in pairs(styles) do
      assert.is_true(kernel:queueMessage(values, 'check', { name, samples[name] }):await(), name)
    end
  end)
end)
