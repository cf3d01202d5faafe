--- What a liveslots instance runs only now and then: deliveries other
--- than a message or a notify of one resolution (several resolutions at
--- once, timers, start, reap points that have something to look at, the
--- GC deliveries, stop), messages to objects that are gone or to answers
--- a remote peer pipelines, E() of anything but a presence, and the part
--- of the instance's API that other modules call now and then. An idle
--- vat, or one that only serves and sends to presences, never carries this
--- code: it loads on first use. ocap.liveslots makes one kit per instance
--- and shares its tables and functions with it.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'

local M = {}

local next, ipairs, error, tostring, type, pcall, xpcall, rawset, rawequal, setmetatable = next, ipairs, error,
  tostring, type, pcall, xpcall, rawset, rawequal, setmetatable
local ssub, sfind = string.sub, string.find
-- Captured when the module loads: the kits load with the runtime's require.
local require = require
local unpack = table.unpack
local onSettle, pstate, isPromise = promise.onSettle, promise.state, pass.isPromise
local trackedKey = promise.trackedKey
local resolvePromise, rejectPromise, settleAndResume = promise.resolvePromise, promise.rejectPromise,
  promise.settleAndResume

local function ignore() end
local KITS = 'ocap.liveslots.kits'

--- The vpid of a key of a liveslots instance's pending table: a vat keys
--- the results it awaits ("p+<N>") by the number N.
local function vpidString(key)
  if type(key) == 'number' then return 'p+' .. key end
  return key
end

-- What the module shares with ocap.liveslots (M.init).
local shared

--- Takes what ocap.liveslots shares with it and with
--- ocap.liveslots.eventual: { presenceInfo, pipelines, instances, M (the
--- ocap.liveslots module), eventualSend (false until the eventual module
--- loads), localCall = function(target, method, args), ... }. Only the
--- table of the state's own ocap.liveslots counts: vat code, which gets a
--- read-only view of that module and never the module itself, cannot
--- make one.
---@param s table
function M.init(s)
  if rawequal(s.M, require('ocap.liveslots')) then shared = s end
end

--- E()'s send (ocap.liveslots.eventual's), which loads it if need be.
local function eventualSend(...)
  if not shared.eventualSend then require('ocap.liveslots.eventual').install(shared) end
  return shared.eventualSend(...)
end

--- What a presence of a stopped kernel (kept across a restart) says
--- (ocap.liveslots' stoppedMessage).
function M.stoppedMessage(target, vref)
  return ('%s (%s) belongs to a stopped kernel: get it again from the running one, '
    .. 'e.g. kernel:getPresence(%q)'):format(tostring(target), vref, vref)
end

--- The vpid behind a kernel-known promise, and its instance (ocap.liveslots'
--- refOf, for what is not a presence).
function M.promiseRef(v)
  for ls, instance in next, shared.instances do
    local key = trackedKey(v, instance[1])
    if key then return vpidString(key), ls end
  end
end

--- Removes the "chunk:line: " position Lua adds to string errors.
---@param msg string
---@return string
function M.stripPosition(msg)
  local s, e = sfind(msg, '^[^\n]-:%d+: ')
  if s then return ssub(msg, e + 1) end
  return msg
end

--- Turns whatever a method raised into its rejection reason: the value a
--- caller gets whether the call went through the kernel or stayed in one
--- Lua state. A string loses the position Lua put in front of it; an error
--- keeps what crosses the kernel (message and name; its code follows from
--- the message); other passable data stays as it is; anything else
--- becomes an error carrying its tostring.
---@param e any
---@return any reason
function M.normalizeError(e)
  if pass.isError(e) then
    if e.code == pass.kernelErrorCode(e.message) and e.errors == nil then return e end
    return pass.makeError(e.message, e.name)
  end
  if type(e) == 'string' then return pass.makeError(M.stripPosition(e)) end
  if pcall(pass.passStyleOf, e) then return e end
  return pass.makeError(tostring(e))
end
local normalizeError = M.normalizeError

--- A caller's ended(target, method, ok, r) (ocap.liveslots' makeCaller):
--- turns the outcome of a method's xpcall into (ok, result or normalized
--- reason), logging a failure once, at warn, with its traceback at debug.
---@param c table the caller's { log, explain, last traceback or false, handler }
function M.ended(c, target, method, ok, r)
  if ok then return true, r end
  if type(r) == 'string' then
    r = c[2](r)
    local log, trace = c[1], c[3]
    log('warn', ('%s: %q failed: %s'):format(pass.remotableIface(target) or 'object', method, r))
    if trace then log('debug', 'method failed', { traceback = trace }) end
    c[3] = false
  end
  return false, normalizeError(r)
