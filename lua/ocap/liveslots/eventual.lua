--- E() and what it makes: the proxies whose methods send, E.sendOnly,
--- E.when and E.get, and the module functions other runtime modules call
--- with them (refOf, setPipeline, stoppedMessage). An idle vat, which
--- sends nothing, never carries this code: ocap.liveslots keeps only E's
--- table, whose fields, like its own refOf, setPipeline and
--- stoppedMessage, are C trampolines (ocap.smallcaps' lazy) to this
--- module, and whose __call is a small Lua function that loads it, until
--- their first call, which puts the functions below in their place
--- (install), so that later sends pay no trampoline.
local promise = require 'ocap.promise'

local M = {}

local setmetatable, getmetatable, rawget, rawset, rawequal, select, error, type =
  setmetatable, getmetatable, rawget, rawset, rawequal, select, error, type
local pack = table.pack
-- Captured when the module loads: ocap.liveslots.rare loads with the
-- runtime's require.
local require = require
local RARE = 'ocap.liveslots.rare'

-- ocap.liveslots' table of what it shares with this module and with
-- ocap.liveslots.rare: { presenceInfo, pipelines, instances, E, M (the
-- ocap.liveslots module), eventualSend, localCall, and what E's __call
-- and fields are until install: callT, sendOnlyT, whenT, getT }; set by
-- install.
local cx
local presenceInfo, pipelines, instances

-- ocap.liveslots.rare, initialized with cx on first use.
local rareModule
local function rare()
  if not rareModule then
    rareModule = require(RARE)
    rareModule.init(cx)
  end
  return rareModule
end

--- Wraps a target for eventual send.
local proxyCache = setmetatable({}, { __mode = 'k' })

--- Makes E(target) call send(method, args, wantResult) at once, for a
--- remotable or a pending promise (promise pipelining); nil stops it.
local function setPipeline(target, send)
  pipelines[target] = send
end

--- What a presence of a stopped kernel (kept across a restart) says.
local function stoppedMessage(target, vref)
  return rare().stoppedMessage(target, vref)
end

local function eventualSend(target, method, args, wantResult)
  local info = presenceInfo[target]
  if info then
    -- A presence that sends its messages itself (a remote peer's object
    -- the host holds) skips the kernel: the message goes on the wire.
    local pipe = pipelines[target]
    if pipe then return pipe(method, args, wantResult) end
    if info.ls.stopped then error(stoppedMessage(target, info.vref), 3) end
    return info.ls.sendTo(info.vref, method, args, wantResult)
  end
  return rare().send(target, method, args, wantResult)
end

local function makeProxy(target, wantResult)
  -- A presence's instance and ref never change: its sends go straight
  -- there, unless it sends them itself (a remote peer's object).
  local info = not pipelines[target] and presenceInfo[target]
  local proxy
  -- Whether a sender's first argument is the proxy itself (a call made as
  -- E(x):method(...)): a raw lookup, which no metamethod of the argument
  -- can answer, as no equality test would, and no function call.
  local itself = {}
  proxy = setmetatable({}, {
    -- Each method's sender is made once and kept in the proxy itself, so
    -- that later sends find it without calling this.
    __index = function(_, method)
      local f
      if info then
        -- A presence's sends hand their arguments on as they come.
        f = instances[info.ls][2](info.vref, method, wantResult, itself,
          function(vref) return stoppedMessage(target, vref) end)
      else
        f = function(...)
          local args
          if itself[...] then
            args = pack(select(2, ...))
          else
            args = pack(...)
          end
          return eventualSend(target, method, args, wantResult)
        end
      end
      rawset(proxy, method, f)
      return f
    end,
    __newindex = function() error('E proxy is read-only', 2) end,
  })
  itself[proxy] = true
  return proxy
end

--- E(target).method(...) -> promise; E(target):method(...) works too.
local function call(_, target)
  local p = proxyCache[target]
  if p then return p end
  if target == nil then error('E: target is nil', 2) end
  p = makeProxy(target, true)
  proxyCache[target] = p
  return p
end

local function sendOnly(target) return makeProxy(target, false) end

local function when(v, onFulfilled, onRejected)
  return promise.resolve(v):next(onFulfilled, onRejected)
end

local function get(target) return rare().get(target) end

--- The kref or vref behind a presence or kernel-known promise, if any.
local function refOf(v)
  local pi = presenceInfo[v]
  if pi then return pi.vref, pi.ls end
  return rare().promiseRef(v)
end

--- Takes ocap.liveslots' shared table c (once), and puts this module's
--- functions where E and ocap.liveslots have a trampoline to them: a
--- field vat code replaced stays as it made it. Only the table of the
--- state's own ocap.liveslots counts: vat code, which gets a read-only
--- view of that module and never the module itself, cannot make one.
---@param c table
function M.install(c)
  if cx or not rawequal(c.M, require('ocap.liveslots')) then return end
  cx = c
  presenceInfo, pipelines, instances = c.presenceInfo, c.pipelines, c.instances
  c.eventualSend = eventualSend
  local E, mt = c.E, getmetatable(c.E)
  if type(mt) == 'table' and rawequal(rawget(mt, '__call'), c.callT) then rawset(mt, '__call', call) end
  if rawequal(rawget(E, 'sendOnly'), c.sendOnlyT) then rawset(E, 'sendOnly', sendOnly) end
  if rawequal(rawget(E, 'when'), c.whenT) then rawset(E, 'when', when) end
  if rawequal(rawget(E, 'get'), c.getT) then rawset(E, 'get', get) end
  local ls = c.M
  ls.refOf, ls.setPipeline, ls.stoppedMessage = refOf, setPipeline, stoppedMessage
end

-- The trampolines' ends: each installs, then does what it stands for.
-- E's first __call (ocap.liveslots) tail-calls this, which tail-calls
-- E's own: E(nil)'s error then names the same caller as it does later.
function M.call(c, e, target)
  M.install(c)
  return call(e, target)
end
function M.sendOnly(c, target) M.install(c) return sendOnly(target) end
function M.when(c, v, onFulfilled, onRejected) M.install(c) return when(v, onFulfilled, onRejected) end
function M.get(c, target) M.install(c) return get(target) end
function M.refOf(c, v) M.install(c) return refOf(v) end
function M.setPipeline(c, target, send) M.install(c) return setPipeline(target, send) end
function M.stoppedMessage(c, target, vref) M.install(c) return stoppedMessage(target, vref) end

return M
