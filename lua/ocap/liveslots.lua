--- Liveslots: the runtime of an endpoint (a vat, or the kernel's own Lua
--- state). It maps local objects and promises to refs, turns deliveries
--- into method calls and promise settlements, and turns E() sends and
--- settlements into syscalls.
local promise = require 'ocap.promise'
local pass = require 'ocap.pass'
local marshal = require 'ocap.marshal'
local exo = require 'ocap.exo'

local M = {}

-- Captured when the runtime loads, before any vat code runs: a vat that
-- replaces its global require cannot change what the lazy kits load.
local require = require

local type, error, pcall, select, tostring, setmetatable, getmetatable, rawequal, rawget, next =
  type, error, pcall, select, tostring, setmetatable, getmetatable, rawequal, rawget, next
local unpack, pack = table.unpack, table.pack
local sfind, ssub, sbyte, smatch = string.find, string.sub, string.byte, string.match
local makePromise, track, trackedKey = promise.makePromise, promise.track, promise.trackedKey
local onSettle, pstate, drain = promise.onSettle, promise.state, promise.drain
local call, xcall, settled, hasTurns = promise.call, promise.xcall, promise.settled, promise.hasTurns
local settleAndResume, isOurPromise = promise.settleAndResume, promise.isPromise
-- The C codec's own functions, where the state has it (always in a vat):
-- the hot path calls them without marshal's wrappers.
local cEncodeParts = pass.codec and pass.codec.encodeParts
local cEncodeCallParts = pass.codec and pass.codec.encodeCallParts
local cEncodeCallArgs = pass.codec and pass.codec.encodeCallArgs
local cDecode = pass.codec and pass.codec.decode
local cDecodeCall = pass.codec and pass.codec.decodeCall
local function ignore() end
-- ocap.smallcaps' lazy(require, module, name, cx): a C function that calls
-- require(module)[name](cx, ...), for the cold parts of an instance,
-- which are in ocap.liveslots.kits.
local lazy = require('ocap.smallcaps').lazy
local KITS = 'ocap.liveslots.kits'
-- The metatable of this runtime's promises, to tell one on the hot path
-- without a call into ocap.promise.
local PromiseMT = getmetatable(makePromise())

-- The metatables of the weak tables, one of each kind for all of them.
local WEAK_KEYS, WEAK_VALUES = { __mode = 'k' }, { __mode = 'v' }

-- Targets that send their messages themselves (ocap.remote's imports, and
-- the answers of a remote peer, whose messages go ahead of their
-- settlement): target -> send(method, args, wantResult).
local pipelines = setmetatable({}, WEAK_KEYS)

local COUNT_MAX <const> = 9007199254740991 -- 2^53 - 1

-- ocap.liveslots.rare, loaded on first use (defined below).
local rare

-- Per Lua state: which liveslots instance a presence or a kernel-known
-- promise belongs to, so E() can route without being told.
local presenceInfo = setmetatable({}, WEAK_KEYS) -- presence -> { ls, vref }
-- The instances of this state (a vat has one): ls -> { pending, sender },
-- its table of kernel-known promises (key -> promise; each such promise
-- remembers its key, promise.trackedKey) and the maker of its presences'
-- senders (made in M.make).
local instances = setmetatable({}, WEAK_KEYS)

-- A presence's metamethods only raise or describe it: they are in
-- ocap.liveslots.kits.
local presenceMT = {
  __index = lazy(require, KITS, 'presenceIndex', presenceInfo),
  __newindex = lazy(require, KITS, 'presenceRefuse', presenceInfo),
  __tostring = lazy(require, KITS, 'presenceString', presenceInfo),
  __metatable = 'presence',
}

-- What this module shares with ocap.liveslots.eventual (E() and its
-- proxies) and ocap.liveslots.rare, which load on first use: the tables
-- above, E, this module, E's send (eventualSend, set by the eventual
-- module), the call of local exos (localCall, set below) and E's
-- trampolines, which the eventual module replaces with its functions.
-- Made with every field, so that it never grows.
local common = {
  presenceInfo = presenceInfo, pipelines = pipelines, instances = instances, M = M, E = false,
  eventualSend = false, localCall = false, callT = false, sendOnlyT = false, whenT = false, getT = false,
}

-- E(target).method(...) -> promise; E(target):method(...) works too; and
-- E.sendOnly, E.when, E.get. What they do is ocap.liveslots.eventual:
-- a vat that never sends never loads it. E's __call is Lua, not a
-- trampoline: its tail call leaves the stack as E's own __call does, so
-- that E(nil)'s error names the same caller at the first call as later.
local EVENTUAL = 'ocap.liveslots.eventual'
common.callT = function(e, target) return require(EVENTUAL).call(common, e, target) end
common.sendOnlyT = lazy(require, EVENTUAL, 'sendOnly', common)
common.whenT = lazy(require, EVENTUAL, 'when', common)
common.getT = lazy(require, EVENTUAL, 'get', common)
local E = setmetatable({ sendOnly = common.sendOnlyT, when = common.whenT, get = common.getT },
  { __call = common.callT })
