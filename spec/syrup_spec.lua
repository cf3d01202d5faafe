-- ocap.syrup (core/lsyrup.c over core/syrup.c): Syrup, OCapN's byte
-- format, and its mapping to ocap's passables (docs/remote.md). Golden
-- vectors marked "endo" restate cases of the @endo/ocapn codec tests
-- (endo/packages/ocapn/test/codecs); those marked "draft spec" restate the
-- OCapN draft Syrup specification (ocapn/ocapn,
-- draft-specifications/Syrup.md) and the Syrup README (ocapn/syrup).
-- The reader's malformed-input classes are specced byte by byte in
-- spec/c/test_syrup.c; here they must come back as clean Lua errors.
local syrup = require 'ocap.syrup'
local pass = require 'ocap.pass'

local BIN = os.getenv('OCAP_BIN') or 'build/ocap'

local function D(hex)
  return 'D' .. hex:gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end)
end

describe('ocap.syrup', function()
  describe('golden vectors', function()
    -- Each value encodes to exactly these bytes, and the bytes decode to a
    -- value that encodes to them again.
    local cases = {
      { true, 't' },
      { false, 'f' },
      { 0, '0+' },
      { 42, '42+' },
      { -42, '42-' },
      { math.maxinteger, '9223372036854775807+' },
      { math.mininteger, '9223372036854775808-' },
      { 1.5, D '3ff8000000000000' },
      { -0.0, D '8000000000000000' },
      { 1 / 0, D '7ff0000000000000' },
      { 0 / 0, D '7ff8000000000000' },
      { 1.0, D '3ff0000000000000' }, -- a Lua float stays a double
      -- draft spec
      { 'a string', '8"a string' },
      { syrup.bytes('a bytestring'), '12:a bytestring' },
      { syrup.symbol('cat'), "3'cat" },
      { 'héllo', '6"héllo' },
      { syrup.bigint('123456789012345678901234567890'), '123456789012345678901234567890+' },
      { syrup.bigint('-123456789012345678901234567890'), '123456789012345678901234567890-' },
      -- endo: the passables
      { nil, "<4'void>" },
      { pass.null, "<4'null>" },
      { pass.array('hello', 'world'), '[5"hello5"world]' },
      { { abc = 123, xyz = true }, '{3"abc123+3"xyzt}' },
      { { [''] = 10, i = 20 }, '{0"10+1"i20+}' },
      { syrup.tagged('hello', pass.array('world')), "<11'desc:tagged5'hello[5\"world]>" },
      { pass.makeError('boom'), "<10'desc:error4\"boom>" },
      { syrup.record(syrup.symbol('desc:import-object'), { 123 }), "<18'desc:import-object123+>" },
      { pass.array(), '[]' },
      { {}, '{}' },
      { pass.array(1, nil, 3), "[1+<4'void>3+]" },
      { syrup.set({ 3, 1, 2 }), '#1+2+3+$' },
      -- Keys sort by their encoded bytes: a 10-byte key before a 9-byte one.
      { { aaaaaaaaaa = true, bbbbbbbbb = false }, '{10"aaaaaaaaaat9"bbbbbbbbbf}' },
      { { b = true, aa = false }, '{1"bt2"aaf}' },
    }
    for i, c in ipairs(cases) do
      it('vector ' .. i .. ': ' .. c[2]:gsub('[^%g]', '.'), function()
        assert.are.equal(c[2], syrup.encode(c[1]))
        assert.are.equal(c[2], syrup.encode(syrup.decode(c[2])))
        assert.is_true(syrup.check(c[2]))
      end)
    end
  end)

  describe('the mapping', function()
    it('decodes atoms to Lua values and boxes', function()
      assert.are.equal(42, syrup.decode('42+'))
      assert.are.equal(math.type(syrup.decode('42+')), 'integer')
      assert.are.equal(math.type(syrup.decode(D '4045000000000000')), 'float')
      assert.are.equal('cat', syrup.decode('3"cat'))
      assert.are.equal('bytes', syrup.kind(syrup.decode('3:cat')))
      assert.are.equal('cat', syrup.decode('3:cat').bytes)
      assert.are.equal(syrup.symbol('cat'), syrup.decode("3'cat"))
      assert.are_not.equal(syrup.bytes('cat'), syrup.decode("3'cat"))
      assert.is_nil(syrup.decode("<4'void>"))
      assert.are.equal(pass.null, syrup.decode("<4'null>"))
    end)

    it('keeps integers within 64 bits as Lua integers (pass bigints beyond 2^53)', function()
      local big = syrup.decode('9007199254740993+')
      assert.are.equal(9007199254740993, big)
      assert.are.equal('bigint', pass.passStyleOf(big))
      -- Beyond 64 bits: a box, canonical digits.
      local huge = syrup.decode('9223372036854775808+')
      assert.are.equal('bigint', syrup.kind(huge))
      assert.are.equal('9223372036854775808', huge.digits)
      assert.are.equal(syrup.bigint('-00018446744073709551616'), syrup.decode('18446744073709551616-'))
      assert.are.equal('0+', syrup.encode(syrup.bigint('-0')))
    end)

    it('decodes lists as pass arrays and errors as pass errors', function()
      local list = syrup.decode('[]')
      assert.is_true(pass.isArray(list))
      local holes = syrup.decode("[1+<4'void>3+]")
      assert.are.equal(3, holes.n)
      assert.are.equal('copyArray', pass.passStyleOf(holes))
      local err = syrup.decode("<10'desc:error4\"boom>")
      assert.is_true(pass.isError(err))
      assert.are.equal('boom', err.message)
      local t = syrup.decode("<11'desc:tagged5'hello[5\"world]>")
      assert.are.equal('tagged', syrup.kind(t))
      assert.are.equal('hello', t.tag)
      assert.are.equal('world', t.value[1])
      -- A desc:tagged whose tag is not a symbol is just a record.
      assert.are.equal('record', syrup.kind(syrup.decode("<11'desc:tagged5\"hello1+>")))
      local r = syrup.decode("<3'foo1+2\"hi>")
      assert.are.equal('record', syrup.kind(r))
      assert.are.equal(syrup.symbol('foo'), r.label)
      assert.are.same({ 1, 'hi' }, { r.args[1], r.args[2] })
    end)

    it('encodes hardened values through their contents', function()
      assert.are.equal('{1"x[1+2+]}', syrup.encode(pass.harden({ x = { 1, 2 } })))
    end)

    it('refuses what Syrup cannot carry, with a clear error', function()
      local function fails(v, msg)
        local ok, err = pcall(syrup.encode, v)
        assert.is_false(ok)
        assert.matches(msg, err, 1, true)
      end
      fails('\255', 'not valid UTF-8 (byte arrays are syrup.bytes)')
      fails(print, 'cannot encode a function')
      fails(syrup.set({ 1, 1 }), 'duplicate members')
      fails({ [1] = 'a', x = 1 }, 'syrup: ')
      fails(pass.registerRemotable({}, 'Alleged: x'), 'references are encoded by a CapTP session (ocap.remote)')
      local cyc = {}
      cyc.self = cyc
      fails(cyc, 'nested more than')
      assert.has_error(function() syrup.bigint('12x') end)
      assert.has_error(function() syrup.symbol('\255') end)
    end)
  end)

  describe('malformed input', function()
    -- One case per class; each gives `syrup: <what> at byte <offset>`.
    local cases = {
      { 'x', 'unexpected byte at byte 0' },
      { '', 'empty input at byte 0' },
      { "<3'foo1+", 'truncated input: container not closed at byte 8' },
      { '5"abc', 'length exceeds the remaining input at byte 0' },
      { '99999999999999999999999999:', 'length exceeds the remaining input at byte 0' },
      { '{1"b1+1"a2+}', 'dictionary keys not in canonical order at byte 6' },
      { '{1"a1+1"a2+}', 'duplicate dictionary key at byte 6' },
      { '#2+1+$', 'set members not in canonical order at byte 3' },
      { '01+', 'non-canonical number: leading zero at byte 0' },
      { '0-', 'non-canonical integer: negative zero at byte 0' },
      { D '7ff8000000000001', 'non-canonical NaN at byte 0' },
      { '1+1+', 'trailing bytes after the value at byte 2' },
      { '<>', 'record without a label at byte 1' },
      { '{1+t}', 'dictionary key is not a string at byte 1' },
      { '3"\255\254\253', 'string is not valid UTF-8 at byte 0' },
      { string.rep('[', syrup.maxDepth + 1) .. string.rep(']', syrup.maxDepth + 1),
        'nested too deeply at byte ' .. syrup.maxDepth },
    }
    for i, c in ipairs(cases) do
      it('class ' .. i .. ': ' .. c[2], function()
        local ok, err = pcall(syrup.decode, c[1])
        assert.is_false(ok)
        assert.are.equal('syrup: ' .. c[2], err)
      end)
    end

    it('check() reports the error and offset without building values', function()
      local ok, msg, off = syrup.check('[1+2+}')
      assert.is_nil(ok)
      assert.are.equal('unexpected closing byte', msg)
      assert.are.equal(5, off)
    end)

    it('reads right after an error raised halfway through a value', function()
      -- Decoding keeps one reader for the next call; an error raised
      -- inside a nested value must not leave it to a later call half used.
      local deep = string.rep('[', 50) .. '1+' .. string.rep(']', 50)
      for _ = 1, 3 do
        assert.has_error(function() syrup.decode('[[[1+2+}]]') end, 'syrup: unexpected closing byte at byte 7')
        assert.has_error(function() syrup.frame('[<3\'foo}') end, 'syrup: unexpected closing byte at byte 7')
        assert.are.equal('boom', syrup.decode("<10'desc:error4\"boom>").message)
        assert.are.equal(1, syrup.decode(deep)[1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1]
          [1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1][1])
        assert.are.equal(#deep, syrup.frame(deep .. '[', 1))
        assert.is_true(syrup.check(deep))
      end
    end)

    it('decodes to the depth limit and no further', function()
      local d = syrup.maxDepth
      local v = syrup.decode(string.rep('[', d) .. string.rep(']', d))
      assert.is_true(pass.isArray(v))
    end)
  end)

  it('frames a stream of values: the length of the first, false for a start', function()
    local stream = '3"abc' .. "<8'op:abort4\"boom>" .. '12+'
    assert.are.equal(5, syrup.frame(stream))
    assert.are.equal(18, syrup.frame(stream, 6))
    assert.are.equal(3, syrup.frame(stream, 24))
    assert.is_false(syrup.frame('<8\'op:abort', 1))
    assert.is_false(syrup.frame('100"short'))
    assert.is_false(syrup.frame('12'))
    assert.is_false(syrup.frame('ab', 3))
    assert.has_error(function() syrup.frame('3"abc}', 6) end, 'syrup: unexpected closing byte at byte 0')
    assert.has_error(function() syrup.frame('ab', 4) end)
  end)

  it('reads a stream of values: the length and value of the first, false for a start', function()
    local stream = '3"abc' .. "<8'op:abort4\"boom>" .. '12+' .. 'f'
    local n, v = syrup.read(stream)
    assert.are.same({ 5, 'abc' }, { n, v })
    n, v = syrup.read(stream, 6)
    assert.are.equal(18, n)
    assert.are.equal('op:abort', v.label.name)
    assert.are.same({ 'boom' }, { table.unpack(v.args) })
    assert.are.same({ 3, 12 }, { syrup.read(stream, 24) })
    assert.are.same({ 1, false }, { syrup.read(stream, 27) })
    assert.is_false(syrup.read('<8\'op:abort', 1))
    assert.is_false(syrup.read('[1+{1"a', 1))
    assert.is_false(syrup.read('100"short'))
    assert.is_false(syrup.read('ab', 3))
    assert.has_error(function() syrup.read('3"abc}', 6) end, 'syrup: unexpected closing byte at byte 0')
    assert.has_error(function() syrup.read('{1"b1+1"a2+}') end,
      'syrup: dictionary keys not in canonical order at byte 6')
    assert.has_error(function() syrup.read('ab', 4) end)
    -- The reader it used serves the next call, after an error too.
    assert.are.same({ 2, 7 }, { syrup.read('7+') })
  end)

  it('is built into the ocap executable', function()
    local dir = os.tmpname()
    os.remove(dir)
    local script = dir .. '.lua'
    local f = assert(io.open(script, 'w'))
    f:write([[
local syrup = require 'ocap.syrup'
io.write(syrup.encode({ ok = syrup.decode("<4'null>") }))
]])
    f:close()
    local p = assert(io.popen(BIN .. ' run ' .. script .. ' 2>&1'))
    local out = p:read('a')
    p:close()
    os.remove(script)
    assert.are.equal("{2\"ok<4'null>}", out)
  end)
end)