end

--- A caller's call(target, method, args): runs a method of a local object
--- and raises, if it fails, the normalized reason.
---@param c table the caller's { log, explain, last traceback or false, handler }
---@param ended function the caller's ended
---@param findMethod fun(target: any, method: string): function|nil
function M.callMethod(c, ended, findMethod, target, method, args)
  local fn = findMethod(target, method)
  if not fn then
    error(pass.makeError(('%s has no method %q'):format(
      pass.remotableIface(target) or tostring(target), tostring(method)), 'TypeError'), 0)
  end
  local ok, r = ended(target, method, xpcall(fn, c[4], target, unpack(args, 1, args.n or #args)))
  if not ok then error(r, 0) end
  return r
end

--- E()'s send to anything but a presence (ocap.liveslots' eventualSend
--- handles those): a promise, a local exo, or a target that sends its
--- messages itself.
function M.send(target, method, args, wantResult)
  local pipe = shared.pipelines[target]
  if isPromise(target) then
    local st, v = pstate(target)
    if st == 'fulfilled' then return eventualSend(v, method, args, wantResult) end
    if st == 'rejected' then return promise.reject(v) end
    for pls, instance in next, shared.instances do
      local key = trackedKey(target, instance[1])
      if key then
        if pls.pending[key] then return pls.sendTo(vpidString(key), method, args, wantResult) end
        break
      end
    end
    if pipe then return pipe(method, args, wantResult) end
    return target:next(function(t) return eventualSend(t, method, args, true) end)
  end
  if pipe then return pipe(method, args, wantResult) end
  if pass.isRemotable(target) then
    -- A local exo: called in a later turn, and failing with the same
    -- reason as it would through the kernel.
    return promise.resolve(nil):next(function()
      return shared.localCall(target, method, args)
    end)
  end
  error(('E: cannot send %q to %s'):format(tostring(method), type(target) == 'table'
    and 'a plain table' or type(target)), 3)
end

--- E.get(target): a proxy whose fields are promises of target's fields.
function M.get(target)
  return setmetatable({}, { __index = function(_, k)
    return promise.resolve(target):next(function(t) return t[k] end)
  end })
end

--- Makes the kit of one liveslots instance.
---@param cx table what the instance shares (the table ocap.liveslots.gc and .kits get too): { ls, syscall,
---  kernelKind, collect, exports, weakExports, valToVref, pinned, reachable, unsaved,
---  dropped, pending, answers, trackPromise, decodeCapdata,
---  slotToVal, valToSlot, follow, rejectResult, settleResult, virtualToReap,
---  vomKit (the vom kit once it is made) }
---@return table kit
function M.make(cx)
  local ls, syscall, kernelKind = cx.ls, cx.syscall, cx.kernelKind
  local valToVref, pinned = cx.valToVref, cx.pinned
  local reachable, unsaved, dropped = cx.reachable, cx.unsaved, cx.dropped
  local pending, answers = cx.pending, cx.answers
  local presenceInfo, pipelines = shared.presenceInfo, shared.pipelines
  local slotToVal, valToSlot, follow = cx.slotToVal, cx.valToSlot, cx.follow
  local rejectResult, settleResult = cx.rejectResult, cx.settleResult
  local decodeCapdata, trackPromise = cx.decodeCapdata, cx.trackPromise
  -- The instance's GC kit and virtual object manager (ocap.liveslots.kits).
  local function gc() return require(KITS).gc(cx) end
  local function vom() return require(KITS).vom(cx) end
  local kit = {}
  -- What other modules call on the instance (ls.<name>): put on ls when
  -- the kit loads, so that only the first call finds it through ls's
  -- __index.
  local api = {}

  -- ---- Deliveries ----

  --- A notify of several resolutions.
  function kit.notify(resolutions)
    local n = #resolutions
    -- Every promise is known before any value is decoded: a value may
    -- name another promise of the same notify.
    local keys = {}
    for i = 1, n do
      local _, key = trackPromise(resolutions[i][1])
      keys[i] = key
    end
    for i = 1, n do
      local r = resolutions[i]
      local p = pending[keys[i]]
      local ok, v = decodeCapdata(r[3], r[4])
      if not ok then v = normalizeError(v) end
      ok = ok and not r[2]
      if i < n then
        if ok then resolvePromise(p, v) else rejectPromise(p, v) end
      else
        for j = 1, n do pending[keys[j]] = nil end
        -- Usually one coroutine awaits the last, and resumes at once.
        settleAndResume(p, ok, v)
      end
    end
  end

  --- A message to answer, the promise a remote peer answers that the
  --- message's target follows: sent on at once, to the answer position
  --- across the wire; its own result may take pipelined messages in turn.
  function kit.answer(answer, resultVpid, ok, methargs)
    if not ok then return rejectResult(resultVpid, normalizeError(methargs)) end
    local sok, r = pcall(eventualSend, answer, methargs[1], methargs[2] or {}, resultVpid ~= nil)
    if not sok then return rejectResult(resultVpid, normalizeError(r)) end
    follow(resultVpid, r)
    if resultVpid then
      onSettle(r, function(fulfilled, value) settleResult(resultVpid, fulfilled, value) end)
    elseif r then
      onSettle(r, ignore)
    end
  end

  --- A message to an object this instance no longer has.
  function kit.deleted(targetVref, resultVpid)
    rejectResult(resultVpid, pass.makeError(
      ('[KERNEL:OBJECT_DELETED] Object %s no longer exists'):format(targetVref)))
  end

  --- Virtual objects at a reap point, once the heap has been collected:
  --- deletes the stores and durable instances nothing holds any more and
  --- returns the vrefs among them the kernel may still recognize, which
  --- the caller retires (syscall.retireExports).
  ---@return string[]
  local function reapVirtual()
    if not cx.virtualToReap() then return {} end
    return vom().reap()
  end

  --- dispatch('dropExports') / ('retireExports'): the export status of
  --- the virtual vrefs (o+d...) among vrefs, kept in the vat's store.
  local function virtualExports(vrefs, retired)
    for i = 1, #vrefs do
      if ssub(vrefs[i], 1, 3) == 'o+d' then
        if retired then vom().retireExports(vrefs) else vom().dropExports(vrefs) end
        return
      end
    end
  end

  --- A full collection, so that the weak tables hold exactly what the heap
  --- still reaches. One cycle is enough: the tables liveslots reads have
  --- weak values, which Lua clears of a dead object in the cycle that finds
  --- it, even one a finalizer revives. A vat's sandbox has no
  --- collectgarbage: there the kernel's collectGarbage syscall does it.
  local collect = cx.collect or syscall.collectGarbage or (collectgarbage and function()
    collectgarbage('collect')
  end)

  --- bringOutYourDead, once ocap.liveslots has found that the heap may
  --- hold something to report: a reap point, the only time liveslots
  --- reports what the heap let go of (ocap.liveslots.gc says what).
  local function bringOutYourDead()
    -- The representatives virtual objects cache must not outlive this
    -- collection (ocap.vom).
    local vomKit = cx.vomKit
    if vomKit then vomKit.flush() end
    if collect then collect() end
    if ls.onReap then ls.onReap() end
    -- Virtual objects nothing holds are deleted first (ocap.vom): what
    -- they held is released for the checks that follow. Those the kernel
    -- still recognizes are retired.
    gc().reaped(reapVirtual())
  end

  --- The deliveries dispatch leaves to the kit: all but a message, a
  --- notify of one resolution, startVat and a reap with nothing to do.
  function kit.dispatch(kind, a)
    if kind == 'timer' and ls.onTimer then
      return ls.onTimer(a)
    elseif kind == 'bringOutYourDead' then
      bringOutYourDead()
    elseif kind == 'dropExports' then
      gc().dropExports(a)
      virtualExports(a, false)
    elseif kind == 'retireExports' then
      gc().retireExports(a)
      virtualExports(a, true)
    elseif kind == 'retireImports' then
      gc().retireImports(a)
    elseif kind == 'stopVat' then
      gc().stopVat()
    else
      error('unknown delivery ' .. tostring(kind))
    end
  end

  -- ---- The instance's API ----

  -- The kernel's GC syscalls, each taking a sequence of vrefs. The kernel
  -- checks every one, so code that reaches them can only harm its own vat.
  api.gcSyscall = {}
  for _, name in ipairs({ 'dropImports', 'retireImports', 'retireExports', 'abandonExports' }) do
    api.gcSyscall[name] = function(vrefs) return syscall[name](vrefs) end
  end

  -- The store and durable kits count the references their writes gain
  -- and lose through these.
  function api.storeRef(vref, delta) return gc().storeRef(vref, delta) end
  function api.storeRefsChanged(old, new) return gc().storeRefsChanged(old, new) end

  --- True when the kernel had this vat drop the export vref and it has not
  --- been sent again since (for the durable kit, which decides when a
  --- virtual object nobody holds is deleted).
  function api.isDropped(vref)
    return dropped[vref] == true
  end

  --- Whether this instance takes the messages the kernel has for vref, a
  --- promise it decides (the kernel's pipelines hook, kernel.h).
  function api.pipelines(vref)
    local r = answers[vref]
    return r ~= nil and pipelines[r] ~= nil
  end

  --- The ref a value has in this instance, if any (no export is made).
  function api.refOf(v)
    local vref = valToVref[v]
    if vref then return vref end
    local pi = presenceInfo[v]
    if pi and pi.ls == ls then return pi.vref end
    return vpidString(trackedKey(v, pending))
  end

  --- The presence of vref; an iface given here renames it (the host's
  --- getPresence(kref, iface) is the one place that knows better).
  function api.presenceFor(vref, iface)
    local counted = reachable[vref]
    local v = slotToVal(vref, iface, 'remotable')
    if kernelKind and not counted then
      -- Host code may name any kref (getPresence): the kernel counts one
      -- in the host's imports only once it delivers it to the host, and
      -- only then may the host drop it (noteImports counts it then).
      reachable[vref], unsaved[vref] = nil, nil
    end
    local info = presenceInfo[v]
    if iface and info and info.iface ~= iface then
      info.iface = iface
      pass.registerRemotable(v, iface)
    end
    return v
  end

  --- The presence of vref, counted among this instance's imports as if
  --- the kernel had delivered it: for the host's remote layer, which puts
  --- a peer's object in the host's c-list itself (K:import) and lets this
  --- instance drop it, as any other, once nothing holds it.
  function api.adoptImport(vref, iface)
    local v = slotToVal(vref, iface, 'remotable')
    if not reachable[vref] then
      reachable[vref] = true
      unsaved[vref] = true
    end
    return v
  end

  function api.promiseFor(vpid)
    return slotToVal(vpid, nil, 'promise')
  end

  --- Gives a virtual object's representative its vref without holding
  --- it: the representative lives while something in the heap holds it,
  --- and the vref brings back a new one (slotToVal) once it is gone.
  function api.bindVref(obj, vref)
    valToVref[obj] = vref
  end

  --- Keeps the export vref whatever the kernel says (code names it by
  --- its ref: the host's services and vatAdmin).
  function api.pin(vref)
    pinned[vref] = true
    require(KITS).hold(cx, vref)
  end

  --- Exports a local object (allocating a ref) and returns its ref.
  function api.export(obj)
    return valToSlot(obj, 'remotable')
  end

  for name, f in next, api do
    rawset(ls, name, f)
    kit[name] = f
  end
  return kit
end

return M