common.E = E
M.E = E

--- setPipeline(target, send): makes E(target) call send(method, args,
--- wantResult) at once, for a remotable or a pending promise (promise
--- pipelining); nil stops it. refOf(v): the kref or vref behind a
--- presence or kernel-known promise, if any, and its instance.
--- stoppedMessage(target, vref): what a presence of a stopped kernel
--- (kept across a restart) says. All three are ocap.liveslots.eventual's.
M.setPipeline = lazy(require, EVENTUAL, 'setPipeline', common)
M.refOf = lazy(require, EVENTUAL, 'refOf', common)
M.stoppedMessage = lazy(require, EVENTUAL, 'stoppedMessage', common)

-- ocap.liveslots.rare: what E() of anything but a presence, and a
-- failure, need (loaded on first use).
local rareModule
function rare()
  if not rareModule then
    rareModule = require 'ocap.liveslots.rare'
    rareModule.init(common)
  end
  return rareModule
end

--- Removes the "chunk:line: " position Lua adds to string errors.
---@param msg string
---@return string
function M.stripPosition(msg) return rare().stripPosition(msg) end

--- Turns whatever a method raised into its rejection reason: the value a
--- caller gets whether the call went through the kernel or stayed in one
--- Lua state (ocap.liveslots.rare says how).
---@param e any
---@return any reason
local function normalizeError(e) return rare().normalizeError(e) end
M.normalizeError = normalizeError

local exoMethod = exo.method

--- The function implementing method on target, or nil.
local function findMethod(target, method)
  local fn = exoMethod(target, method)
  if fn then return fn end
  -- Remotables that are not exos (stores) keep their methods in fields.
  local ok, f = pcall(function() return target[method] end)
  if ok and type(f) == 'function' then return f end
end

--- Makes call(target, method, args), which runs a method of a local
--- object and raises, if it fails, the normalized reason. Where a failure
--- started is logged once, at warn, with its traceback at debug: the
--- rejection itself carries no position, and as an error value it is
--- never logged again.
---@param log fun(level: string, message: string, data: table|nil)
---@param traceback fun(msg: string): string|nil
---@param explain fun(msg: string): string adds advice to a string error
--- Also returns the two halves of that call, for a caller that makes the
--- protected call itself (liveslots' deliveries, through promise.xcall):
--- the xpcall handler, and ended(target, method, ok, r), which turns the
--- outcome of xpcall(fn, handler, target, ...) into (ok, result or
--- normalized reason), logging as call does. What runs only when a method
--- fails, or for a call other than a delivery's, is ocap.liveslots.rare.
local function makeCaller(log, traceback, explain)
  -- { log, explain, the last failing method's traceback (taken by the
  -- handler while the failing stack still exists, logged right after),
  -- the handler }
  local c = { log, explain, false }
  local function handler(e)
    if type(e) == 'string' and traceback then c[3] = traceback(e) end
    return e
  end
  c[4] = handler
  local function ended(target, method, ok, r)
    return rare().ended(c, target, method, ok, r)
  end
  local function callMethod(target, method, args)
    return rare().callMethod(c, ended, findMethod, target, method, args)
  end
  return callMethod, handler, ended
end

-- Calls local exos, which belong to no liveslots instance: it logs
-- through the latest instance made with a log (a vat has only one; a host
-- logs through the kernel it made last).
common.localCall = makeCaller(function() end, nil, function(e) return e end)

