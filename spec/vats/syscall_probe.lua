-- A vat that looks for the kernel's raw syscall table everywhere its code
-- can reach: globals, every runtime module, its powers, its baggage, the
-- runtime instance behind a presence. It reports every table holding
-- syscall names.
local ocap = require 'ocap'

local M = {}

-- Names only the raw syscall table has.
local SYSCALLS = {
  'send', 'sendNumbered', 'subscribe', 'resolve', 'exit', 'vatstoreGet', 'vatstoreSet', 'vatstoreDelete',
  'vatstoreNext', 'log', 'traceback', 'timerStart', 'timerStop',
}

local RUNTIME = {
  'ocap', 'ocap.pass', 'ocap.pass.boxes', 'ocap.pass.style', 'ocap.promise', 'ocap.promise.combinators',
  'ocap.marshal', 'ocap.marshal.reference', 'ocap.hex', 'ocap.exo', 'ocap.stores', 'ocap.logger', 'ocap.guards',
  'ocap.durable', 'ocap.vom', 'ocap.liveslots', 'ocap.liveslots.gc', 'ocap.liveslots.rare',
  'ocap.liveslots.kits', 'ocap.liveslots.eventual', 'ocap.api',
  'ocap.vatboot', 'ocap.vatboot.endow', 'ocap.vatboot.explain', 'cjson',
}

--- Walks every table reachable from roots through keys, values and
--- readable metatables; returns the paths of tables with syscall names.
local function search(roots)
  local seen, found, queue = {}, {}, {}
  for name, v in pairs(roots) do queue[#queue + 1] = { v, name } end
  local i = 1
  while i <= #queue do
    local v, path = queue[i][1], queue[i][2]
    i = i + 1
    if type(v) == 'table' and not seen[v] then
      seen[v] = true
      local hits = {}
      for _, s in ipairs(SYSCALLS) do
        local ok, x = pcall(rawget, v, s)
        if ok and type(x) == 'function' then hits[#hits + 1] = s end
      end
      -- Several hits in one table look like a syscall table; one name
      -- alone (a logger's log, a promise kit's resolve) does not.
      if #hits >= 2 then found[#found + 1] = path .. ' {' .. table.concat(hits, ',') .. '}' end
      for k, x in next, v do
        queue[#queue + 1] = { k, path .. '.<key>' }
        queue[#queue + 1] = { x, path .. '.' .. tostring(k) }
      end
      local mt = getmetatable(v)
      if type(mt) == 'table' then queue[#queue + 1] = { mt, path .. '.<mt>' } end
    end
  end
  return found
end

function M.buildRootObject(vatPowers, _parameters, baggage)
  local peer
  return ocap.makeDefaultExo('probe', {
    setPeer = function(_, p) peer = p end,
    search = function()
      local roots = { _ENV = _ENV, vatPowers = vatPowers, baggage = baggage }
      for _, name in ipairs(RUNTIME) do
        local ok, mod = pcall(require, name)
        if ok then roots[name] = mod end
      end
      if peer then
        -- The runtime instance that owns a presence.
        local _, ls = require('ocap.liveslots').refOf(peer)
        roots.liveslots = ls
      end
      return search(roots)
    end,
  })
end

return M
