-- Many durable instances kept in a store (spec/virtual_spec.lua,
-- bench/run.lua): the vat's heap holds only the ones in use.
local ocap = require 'ocap'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  local makeCounter = ocap.prepareExoClass(baggage, 'Counter', nil,
    function(n) return { n = n, peer = false } end, {
      get = function(ctx) return ctx.state.n end,
      add = function(ctx, by)
        ctx.state.n = ctx.state.n + by
        return ctx.state.n
      end,
      peer = function(ctx) return ctx.state.peer end,
      setPeer = function(ctx, p) ctx.state.peer = p end,
    })
  local makePair = ocap.prepareExoClassKit(baggage, 'Pair', nil,
    function(v) return { v = v } end, {
      reader = { read = function(ctx) return ctx.state.v end },
      writer = { write = function(ctx, v) ctx.state.v = v end },
    })
  if not baggage:has('things') then baggage:init('things', ocap.makeScalarMapStore('things')) end
  local things = baggage:get('things')

  return ocap.makeDefaultExo('virtual', {
    -- Makes counters first .. first + count - 1, each kept in `things`
    -- under its number, starting at its number.
    makeMany = function(_, first, count)
      for i = first, first + count - 1 do things:init(i, makeCounter(i)) end
      return things:getSize()
    end,
    -- Makes counters and keeps nothing of them.
    makeLoose = function(_, count)
      for i = 1, count do makeCounter(i) end
    end,
    add = function(_, i, by) return things:get(i):add(by) end,
    get = function(_, i) return things:get(i):get() end,
    -- The sum of the counters first .. last, each paged in in turn.
    sum = function(_, first, last)
      local total = 0
      for i = first, last do total = total + things:get(i):get() end
      return total
    end,
    drop = function(_, i) things:delete(i) end,
    dropMany = function(_, first, count)
      for i = first, first + count - 1 do things:delete(i) end
      return things:getSize()
    end,
    -- Counter i (the kernel now holds it).
    counter = function(_, i) return things:get(i) end,
    -- Counter i's state holds counter j.
    link = function(_, i, j) things:get(i):setPeer(things:get(j)) end,
    peerOf = function(_, i)
      local p = things:get(i):peer()
      return p and p:get()
    end,
    -- Whether two lookups of counter i give the same representative.
    same = function(_, i)
      local a = things:get(i)
      return rawequal(a, things:get(i))
    end,
    -- A store keyed by counter i: keeps v under it (when given), then
    -- looks it up with a representative got afresh.
    keyedBy = function(_, i, v)
      if not baggage:has('keyed') then baggage:init('keyed', ocap.makeScalarMapStore('keyed')) end
      local keyed = baggage:get('keyed')
      if v ~= nil then keyed:init(things:get(i), v) end
      local again = things:get(i)
      return { keyed:has(again), keyed:get(again) }
    end,
    makePair = function(_, key, v)
      local kit = makePair(v)
      baggage:init(key, kit.reader)
      return kit.writer
    end,
    read = function(_, key) return baggage:get(key):read() end,
    toBaggage = function(_, key, i) baggage:init(key, things:get(i)) end,
    fromBaggage = function(_, key) return baggage:get(key):get() end,
  })
end

return M
