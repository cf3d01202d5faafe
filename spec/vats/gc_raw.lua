-- A vat that calls the kernel's GC syscalls itself, through its runtime
-- (reachable from any presence, as spec/vats/hostile.lua shows), so that
-- specs drive the kernel's side of garbage collection without relying on
-- the runtime to decide what to drop.
local ocap = require 'ocap'
local liveslots = require 'ocap.liveslots'

local M = {}

function M.buildRootObject(_vatPowers, _parameters, _baggage)
  local held = {} -- vref -> presence, kept so the runtime keeps them
  local ls -- this vat's runtime, found through the first presence kept
  local count = 0
  local made = {}

  --- Runs the syscalls of steps ({ name, vrefs } each) in order. An
  --- illegal one raises; the kernel has marked the vat, whatever a pcall
  --- here would do.
  local function run(steps)
    for _, s in ipairs(steps) do
      local ok, err = pcall(ls.gcSyscall[s[1]], s[2])
      if not ok then error(err, 0) end
    end
    return true
  end

  return ocap.makeDefaultExo('gcRaw', {
    bootstrap = function() end,
    --- Exports a new object and returns it.
    make = function(_, name)
      local thing = ocap.makeDefaultExo('thing', { name = function() return name end })
      made[#made + 1] = thing
      return thing
    end,
    --- Keeps a presence and returns its vref in this vat.
    keep = function(_, p)
      local vref
      vref, ls = liveslots.refOf(p)
      held[vref] = p
      return vref
    end,
    --- Whether it keeps a presence for vref.
    holds = function(_, vref) return held[vref] ~= nil end,
    --- The vref of one of this vat's own exports (made by `make`).
    exportRef = function(_, i) return ls.refOf(made[i]) end,
    --- Runs steps; p, a presence, finds the runtime after a restart.
    gc = function(_, steps, p)
      if p then ls = select(2, liveslots.refOf(p)) end
      return run(steps)
    end,
    --- Sends count() to a peer, then runs steps: when a step is illegal,
    --- the send must vanish with the crank.
    sendThenGc = function(_, peer, steps)
      ocap.E.sendOnly(peer).bump()
      return run(steps)
    end,
    bump = function() count = count + 1 end,
    count = function() return count end,
    never = function() return ocap.makePromiseKit().promise end,
  })
end

return M
