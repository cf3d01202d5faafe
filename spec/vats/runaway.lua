-- A vat that misbehaves on demand: loops, recursion and memory bombs.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(vatPowers)
  local kept = {}
  return ocap.makeDefaultExo('runaway', {
    ping = function(_, i) return i end,
    loop = function() while true do end end,
    -- Host code (the logger) runs in the delivery before the loop.
    logThenLoop = function()
      vatPowers.logger:log('looping')
      while true do end
    end,
    loopInPcall = function()
      while true do pcall(function() while true do end end) end
    end,
    loopAcrossCoroutines = function()
      local cos = {}
      for i = 1, 4 do cos[i] = coroutine.wrap(function() while true do coroutine.yield() end end) end
      while true do for i = 1, 4 do cos[i]() end end
    end,
    recurse = function()
      local function f(n) return 1 + f(n + 1) end
      return f(1)
    end,
    recurseInPcall = function()
      local function f(n) return 1 + f(n + 1) end
      while true do pcall(f, 1) end
    end,
    stringBomb = function()
      local s = 'x'
      while true do s = s .. s end
    end,
    repBomb = function() return #string.rep('x', 1 << 40) end,
    concatBomb = function()
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep('y', 1000) end
      return #table.concat(t)
    end,
    tableBombInPcall = function()
      while true do
        pcall(function()
          for i = 1, 1e9 do kept[#kept + 1] = { i } end
        end)
      end
    end,
    -- Turns that each queue the next: the turn queue is C, so only its
    -- per-turn charge and the callbacks' own instructions stop it.
    turnLoop = function()
      local function again() ocap.Promise.resolve():next(again) end
      again()
    end,
    -- Reactions piled on one pending promise until memory runs out.
    reactionBomb = function()
      local p = ocap.makePromiseKit().promise
      while true do p:next() end
    end,
    waitForever = function() return ocap.makePromiseKit().promise end,
  })
end

return M
