-- A vat that uses the IO channels it got at bootstrap (kept in baggage).
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  local function chan(name) return baggage:get('io:' .. name) end
  local function try(p)
    local ok, v = pcall(ocap.await, p)
    if ok then return { ok = true, value = v } end
    return { ok = false, error = type(v) == 'table' and v.message or tostring(v) }
  end
  return ocap.makeDefaultExo('ioUser', {
    bootstrap = function(_, _vats, services)
      local names = {}
      for name, s in pairs(services) do
        baggage:init('io:' .. name, s)
        names[#names + 1] = name
      end
      table.sort(names)
      return names
    end,
    read = function(_, name) return try(E(chan(name)).read()) end,
    write = function(_, name, s) return try(E(chan(name)).write(s)) end,
    address = function(_, name) return E(chan(name)).address():await() end,
    -- Reads lines until the end and answers each with its upper case.
    echo = function(_, name)
      local n = 0
      while true do
        local line = E(chan(name)).read():await()
        if line == nil then return n end
        E(chan(name)).write(line:upper()):await()
        n = n + 1
      end
    end,
    -- Answers n lines with their upper case.
    echoN = function(_, name, n)
      for _ = 1, n do
        local line = E(chan(name)).read():await()
        E(chan(name)).write(line:upper()):await()
      end
      return n
    end,
    -- Reads to the end and says how many lines there were.
    count = function(_, name)
      local n = 0
      while E(chan(name)).read():await() ~= nil do n = n + 1 end
      return n
    end,
    ping = function(_, x) return x end,
  })
end

return M