--- Makes a liveslots instance.
---@param opts table { syscall, vatId, kind = 'vat'|'kernel', allocObject, allocPromise, log, wrapError,
---  explain = function(message) -> message, for string errors methods raise,
---  collect = function() that runs a full collection (default: syscall.collectGarbage or collectgarbage) }
function M.make(opts)
  local syscall = opts.syscall
  -- stopped is read at every send: false, so that ls's __index (below)
  -- never runs for it. A vat's ls ends up with 16 fields (startVat while
  -- it boots): one more, and its hash part would double to 32 slots for
  -- the vat's life, so the vat id is an upvalue, not a field.
  local vatId = opts.vatId
  local ls = { stopped = false }
  local exports = {}                                  -- vref -> local object (strong)
  local valToVref = setmetatable({}, WEAK_KEYS) -- local object/promise -> vref
  local imports = setmetatable({}, WEAK_VALUES)   -- vref -> presence
  -- Garbage collection (docs/gc.md). The Lua collector decides what the
  -- heap still holds; liveslots looks only at reap points
  -- (bringOutYourDead), so what it reports depends on the heap's contents,
  -- never on when the collector happened to run.
  local reachable = {}  -- import vref -> true: the kernel counts it reachable from here
  local unsaved = {}    -- import vref -> true: in reachable, not yet in the store (SAVED)
  local dropped = {}    -- export vref -> true: the kernel asked us to drop it
  local ndropped = 0    -- entries of dropped, so that sends skip the check while none is
  local weakExports = setmetatable({}, WEAK_VALUES) -- dropped export vref -> object, not held
  -- Exports bound to a vref chosen by their maker (exportAs: a vat's root,
  -- the host's services and vatAdmin), which code names by that vref:
  -- liveslots never lets go of them, whatever the kernel says.
  local pinned = {}
  local pending = {}                                   -- key -> promise we wait on (trackPromise)
  -- A kernel-known promise's key in pending is trackedKey(p, pending):
  -- each is made by track(pending, key), which it remembers, so that a
  -- send costs no entry in a weak table of keys.
  local instance = { pending }
  instances[ls] = instance
  local exportedPromises = {}                           -- vpid -> local promise
  -- Export and promise numbers are never reused, even across restarts, so
  -- a new object can never take over a ref an old one had. The store keeps
  -- an upper bound of the numbers handed out ("idCounters"), raised in
  -- steps of RESERVE when a number reaches it (in the delivery that hands
  -- the number out, so in the same crank); a restarted vat starts from the
  -- bound, skipping numbers never used.
  local RESERVE <const> = 1024
  local counting = not opts.allocObject
  local nextObject, nextPromise = 1, 1
  -- An instance whose refs others number keeps no counters: its bounds
  -- are never reached.
  local boundObject, boundPromise = 1, 1
  if not counting then boundObject, boundPromise = COUNT_MAX + 1, COUNT_MAX + 1 end
  if syscall.vatstoreGet and not opts.allocObject then
    local saved = syscall.vatstoreGet('idCounters')
    if saved then
      -- Garbled counters would hand out refs again: refuse to start.
      local o, p = saved:match('^(%S+) (%S+)$')
      if not o then
        error(('corrupt database: vat store key "idCounters" holds %q, which is not two counts')
          :format(saved:sub(1, 40)), 0)
      end
      -- Each a count as ocap.liveslots.kits' storedCount reads one.
      local function field(s)
        local n = #s <= 16 and not sfind(s, '^0%d') and sfind(s, '^%d+$') and math.tointeger(tonumber(s))
        if not n or n > COUNT_MAX then require(KITS).corruptCount('idCounters', s) end
        return n
      end
      nextObject, nextPromise = field(o), field(p)
      boundObject, boundPromise = nextObject, nextPromise
    end
  end
  -- A vat's send syscall also takes the number N of the promise the vat
  -- makes for the result, "p+<N>": the vat keys the promises it awaits by
  -- N rather than by that vpid, and the kernel's dispatchSettle hands N
  -- back (core/ldeliver.c), so a round trip makes no string of its vpid.
  local sendNumbered = counting and not opts.allocPromise and syscall.sendNumbered
  -- A vat's sendNumbered of a call the C codec writes flat, encoded and
  -- sent in one call without a body string (core/lsyscall.c); nil for
  -- any other call.
  local sendCall = sendNumbered and syscall.sendCall

  local function saveCounters()
    if nextObject >= boundObject or nextPromise >= boundPromise then
      boundObject, boundPromise = nextObject + RESERVE, nextPromise + RESERVE
      syscall.vatstoreSet('idCounters', boundObject .. ' ' .. boundPromise)
    end
  end
  local log = opts.log or function() end
  -- Deliveries are decoded through the kernel's decode syscall, so that a
  -- message too costly to decode is refused instead of ending the vat.
  local decode = syscall.decode or pcall
  local wrapError = opts.wrapError
  local explain = opts.explain or function(e) return e end

  local allocObject = opts.allocObject or function()
    local v = 'o+' .. nextObject
    nextObject = nextObject + 1
    if nextObject >= boundObject then saveCounters() end
    return v
  end
  local allocPromise = opts.allocPromise or function()
    local v = 'p+' .. nextPromise
    nextPromise = nextPromise + 1
    if nextPromise >= boundPromise then saveCounters() end
    return v
  end

  local m -- the marshaller, defined below
  local valToSlot -- a value's ref, made for it if needed; defined below

  -- The store and durable kits load on the first touch of the baggage's
  -- contents, of a durable API or of a ref of theirs: a vat that keeps
  -- nothing durable carries neither module. Until its kit loads, the
  -- baggage is a shell (bag) whose metatable the kit fills in. Their
  -- makers, and the other cold parts below, are in ocap.liveslots.kits,
  -- reached through trampolines made with the table the instance shares
  -- with its kits (shared, below); the kits are its fields.
  local bag
  local stores, durableObject

  -- ---- What the heap holds (garbage collection, docs/gc.md) ----

  -- The imports the kernel counts reachable from this vat are also kept in
  -- the store, under this prefix, so that a new heap (a restart, an
  -- upgrade) knows them and drops at its first reap point those it does
  -- not hold. They are written at reap points, so that an import that
  -- comes and goes between two of them costs no store write: an import a
  -- restart finds unsaved stays reachable in the kernel.
  local SAVED = 'gc.i.'
  if syscall.vatstoreNext then
    local after
    while true do
      local key = syscall.vatstoreNext(SAVED, after)
      if key == nil then break end
      after = key
      reachable[ssub(key, #SAVED + 1)] = true
    end
  end

  -- The rest (store-held reference counts, GC deliveries, what a reap
  -- reports) is ocap.liveslots.gc, loaded on first use.
  -- What the kits loaded on first use (ocap.liveslots.kits, .gc and
  -- .rare) share with the instance (below).
  local shared

  -- Only ocap.vom marks virtual objects dirty: a reap point has virtual
  -- objects to look at once the vom kit is loaded, or when an earlier
  -- incarnation left marks in the store, which the instance looks for
  -- once, now (a prefix scan sorts the store's new keys, the largest cost
  -- of a reap after the collection, and later reaps skip it).
  local dirtyAtStart = syscall.vatstoreNext ~= nil and syscall.vatstoreNext('vom.dirty.', nil) ~= nil
  --- Whether a reap point has virtual objects to look at.
  local function virtualToReap() return dirtyAtStart or shared.vomKit ~= nil end

  --- Holds a dropped export strongly again, if the heap still has it.
  --- slots go to the kernel in a message or a resolution: a dropped export
  --- among them is reachable again, and held again if the heap still has
  --- it (ocap.liveslots.kits).
  local resent

  --- Resolves vpid with value, or rejects it; a value that cannot be
  --- passed rejects it with an error saying why.
  local function settleVpid(vpid, fulfilled, value)
    -- The C codec answers the body and slots as two values (slots nil
    -- when there are none); what it leaves, marshal encodes.
    local ok, body, slots = true, nil, nil
    -- Plain data first, unprotected: without valToSlot the C codec raises
    -- nothing (it leaves a value with slots, and every error); then the
    -- whole value, protected, as valToSlot may raise.
    if cEncodeParts then
      body = cEncodeParts(value)
      if body == nil then ok, body, slots = pcall(cEncodeParts, value, valToSlot) end
    end
    if body == nil then
      local cd
      ok, cd = pcall(m.serialize, value)
      if not ok then
        fulfilled = false
        cd = m.serialize(pass.makeError('result is not passable: ' .. M.stripPosition(tostring(cd))))
      end
      body, slots = cd.body, cd.slots
    elseif not ok then
      fulfilled = false
      local cd = m.serialize(pass.makeError('result is not passable: ' .. M.stripPosition(tostring(body))))
      body, slots = cd.body, cd.slots
    end
    if ndropped > 0 and slots then resent(slots) end
    syscall.resolve(vpid, not fulfilled, body, slots)
  end

  local function resolveExported(vpid, ok, value)
    local p = exportedPromises[vpid]
    exportedPromises[vpid] = nil
    if p then valToVref[p] = nil end
    settleVpid(vpid, ok, value)
  end

  --- The promise that stands for vpid (a vpid or a key of pending) while
  --- the kernel has not settled it, its key in pending (which the promise
  --- remembers), and whether it is new. The key is N for "p+<N>" when sends
  --- are numbered (N of at most 18 digits without leading zeros, as the
  --- kernel reads one for dispatchSettle), else the vpid.
  local function trackPromise(vpid)
    local key = vpid
    local n = sendNumbered and smatch(vpid, '^p%+([1-9]%d*)$')
    if n and #n <= 18 then key = tonumber(n) end
    local p = pending[key]
    if p then return p, key, false end
    return track(pending, key), key, true
  end

  local function makePresence(vref, iface)
    local pr = setmetatable({}, presenceMT)
    iface = iface or 'Alleged: presence'
    presenceInfo[pr] = { ls = ls, vref = vref, iface = iface }
    pass.registerRemotable(pr, iface)
    imports[vref] = pr
    if not reachable[vref] then
      reachable[vref] = true
      unsaved[vref] = true
    end
    return pr
  end

  -- Promise pipelining: the promises this instance decides (results of
  -- messages it got, promises it exported) that follow a local promise
  -- which sends its messages itself (a remote peer's answer, setPipeline),
  -- while it is pending: vpid -> that promise. The kernel hands this
  -- instance the messages sent to such a promise (ls.pipelines), which go
  -- where the local promise sends them.
  local answers = {}

  --- Notes that vpid follows r, when r pipelines.
  local function follow(vpid, r)
    if vpid and pipelines[r] and isOurPromise(r) and pstate(r) == 'pending' then
      answers[vpid] = r
      onSettle(r, function() answers[vpid] = nil end)
    end
  end

  function valToSlot(v, style)
    local vref = valToVref[v]
    if vref then
      -- A virtual object leaving the vat is held by the kernel from now on.
      local vomKit = shared.vomKit
      if vomKit and ssub(vref, 1, 3) == 'o+d' then vomKit.exported(vref) end
      return vref
    end
    if style == 'remotable' then
      local pi = presenceInfo[v]
      if pi then
        if pi.ls ~= ls then error('cannot pass a presence from another kernel', 0) end
        return pi.vref
      end
      if rawequal(v, bag) then stores() end
      local storeKit = shared.storeKit
      vref = storeKit and storeKit.vrefOf(v) or allocObject()
      exports[vref] = v
      valToVref[v] = vref
      return vref
    end
    local key = trackedKey(v, pending)
    if key and pending[key] then
      -- A vat's own result, keyed by its number (trackPromise).
      if type(key) == 'number' then return 'p+' .. key end
      return key
    end
    vref = allocPromise()
    valToVref[v] = vref
    exportedPromises[vref] = v
    follow(vref, v)
    onSettle(v, function(ok, value) resolveExported(vref, ok, value) end)
    return vref
  end

  local function slotToVal(slot, iface, style)
    -- A body may call any slot a promise ("&0"): an object's must not be
    -- taken for one, since subscribing to it is an illegal syscall that
    -- would terminate this vat for what a sender wrote.
    if style == 'promise' and ssub(slot, 1, 1) ~= 'p' and ssub(slot, 1, 2) ~= 'kp' then
      error(('slot %s is not a promise'):format(slot), 0)
    end
    local v = exports[slot] or imports[slot]
    if v ~= nil then return v end
    if style == 'promise' or ssub(slot, 1, 1) == 'p' or ssub(slot, 1, 2) == 'kp' then
      local exported = exportedPromises[slot]
      if exported then return exported end
      local p, _, fresh = trackPromise(slot)
      if fresh then syscall.subscribe(slot) end
      return p
    end
    local store = ssub(slot, 1, 3) == 'o+d' and durableObject(slot)
    if store then return store end
    -- An export the kernel had us drop is still ours while the heap keeps it.
    local kept = weakExports[slot]
    if kept ~= nil then return kept end
    if ssub(slot, 1, 2) == 'o+' then
      error(('object %s no longer exists in vat %s'):format(slot, tostring(vatId)), 0)
    end
    return makePresence(slot, iface)
  end

  m = marshal.makeMarshal(valToSlot, slotToVal)

  -- One capdata table serves every delivery's decoding: the decoder reads
  -- it and lets go of it before returning.
  local kernelKind = opts.kind == 'kernel'

  --- The kernel put every import among a delivery's slots in the vat's
  --- c-list as reachable, whether the body uses it or not, and whether it
  --- decodes or not: each is counted, so that a reap point drops those no
  --- presence stands for. They are counted before decoding, since a
  --- decoding that exhausts the vat's memory or meter ends the delivery
  --- (the kernel refuses it) and keeps what was done until then.
  local function noteImports(slots)
    for i = 1, #slots do
      local s = slots[i]
      if not reachable[s] then
        local import
        if kernelKind then
          import = sbyte(s, 2) == 111 and exports[s] == nil and weakExports[s] == nil and not dropped[s]
        else
          import = sbyte(s, 1) == 111 and sbyte(s, 2) == 45 -- "o-"
        end
        if import then
          reachable[s] = true
          unsaved[s] = true
        end
      end
    end
  end

  -- A delivery's capdata goes straight to the C codec, through the decode
  -- syscall: the kernel hands over a string and a table, so the checks
  -- marshal makes of capdata from elsewhere have nothing to find. What the
  -- C codec leaves (every error, rare inputs) goes the general way, which
  -- tries the C codec again and then the Lua one, for the same value or
  -- error as marshal gives.
  local capdata = {}
  local function decodeCapdata(body, slots)
    if slots and slots[1] ~= nil then noteImports(slots) end
    if cDecode then
      local ok, decoded, v = decode(cDecode, body, slots, slotToVal)
      if not ok then return false, decoded end
      if decoded then return true, v end
    end
    capdata.body, capdata.slots = body, slots
    local ok, v = decode(m.unserialize, capdata)
    capdata.body, capdata.slots = nil, nil
    return ok, v
  end
  ls.marshal = m

  local send = syscall.send
  local resolve = syscall.resolve
  -- A vat's resolve of a value the C codec writes flat, likewise.
  local resolveValue = syscall.resolveValue

  --- Sends an encoded message to a kernel ref; returns the result promise.
  local function sendEncoded(vref, body, slots, wantResult)
    if slots and ndropped > 0 then resent(slots) end
    if not wantResult then
      send(vref, body, slots)
      return nil
    end
    local vpid
    if sendNumbered then
      vpid = nextPromise
      sendNumbered(vref, body, slots, vpid)
      nextPromise = vpid + 1
      if nextPromise >= boundPromise then saveCounters() end
    else
      vpid = allocPromise()
      send(vref, body, slots, vpid)
    end
    -- The kernel subscribes the sender to its result (kernel.h).
    return track(pending, vpid)
  end

  local function sendTo(vref, method, args, wantResult)
    local body, slots
    if cEncodeCallParts then body, slots = cEncodeCallParts(method, args, valToSlot) end
    if body == nil then
      local cd = m.serializeCall(method, args)
      body, slots = cd.body, cd.slots
    end
    return sendEncoded(vref, body, slots, wantResult)
  end
  ls.sendTo = sendTo

  --- sendTo, with the arguments as they come (E(presence).method(...)):
  --- the C codec encodes them from the stack, with no table of them.
  local function sendArgs(vref, method, wantResult, ...)
    local body, slots
    if cEncodeCallArgs then body, slots = cEncodeCallArgs(method, valToSlot, ...) end
    if not body then return sendTo(vref, method, pack(...), wantResult) end
    return sendEncoded(vref, body, slots, wantResult)
  end
  ls.sendArgs = sendArgs

  --- Makes the function E(presence).method is: it sends method to vref with
  --- the arguments as they come, sendArgs inline; itself holds the proxy
  --- that a call made as E(x):method(...) passes first, which is not an
  --- argument, and stopped(vref) says why a stopped instance cannot send.
  instance[2] = function(vref, method, wantResult, itself, stopped)
    -- Whether sends for a result go the vat's way, inline below: only
    -- the host's instance ever stops (kernel.lua), and it numbers no send.
    local direct = wantResult and sendNumbered and cEncodeCallArgs and true
    return function(...)
      if not direct then
        if ls.stopped then error(stopped(vref), 2) end
        if itself[...] then return sendArgs(vref, method, wantResult, select(2, ...)) end
        return sendArgs(vref, method, wantResult, ...)
      end
      if itself[...] then return sendArgs(vref, method, true, select(2, ...)) end
      local vpid = nextPromise
      if not (sendCall and sendCall(vref, vpid, method, ...)) then
        local body, slots = cEncodeCallArgs(method, valToSlot, ...)
        if not body then return sendTo(vref, method, pack(...), true) end
        if slots and ndropped > 0 then return sendEncoded(vref, body, slots, true) end
        -- Encoding numbers the promises among the arguments first.
        vpid = nextPromise
        sendNumbered(vref, body, slots, vpid)
      end
      nextPromise = vpid + 1
      if nextPromise >= boundPromise then saveCounters() end
      return track(pending, vpid)
    end
  end

  --- Registers a local object under a given vref (the root is o+0).
  function ls.exportAs(obj, vref)
    exports[vref] = obj
    valToVref[obj] = vref
    pinned[vref] = true
  end

  local function rejectResult(resultVpid, reason)
    if resultVpid then settleVpid(resultVpid, false, reason) end
  end

  --- Settles the result of a delivered message as its method ended.
  local function settleResult(resultVpid, fulfilled, value)
    if fulfilled then
      settleVpid(resultVpid, true, value)
    else
      settleVpid(resultVpid, false, wrapError and wrapError(value) or value)
    end
  end

  -- A table made with the instance costs less than the closure and code
  -- that would make it on first use. The kits and bagMeta are set later
  -- (ocap.liveslots.kits): listed here, so that the table is made with
  -- room for them, and never grows.
  shared = {
    ls = ls, syscall = syscall, kernelKind = kernelKind, collect = opts.collect, exports = exports,
    weakExports = weakExports, valToVref = valToVref, imports = imports, pinned = pinned,
    reachable = reachable, unsaved = unsaved, dropped = dropped, pending = pending, answers = answers,
    trackPromise = trackPromise, decodeCapdata = decodeCapdata, slotToVal = slotToVal,
    valToSlot = valToSlot, follow = follow, rejectResult = rejectResult, settleResult = settleResult,
    SAVED = SAVED,
    addDropped = function(delta)
      ndropped = ndropped + delta
      return ndropped
    end,
    virtualToReap = virtualToReap,
    bag = nil, bagMeta = nil, storeKit = nil, durableKit = nil, vomKit = nil, gcKit = nil,
  }
  stores = lazy(require, KITS, 'stores', shared)
  ls.stores, ls.durable, ls.vom = stores, lazy(require, KITS, 'durable', shared), lazy(require, KITS, 'vom', shared)
  durableObject = lazy(require, KITS, 'durableObject', shared)
  resent = lazy(require, KITS, 'resent', shared)

  --- The baggage (store 1), made without the store kit: a shell until
  --- the kit loads.
  local function baggage()
    if not bag then
      if syscall.vatstoreGet('vc.1|label') == nil then syscall.vatstoreSet('vc.1|label', 'baggage') end
      local bagMeta = {
        __index = lazy(require, KITS, 'bagIndex', shared),
        __newindex = lazy(require, KITS, 'bagRefuse', shared),
        __tostring = lazy(require, KITS, 'bagString', shared),
        __metatable = {},
      }
      bag = setmetatable({}, bagMeta)
      pass.registerRemotable(bag, 'Alleged: mapStore')
      shared.bag, shared.bagMeta = bag, bagMeta
    end
    return bag
  end
  if kernelKind then
    ls.baggage = baggage
  else
    -- A vat's is made now rather than at its start, so that the code
    -- making it is gone by then: buildRootObject gets it from
    -- ls.baggage, which startVat drops.
    baggage()
    function ls.baggage() return bag end
  end
  -- What an instance runs only now and then (ocap.liveslots.rare, loaded
  -- on first use): the rarer deliveries, and the part of ls other modules
  -- call now and then, which ls's __index finds until the kit puts it on
  -- ls itself.
  local rareKit
  local function rareKitOf()
    if not rareKit then rareKit = rare().make(shared) end
    return rareKit
  end
  setmetatable(ls, { __index = function(_, k) return rareKitOf()[k] end })

  local callMethod, methodHandler, methodEnded = makeCaller(log, syscall.traceback, explain)
  if opts.log then common.localCall = callMethod end

  --- Settles a delivered method's result as its run came to: at once
  --- when it ended without awaiting and queued no turn, else when the
  --- promise of its run settles.
  local function methodRan(resultVpid, done, ok, r, busy)
    if done and ok and pipelines[r] then follow(resultVpid, r) end
    if busy == nil and done then busy = hasTurns() end
    if done and not busy and getmetatable(r) ~= PromiseMT then
      -- The method ended without awaiting and queued no turn: settling the
      -- result now is what the turn below would do first.
      if resultVpid then
        if ok then settleVpid(resultVpid, true, r) else settleResult(resultVpid, false, r) end
      end
      return
    end
    local p = done and settled(ok, r) or ok
    if resultVpid then
      onSettle(p, function(fulfilled, value) settleResult(resultVpid, fulfilled, value) end)
    else
      onSettle(p, ignore)
    end
  end

  --- Runs method(args) on the local object target.
  local function invokeLocal(target, resultVpid, method, args)
    local fn = findMethod(target, method)
    if fn then
      -- One protected call, in the coroutine that runs the method.
      return methodRan(resultVpid, xcall(methodEnded, target, method, fn, methodHandler, target,
        unpack(args, 1, args.n or #args)))
    end
    -- bootstrap, which a root may lack (it then has nothing to do at
    -- launch), and a missing method's error.
    if method == 'bootstrap' and exports['o+0'] == target then
      return methodRan(resultVpid, true, true, nil)
    end
    return methodRan(resultVpid, call(callMethod, target, method, args))
  end

  --- A message whose capdata decoded (ok) to methargs, or failed to.
  local function deliverDecoded(target, targetVref, resultVpid, ok, methargs)
    if target == nil then
      local answer = answers[targetVref]
      if answer then return rareKitOf().answer(answer, resultVpid, ok, methargs) end
      return rareKitOf().deleted(targetVref, resultVpid)
    end
    if not ok then
      rejectResult(resultVpid, normalizeError(methargs))
      return
    end
    return invokeLocal(target, resultVpid, methargs[1], methargs[2] or {})
  end

  --- A message to a local object, decoded by the C codec's decodeCall
  --- (ok, decoded, method, ...): the arguments come as values, and no
  --- table holds them. A body it leaves goes the general way.
  local function deliverCall(target, targetVref, body, slots, resultVpid, ok, decoded, method, ...)
    if ok and decoded then
      local fn = method ~= 'bootstrap' and findMethod(target, method)
      if fn then
        return methodRan(resultVpid, xcall(methodEnded, target, method, fn, methodHandler, target, ...))
      end
      return invokeLocal(target, resultVpid, method, pack(...))
    end
    if not ok then return rejectResult(resultVpid, normalizeError(decoded)) end
    return deliverDecoded(target, targetVref, resultVpid, decodeCapdata(body, slots))
  end

  local function deliverMessage(targetVref, body, slots, resultVpid)
    -- Only objects receive messages, and the answers of remote peers
    -- (ls.pipelines): the kernel keeps any other message sent to a promise
    -- until the promise settles, then routes it to the object it
    -- designates, checking revocation on the way. Running it here on the
    -- local object the promise resolved to would skip that check.
    local target = exports[targetVref]
    if target == nil then
      target = weakExports[targetVref]
      if target == nil and ssub(targetVref, 1, 3) == 'o+d' then target = durableObject(targetVref) end
    end
    if target ~= nil and cDecodeCall then
      -- The imports among the slots are counted before decoding, as
      -- decodeCapdata does.
      if slots and slots[1] ~= nil then noteImports(slots) end
      return deliverCall(target, targetVref, body, slots, resultVpid,
        decode(cDecodeCall, body, slots, slotToVal))
    end
    return deliverDecoded(target, targetVref, resultVpid, decodeCapdata(body, slots))
  end

  --- One resolution, which the coroutine awaiting it usually takes at
  --- once (settleAndResume).
  local function deliverResolution(vpid, rejected, body, slots)
    -- A vat's own "p+<N>" comes as a string here: trackPromise finds it.
    local p, key = pending[vpid], vpid
    if not p then p, key = trackPromise(vpid) end
    local ok, v
    if slots == nil and cDecode then
      -- decodeCapdata's common case, inline: no slots to count.
      local decoded
      ok, decoded, v = decode(cDecode, body, nil, slotToVal)
      if not ok then
        v = decoded
      elseif not decoded then
        ok, v = decodeCapdata(body, slots)
      end
    else
      ok, v = decodeCapdata(body, slots)
    end
    pending[key] = nil
    if not ok then return settleAndResume(p, false, normalizeError(v)) end
    return settleAndResume(p, not rejected, v)
  end

  --- The dispatch function the kernel calls for every delivery.
  function ls.dispatch(kind, a, b, c, d)
    if kind == 'message' then
      deliverMessage(a, b, c, d)
    elseif kind == 'notify' then
      -- The kernel hands one resolution flat (vpid, rejected, body,
      -- slots), several as a sequence of such records (b is then nil).
      if b == nil then rareKitOf().notify(a) else deliverResolution(a, b, c, d) end
    elseif kind == 'bringOutYourDead' and next(reachable) == nil and ndropped == 0
      and not rawget(ls, 'onReap') and not virtualToReap() then
      -- What a reap reports depends on the heap only through the imports
      -- the kernel counts reachable, the exports it had us drop and the
      -- virtual objects: with none of them, a collection could change
      -- nothing it reports, and the reap skips it (the collector still
      -- runs on its own, as allocation goes).
      return
    elseif kind == 'startVat' then
      local ok, err = ls.startVat(a, b, c)
      if ok and counting then saveCounters() end
      return ok, err
    else
      return rareKitOf().dispatch(kind, a, b, c, d)
    end
    drain()
  end

  -- The kernel's dispatch of the deliveries it decodes itself, whose
  -- capdata has no slots, so that they name no import to count
  -- (core/ldeliver.c): what follows each is dispatch's, but for the
  -- drain, which the kernel calls after each, and only when the promise
  -- core has turns or unhandled rejections for it.

  --- A message to targetVref, as its method and arguments. A result the
  --- kernel numbered for the vat ("p-<N>") comes as N, which only goes
  --- back to the resolve syscall (core/ldeliver.c).
  --- Only a vat has these two, and a vat always has the C codec. Each
  --- test is a truth test where it can be (no export is false): Lua
  --- compares with nil by a call, and tests truth inline.
  function ls.dispatchCall(targetVref, resultVpid, method, ...)
    local target = exports[targetVref]
    if not target then
      target = weakExports[targetVref]
      if not target and ssub(targetVref, 1, 3) == 'o+d' then target = durableObject(targetVref) end
    end
    if not target then
      -- The methargs as decoding the body would have made them.
      local array = pass.array
      deliverDecoded(nil, targetVref, resultVpid, true, array(method, array(...)))
    else
      local fn
      if method ~= 'bootstrap' then
        -- findMethod's common case, an exo's method, inline.
        fn = exoMethod(target, method) or findMethod(target, method)
      end
      if fn then
        local done, ok, r, busy = xcall(methodEnded, target, method, fn, methodHandler, target, ...)
        -- methodRan's common case, inline: the method returned without
        -- awaiting and queued no turn, and its result is plain data. The
        -- C codec, given no valToSlot, encodes nothing that needs a slot:
        -- a promise, or a target that pipelines, goes to methodRan.
        -- A result the codec writes flat is encoded and resolved in one
        -- call (resolveValue).
        local plain = done and ok and not busy and resultVpid
        if not (plain and resolveValue(resultVpid, r)) then
          local body = plain and cEncodeParts(r)
          if body then
            resolve(resultVpid, false, body)
          else
            methodRan(resultVpid, done, ok, r, busy)
          end
        end
      else
        invokeLocal(target, resultVpid, method, pack(...))
      end
    end
  end

  --- One resolution of vpid, as its value: a promise the vat made for a
  --- send's result comes as its key in pending, N for "p+<N>".
  function ls.dispatchSettle(vpid, rejected, value)
    local p = pending[vpid] or trackPromise(vpid)
    pending[vpid] = nil
    settleAndResume(p, not rejected, value)
  end
  -- Both, in C where the promise core has them (promise.dispatchers): a
  -- message's common case, an exo's method that returns plain data
  -- without awaiting, runs no Lua function of liveslots', and its other
  -- cases go to the functions above.
  -- What methodRan does with a result resolveValue left is what
  -- dispatchCall does with it, by way of settleVpid.
  if resolveValue and promise.dispatchers then
    ls.dispatchCall, ls.dispatchSettle = promise.dispatchers(exports, exoMethod, xcall, methodEnded,
      methodHandler, resolveValue, ls.dispatchCall, methodRan, pending, trackPromise)
  end
  ls.saveCounters = saveCounters

  ls.trackPromise = trackPromise
  ls.pending = pending
  return ls
end

return M
