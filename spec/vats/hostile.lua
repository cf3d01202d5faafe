-- A vat that tries to escape its sandbox, one attempt per method. Each
-- attempt returns { ok = boolean, err = message } so specs can check that
-- it failed, and with what message.
local ocap = require 'ocap'

local M = {}

local function try(f, ...)
  local ok, err = pcall(f, ...)
  if type(err) == 'table' then err = err.message or tostring(err) end
  return { ok = ok, err = err ~= nil and tostring(err) or nil }
end

function M.buildRootObject(vatPowers, _parameters, baggage)
  local exo = ocap.makeDefaultExo('victim', { hello = function() return 'hello' end })
  local frozen = ocap.harden({ a = 1, nested = { b = 2 } })
  local attempts = {
    io = function() return io.open('/etc/passwd') end,
    os = function() return os.execute('true') end,
    debug = function() return debug.getinfo(1) end,
    package = function() return package.loaded end,
    load = function() return load('return 1') end,
    -- luacheck: push ignore 113 (loadstring is Lua 5.1's: the attempt is the point)
    loadstring = function() return loadstring('return 1') end,
    -- luacheck: pop
    dofile = function() return dofile('/etc/passwd') end,
    loadfile = function() return loadfile('/etc/passwd') end,
    collectgarbage = function() return collectgarbage('count') end,
    ['string.dump'] = function() return string.dump(function() end) end,
    ['require outside the bundle'] = function() return require('os') end,
    ['require the kernel'] = function() return require('ocap.kernel') end,
    ['require the C core'] = function() return require('ocap.core') end,
    ['string metatable'] = function()
      local mt = getmetatable('')
      if type(mt) ~= 'table' then error('the string metatable is locked: ' .. tostring(mt)) end
      mt.__index.upper = function() return 'pwned' end
    end,
    ['string method'] = function()
      string.upper = function() return 'pwned' end -- luacheck: ignore 122 (the attack under test)
      return ('x'):upper()
    end,
    ['setmetatable on an exo'] = function() return setmetatable(exo, {}) end,
    ['getmetatable of an exo'] = function()
      local mt = getmetatable(exo)
      if type(mt) ~= 'table' then error('the metatable is locked: ' .. tostring(mt)) end
      return mt.__index
    end,
    ['assign to an exo'] = function() exo.hello = function() return 'pwned' end end,
    ['rawset on an exo'] = function() rawset(exo, 'hello', function() return 'pwned' end) end,
    ['assign to a hardened table'] = function() frozen.a = 2 end,
    ['assign to a nested hardened table'] = function() frozen.nested.b = 3 end,
    ['rawset on a hardened table'] = function() rawset(frozen, 'a', 2) end,
    ['setmetatable on a hardened table'] = function() return setmetatable(frozen, nil) end,
    ['setmetatable on baggage'] = function() return setmetatable(baggage, {}) end,
    ['rawset on baggage'] = function() rawset(baggage, 'get', function() return 'pwned' end) end,
    ['global leak'] = function() _G.leaked = true; return rawget(_G, 'leaked') end,
    -- The metatables of vatPowers and of the ocap table are not locked:
    -- their __index, which fills in a field with a raw write, can be
    -- called on anything.
    ["vatPowers' __index on a string"] = function() return getmetatable(vatPowers).__index('x', 'logger') end,
    ["vatPowers' __index on an exo"] = function() return getmetatable(vatPowers).__index(exo, 'logger') end,
    ["ocap's __index on a string"] = function() return getmetatable(ocap).__index('x', 'symbol') end,
    ["ocap's __index on a hardened table"] = function() return getmetatable(ocap).__index(frozen, 'M') end,
  }
  return ocap.makeDefaultExo('hostile', {
    attempt = function(_, name)
      local f = attempts[name]
      if not f then error('no attempt named ' .. name) end
      return try(f)
    end,
    names = function()
      local out = {}
      for name in pairs(attempts) do out[#out + 1] = name end
      table.sort(out)
      return out
    end,
    stillFine = function() return exo:hello() .. ' ' .. frozen.a .. ' ' .. ('x'):upper() end,
    patterns = function()
      -- Everyday patterns on long strings still work.
      local long = '  ' .. ('word=value '):rep(2000) .. '  '
      local trimmed = long:gsub('^%s*(.-)%s*$', '%1')
      local pairs_ = 0
      for _ in long:gmatch('(%w+)=(%w+)') do pairs_ = pairs_ + 1 end
      return { #trimmed, pairs_, (long:find('value', 1, true)) }
    end,
    presenceString = function(_, p) return tostring(p) end,
    ping = function(_, i) return i end,
    never = function() return ocap.makePromiseKit().promise end,
    -- Has liveslots resolve, as a message's result, the promise number
    -- how names: the number of p (a promise it holds, decided by the
    -- host), one it was never given, or numbers past what the kernel
    -- keeps as codes. The kernel checks the number as it would the vpid.
    forgeResult = function(_, p, how)
      local vpid, ls = require('ocap.liveslots').refOf(p)
      local numbers = { held = tonumber(vpid:match('^p%-(%d+)$')), unknown = 777,
        huge = 9007199254740992, max = math.maxinteger, zero = 0 }
      ls.dispatchCall('o+0', numbers[how], 'ping', 1)
      return 'forged'
    end,
    forge = function(_, presence)
      -- The runtime is reachable, but the kernel checks every syscall: a
      -- vref this vat was never given is fatal to the vat.
      if not baggage:has('forgeries') then baggage:init('forgeries', 0) end
      baggage:set('forgeries', baggage:get('forgeries') + 1)
      ocap.E.sendOnly(presence).increment() -- must vanish with the crank
      local _, ls = require('ocap.liveslots').refOf(presence)
      ls.sendTo('o-999', 'steal', table.pack(), true)
      return 'forged'
    end,
  })
end

return M
