-- A vat that makes and drops presences of another vat's objects, and
-- holds them in the ways garbage collection must respect (heap, baggage,
-- a pending await), for spec/gc_liveslots_spec.lua.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

function M.buildRootObject(_vatPowers, _parameters, baggage)
  local maker -- the other vat's root, which makes ephemeral objects
  local kept = {}
  local gate -- settles the await of hold
  return ocap.makeDefaultExo('gcHolder', {
    bootstrap = function(_, vats)
      maker = vats.maker
      return 'ready'
    end,
    -- Gets n objects from the maker, calls each once, and lets go of it.
    churn = function(_, n)
      for _ = 1, n do
        local t = E(maker).makeEphemeral():await()
        assert(E(t).hi():await() == 'hi')
      end
      return n
    end,
    -- Gets one object and keeps it in the heap.
    keepOne = function()
      kept[#kept + 1] = E(maker).makeEphemeral():await()
      return #kept
    end,
    forget = function() kept = {} end,
    callKept = function(_, i) return E(kept[i]).hi():await() end,
    -- Gets one object and keeps only its presence in baggage.
    storeOne = function(_, key)
      baggage:init(key, E(maker).makeEphemeral():await())
    end,
    callStored = function(_, key) return E(baggage:get(key)).hi():await() end,
    unstore = function(_, key) baggage:delete(key) end,
    -- Gets one object and holds it only on the stack of a coroutine that
    -- awaits the gate; calls it once the gate opens.
    hold = function()
      local t = E(maker).makeEphemeral():await()
      local kit = ocap.makePromiseKit()
      gate = kit.resolve
      kit.promise:await()
      return E(t).hi():await()
    end,
    open = function()
      gate()
      gate = nil
    end,
  })
end

return M
