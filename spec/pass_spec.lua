local pass = require 'ocap.pass'

describe('ocap.pass', function()
  describe('null', function()
    it('is a unique value that prints as null', function()
      assert.equal('null', tostring(pass.null))
      assert.is_true(pass.isNull(pass.null))
      assert.is_false(pass.isNull(nil))
      assert.is_false(pass.isNull({}))
      assert.equal('null', pass.passStyleOf(pass.null))
    end)

    it('cannot be changed', function()
      assert.has_error(function() pass.null.x = 1 end)
      assert.has_error(function() setmetatable(pass.null, {}) end)
    end)
  end)

  describe('array', function()
    it('marks an empty table as an array', function()
      local a = pass.array()
      assert.is_true(pass.isArray(a))
      assert.equal('copyArray', pass.passStyleOf(a))
      assert.equal(0, #a)
      assert.equal('copyRecord', pass.passStyleOf({}))
      assert.is_false(pass.isArray({}))
    end)

    it('holds its elements and counts nils with n', function()
      local a = pass.array(1, 2, 3)
      assert.same({ 1, 2, 3 }, a)
      assert.is_nil(rawget(a, 'n'))
      local b = pass.array(1, nil, 3, nil)
      assert.equal(4, b.n)
      assert.equal('copyArray', pass.passStyleOf(b))
      assert.equal(1, pass.array(nil).n)
    end)

    it('stays an array when elements are added', function()
      local a = pass.array()
      a[1] = 'x'
      assert.is_true(pass.isArray(a))
      a.extra = 1
      assert.has_error(function() pass.passStyleOf(a) end, 'cannot pass array with string key "extra"')
    end)
  end)

  describe('makeError', function()
    it('makes an error value', function()
      local e = pass.makeError('boom')
      assert.equal('boom', e.message)
      assert.equal('Error', e.name)
      assert.is_nil(e.code)
      assert.equal('Error: boom', tostring(e))
      assert.is_true(pass.isError(e))
      assert.equal('error', pass.passStyleOf(e))
      assert.is_false(pass.isError({ message = 'boom', name = 'Error' }))
    end)

    it('takes a name and a code', function()
      local e = pass.makeError('bad', 'TypeError', 'MY_CODE')
      assert.equal('TypeError: bad', tostring(e))
      assert.equal('MY_CODE', e.code)
    end)

    it('derives the code of kernel errors from the message', function()
      assert.equal('OBJECT_REVOKED',
        pass.makeError('[KERNEL:OBJECT_REVOKED] Target object has been revoked').code)
      assert.equal('VAT_FATAL:METER_EXHAUSTED',
        pass.makeError('[KERNEL:VAT_FATAL:METER_EXHAUSTED] vat v1 ran out').code)
      assert.equal('BAD_PROMISE_RESOLUTION', pass.makeError('[KERNEL:BAD_PROMISE_RESOLUTION] x').code)
      assert.is_nil(pass.makeError('KERNEL:OBJECT_REVOKED no brackets').code)
      assert.is_nil(pass.makeError(' [KERNEL:OBJECT_REVOKED] not at the start').code)
    end)

    it('turns a non-string message into a string', function()
      assert.equal('42', pass.makeError(42).message)
      assert.equal('', pass.makeError().message)
    end)

    it('hides its metatable', function()
      local e = pass.makeError('boom')
      assert.has_error(function() setmetatable(e, nil) end)
      assert.is_nil(getmetatable(e).__tostring) -- a tag, not the metatable
      assert.has_error(function() getmetatable(e).__tostring = print end)
    end)
  end)

  describe('remotables and promises', function()
    it('are registered by identity', function()
      local obj = {}
      assert.is_false(pass.isRemotable(obj))
      assert.equal(obj, pass.registerRemotable(obj, 'Alleged: counter'))
      assert.is_true(pass.isRemotable(obj))
      assert.equal('Alleged: counter', pass.remotableIface(obj))
      assert.equal('remotable', pass.passStyleOf(obj))
      assert.is_false(pass.isRemotable({}))

      local p = setmetatable({}, { __index = {} })
      pass.registerPromise(p)
      assert.is_true(pass.isPromise(p))
      assert.equal('promise', pass.passStyleOf(p))
      assert.is_false(pass.isPromise({}))
    end)

    it('default the iface to Remotable, as Endo does', function()
      assert.equal('Remotable', pass.remotableIface(pass.registerRemotable({})))
    end)

    it('may have any metatable', function()
      local obj = setmetatable({}, { __index = function() return 1 end })
      pass.registerRemotable(obj, 'Alleged: x')
      assert.equal('remotable', pass.passStyleOf(obj))
    end)

    it('cannot be both', function()
      local p = pass.registerPromise({})
      assert.has_error(function() pass.registerRemotable(p, 'x') end)
      local r = pass.registerRemotable({}, 'x')
      assert.has_error(function() pass.registerPromise(r) end)
      assert.has_error(function() pass.registerRemotable('str', 'x') end)
    end)

    it('do not keep objects alive', function()
      local registry = setmetatable({}, { __mode = 'v' })
      registry[1] = pass.registerRemotable({}, 'x')
      registry[2] = pass.registerPromise({})
      collectgarbage()
      collectgarbage()
      assert.is_nil(registry[1])
      assert.is_nil(registry[2])
    end)
  end)

  describe('passStyleOf', function()
    it('names the primitive styles', function()
      assert.equal('undefined', pass.passStyleOf(nil))
      assert.equal('boolean', pass.passStyleOf(false))
      assert.equal('string', pass.passStyleOf(''))
      assert.equal('number', pass.passStyleOf(0))
      assert.equal('number', pass.passStyleOf(1.5))
      assert.equal('number', pass.passStyleOf(0 / 0))
      assert.equal('number', pass.passStyleOf(math.huge))
      assert.equal('number', pass.passStyleOf(2 ^ 53))
      assert.equal('number', pass.passStyleOf(9007199254740992))
      assert.equal('number', pass.passStyleOf(-9007199254740992))
      assert.equal('bigint', pass.passStyleOf(9007199254740993))
      assert.equal('bigint', pass.passStyleOf(-9007199254740993))
      assert.equal('bigint', pass.passStyleOf(math.mininteger))
    end)

    it('tells arrays from records', function()
      assert.equal('copyArray', pass.passStyleOf({ 1, 2, 3 }))
      assert.equal('copyArray', pass.passStyleOf({ [1] = 'a', [3] = 'c', [2] = 'b' }))
      assert.equal('copyArray', pass.passStyleOf(table.pack(1, nil, 3)))
      assert.equal('copyArray', pass.passStyleOf({ n = 3 , 'a' }))
      assert.equal('copyRecord', pass.passStyleOf({}))
      assert.equal('copyRecord', pass.passStyleOf({ a = 1 }))
      assert.equal('copyRecord', pass.passStyleOf({ n = 2 }))
      assert.equal('copyRecord', pass.passStyleOf({ ['1'] = 'a' }))
    end)

    it('classifies arrays with their length and contents', function()
      local style, len, t = pass.classify(table.pack(nil, 2, nil))
      assert.equal('copyArray', style)
      assert.equal(3, len)
      assert.equal(3, t.n)
      -- n alone is a record field: table.pack(nil) is a record, pass.array(nil) an array
      assert.equal('copyRecord', pass.classify(table.pack(nil)))
      assert.equal('copyArray', pass.classify(pass.array(nil)))
      local rstyle, keys = pass.classify({ b = 1, a = 2 })
      assert.equal('copyRecord', rstyle)
      table.sort(keys)
      assert.same({ 'a', 'b' }, keys)
    end)

    it('refuses what cannot pass, saying why', function()
      local cases = {
        { print, 'cannot pass function' },
        { coroutine.create(print), 'cannot pass thread (coroutine)' },
        { io.stdout, 'cannot pass userdata' },
        { setmetatable({}, {}), 'cannot pass table with a foreign metatable' },
        { { 1, 2, x = 3 }, 'cannot pass table with mixed integer and string keys' },
        { { [1.5] = 1 }, 'cannot pass table with a float key (1.5)' },
        { { [true] = 1 }, 'cannot pass table with a boolean key' },
        { { [{}] = 1 }, 'cannot pass table with a table key' },
        { { 1, nil, 3 }, 'cannot pass sparse array (index 2 is nil; set n as table.pack does)' },
        { { [2] = 'b' }, 'cannot pass sparse array (index 1 is nil; set n as table.pack does)' },
        { { [0] = 'z' }, 'cannot pass table with integer key 0 (array indexes start at 1)' },
        { { n = 1, 'a', 'b' }, 'cannot pass array with index 2 beyond its n (1)' },
        { { n = 1.5, 'a' }, 'cannot pass array whose n is not an integer (1.5)' },
      }
      for _, case in ipairs(cases) do
        assert.has_error(function() pass.passStyleOf(case[1]) end, case[2])
      end
    end)
  end)

  describe('symbols, byte arrays, big integers and tagged values', function()
    it('have their pass styles and read back what they were made of', function()
      local s, b, i = pass.symbol('hello'), pass.bytes('\0\255'), pass.bigint('-123456789012345678901234')
      local t = pass.makeTagged('copySet', { 1, 2 })
      assert.equal('symbol', pass.passStyleOf(s))
      assert.equal('byteArray', pass.passStyleOf(b))
      assert.equal('bigint', pass.passStyleOf(i))
      assert.equal('tagged', pass.passStyleOf(t))
      assert.equal('hello', s.name)
      assert.equal('\0\255', b.bytes)
      assert.equal(2, #b)
      assert.equal('-123456789012345678901234', i.digits)
      assert.equal('copySet', t.tag)
      assert.same({ 1, 2 }, { t.payload[1], t.payload[2] })
      assert.equal('symbol(hello)', tostring(s))
      assert.equal('byteArray(2 bytes)', tostring(b))
      assert.equal('-123456789012345678901234', tostring(i))
      assert.equal('tagged(copySet)', tostring(t))
    end)

    it('are one value per content, so == compares them and they can be keys', function()
      assert.equal(pass.symbol('a'), pass.symbol('a'))
      assert.are_not.equal(pass.symbol('a'), pass.symbol('b'))
      assert.equal(pass.bytes('xy'), pass.bytes('xy'))
      assert.equal(pass.bigint('+00123456789012345678901234'), pass.bigint('123456789012345678901234'))
      local set = { [pass.symbol('k')] = true }
      assert.is_true(set[pass.symbol('k')])
      -- A symbol is not the string of its name, nor a byte array its bytes.
      assert.are_not.equal('a', pass.symbol('a'))
      assert.are_not.equal(pass.symbol('a'), pass.bytes('a'))
      -- Tagged values are copy data, compared by identity as records are.
      assert.are_not.equal(pass.makeTagged('t', 1), pass.makeTagged('t', 1))
    end)

    it('are Lua integers when they fit in 64 bits', function()
      assert.equal(5, pass.bigint('5'))
      assert.equal('integer', math.type(pass.bigint('5')))
      assert.equal(math.maxinteger, pass.bigint('9223372036854775807'))
      assert.equal(math.mininteger, pass.bigint('-9223372036854775808'))
      assert.equal(0, pass.bigint('-0'))
      assert.equal(7, pass.bigint(7))
      assert.equal('table', type(pass.bigint('9223372036854775808')))
      assert.equal('table', type(pass.bigint('-9223372036854775809')))
    end)

    it('cannot be changed, and harden the payload of a tagged value', function()
      local s = pass.symbol('untouchable')
      assert.has_error(function() s.name = 'y' end, 'cannot modify a passable box')
      assert.has_error(function() setmetatable(s, nil) end)
      local payload = { a = { 1 } }
      local t = pass.makeTagged('t', payload)
      assert.has_error(function() t.payload = 2 end, 'cannot modify a passable box')
      assert.has_error(function() payload.a[2] = 2 end, 'cannot modify hardened table')
      assert.is_true(pass.isFrozen(s))
      assert.is_true(pass.isFrozen(t))
      -- What the codecs read cannot be changed by rawset either.
      rawset(s, 'name', 'forged')
      assert.equal('#"%untouchable"', require('ocap.marshal').serializeData(s).body)
    end)
  end)

  describe('harden', function()
    local function hardened()
      return pass.harden({ name = 'x', list = { 1, 2, 3 }, nested = { deep = { v = true } }, empty = pass.array() })
    end

    it('returns its argument and reads as before', function()
      local plain = { a = 1 }
      assert.equal(plain, pass.harden(plain))
      local t = hardened()
      assert.equal('x', t.name)
      assert.equal(3, #t.list)
      assert.equal(2, t.list[2])
      assert.is_true(t.nested.deep.v)
      local keys = {}
      for k in pairs(t) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ 'empty', 'list', 'name', 'nested' }, keys)
      local sum = 0
      for i, v in ipairs(t.list) do sum = sum + i * v end
      assert.equal(14, sum)
      assert.equal('1,2,3', table.concat(t.list, ','))
    end)

    it('refuses assignments, new keys and removals', function()
      local t = hardened()
      assert.has_error(function() t.name = 'y' end, 'cannot modify hardened table')
      assert.has_error(function() t.other = 1 end, 'cannot modify hardened table')
      assert.has_error(function() t.name = nil end, 'cannot modify hardened table')
      assert.has_error(function() t.list[1] = 9 end, 'cannot modify hardened table')
      assert.has_error(function() table.insert(t.list, 4) end, 'cannot modify hardened table')
      assert.has_error(function() t.nested.deep.v = false end, 'cannot modify hardened table')
      assert.equal('x', t.name)
      assert.equal(3, #t.list)
    end)

    it('refuses setmetatable and hides its metatable', function()
      local t = hardened()
      assert.has_error(function() setmetatable(t, nil) end)
      assert.equal('hardened', getmetatable(t))
    end)

    it('freezes nested tables and keeps array marks', function()
      local t = hardened()
      assert.is_true(pass.isFrozen(t))
      assert.is_true(pass.isFrozen(t.list))
      assert.is_true(pass.isFrozen(t.nested.deep))
      assert.is_true(pass.isArray(t.empty))
      assert.equal('copyArray', pass.passStyleOf(t.list))
      assert.equal('copyRecord', pass.passStyleOf(t.nested))
    end)

    it('is idempotent and terminates on cycles', function()
      local t = { a = {} }
      t.a.back = t
      t.self = t
      pass.harden(t)
      assert.equal(t, pass.harden(t))
      assert.equal(t, t.self)
      assert.equal(t, t.a.back)
      assert.is_true(pass.isFrozen(t.a))
    end)

    it('hardens a value nested 300,000 levels deep', function()
      -- A walk by recursion overflows a stack long before this depth.
      local t = {}
      local cur = t
      for _ = 1, 300000 do
        local n = {}
        cur[1] = n
        cur = n
      end
      assert.equal(t, pass.harden(t))
      assert.is_true(pass.isFrozen(cur))
      assert.has_error(function() cur.x = 1 end, 'cannot modify hardened table')
    end)

    it('exposes the contents for readers that go around metamethods', function()
      local t = pass.harden({ a = 1 })
      assert.is_nil(next(t))
      assert.same({ a = 1 }, pass.contents(t))
      local plain = {}
      assert.equal(plain, pass.contents(plain))
    end)

    it('leaves remotables, promises, errors, null and primitives alone', function()
      local r = pass.registerRemotable({ state = 1 }, 'x')
      local e = pass.makeError('boom')
      pass.harden({ r = r, e = e, n = pass.null, s = 'str' })
      r.state = 2
      e.extra = true
      assert.equal(2, r.state)
      assert.is_true(e.extra)
      assert.equal(5, pass.harden(5))
      assert.is_false(pass.isFrozen({}))
      assert.is_true(pass.isFrozen('str'))
      assert.is_true(pass.isFrozen(r))
    end)
  end)
end)
