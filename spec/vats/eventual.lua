-- A vat whose first E() call is one a spec chooses: E()'s code
-- (ocap.liveslots.eventual) loads then, and must behave as if it had
-- always been there.
local ocap = require 'ocap'

local MOD = {}

function MOD.buildRootObject()
  local root
  root = ocap.makeDefaultExo('eventual', {
    ping = function(_, x) return x end,
    -- E(nil) as the vat's first E() call, then again: each error names
    -- the line that called E, or nothing when that call was a tail call
    -- (the caller's frame is gone).
    nilTarget = function(_, tail)
      local errors = {}
      for i = 1, 2 do
        local _, err = pcall(function()
          if tail then return ocap.E(nil) end
          local p = ocap.E(nil)
          return p
        end)
        errors[i] = err
      end
      return errors
    end,
    -- A field of E replaced before the first E() call stays as the vat
    -- made it; the others work.
    replaced = function()
      local mine = function() return 'mine' end
      ocap.E.get = mine
      local got = ocap.E(root).ping(7):await()
      local later = ocap.await(ocap.E.when(ocap.Promise.resolve(8), function(v) return v + 1 end))
      return { got, later, ocap.E.get == mine, ocap.E.get() }
    end,
  })
  return root
end

return MOD
