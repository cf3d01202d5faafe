--- Boots liveslots inside a vat's Lua state. The kernel calls
--- boot(syscall, info) once, then dispatch(...) for every delivery, or
--- dispatchCall(...) or dispatchSettle(...) for one it decoded itself,
--- followed by the promise core's drain() when its queue has work (boot
--- returns drain for that: core/ldeliver.c).
local liveslots = require 'ocap.liveslots'
local promise = require 'ocap.promise'
local api = require 'ocap.api'

local M = {}

-- Captured before any vat code runs, so that a vat which replaces its
-- global require cannot change what the lazy parts below load.
local require, rawset, setmetatable, pairs, pcall = require, rawset, setmetatable, pairs, pcall

-- What a vat's boot hands out but a vat seldom runs (the runtime's log,
-- the advice on an absent endowment, exitVat, the logger) is in
-- ocap.vatboot.rare, reached through C trampolines that load it on their
-- first call: an idle vat keeps none of its code.
local lazy, startVat = require('ocap.smallcaps').lazy, require('ocap.smallcaps').startVat
local RARE = 'ocap.vatboot.rare'

--- Boots the vat runtime.
---@param syscall table the C syscalls
---@param info string JSON-free "vatId name" pair
---@param env table|nil the vat's globals (the runtime has its own)
function M.boot(syscall, info, env)
  local vatId, name = info:match('^(%S+)%s*(.*)$')
  local ctx = { syscall = syscall, vatId = vatId, env = env or _ENV }
  local log = lazy(require, RARE, 'log', ctx)
  local explain = lazy(require, RARE, 'explain', ctx)
  local ls = liveslots.make({ syscall = syscall, vatId = vatId, kind = 'vat', log = log, explain = explain })
  ctx.ls = ls
  promise.setUnhandledRejectionHandler(lazy(require, RARE, 'unhandled', ctx))
  -- One prototype for the four forwarders, which tail-call the kit's
  -- function so that its errors name the vat code that called it.
  local function forward(kit, fname)
    return function(...) return ls[kit]()[fname](...) end
  end
  local ocap = api.make({
    makeScalarMapStore = forward('stores', 'makeScalarMapStore'),
    prepareExo = forward('durable', 'prepareExo'),
    prepareExoClass = forward('durable', 'prepareExoClass'),
    prepareExoClassKit = forward('durable', 'prepareExoClassKit'),
  }, function() return ls.marshal end)

  -- Loads the vat's code and runs buildRootObject (C, so that no vat keeps
  -- its code and messages through its start).
  ls.startVat = startVat(ls, ctx, explain, name, require, pcall)

  -- Endowments a vat may ask for (VatConfig.globals): the kernel installs
  -- the requested ones as globals at boot, and ocap.vatboot.endow loads
  -- only when it asks for the first one.
  local endow = setmetatable({}, {
    __index = function(t, k)
      local e = require('ocap.vatboot.endow').make(syscall, ls, log, explain, lazy(require, RARE, 'makeLogger', ctx))
      setmetatable(t, nil)
      for n, f in pairs(e) do rawset(t, n, f) end
      return e[k]
    end,
  })

  -- A vat makes one liveslots and one ocap table: the code that makes
  -- them (about 7 KiB of prototypes, which the closures they made do not
  -- need) goes with this boot code, as no other code in a vat calls it.
  liveslots.make, api.make = nil, nil
  return ls.dispatch, ocap, endow, ls.dispatchCall, ls.dispatchSettle, promise.drain
end

return M
