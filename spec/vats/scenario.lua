-- A vat for promise-ordering scenarios. Every step is logged as
-- "<name>: <event>" so specs can check the exact order across vats.
local ocap = require 'ocap'
local E, makeDefaultExo, makePromiseKit = ocap.E, ocap.makeDefaultExo, ocap.makePromiseKit

local M = {}

function M.buildRootObject(vatPowers, parameters)
  local name = parameters.name
  local log = function(event) vatPowers.logger:log(name .. ': ' .. event) end
  local peers = {}
  local held = {}          -- promise kits waiting for release
  local heldPromise        -- a promise this vat keeps resolving later

  local root
  root = makeDefaultExo(name, {
    bootstrap = function(_, vats) peers = vats end,

    -- 1. promises passed as arguments
    passResolvedBefore = function()
      local kit = makePromiseKit()
      kit.resolve('early')
      log('sending')
      local r = E(peers.bob).takePromise(kit.promise):await()
      log('reply ' .. r)
    end,
    passResolvedAfterSend = function()
      local kit = makePromiseKit()
      log('sending')
      local reply = E(peers.bob).takePromise(kit.promise)
      log('resolving')
      kit.resolve('later')
      log('reply ' .. reply:await())
    end,
    passResolvedAfterReply = function()
      local kit = makePromiseKit()
      log('sending')
      local r = E(peers.bob).takePromiseNoWait(kit.promise):await()
      log('reply ' .. r)
      kit.resolve('last')
      log('resolved')
      log('bob saw ' .. E(peers.bob).lastSeen():await())
    end,
    takePromise = function(_, p)
      log('got promise')
      local v = p:await()
      log('value ' .. v)
      return 'took ' .. v
    end,
    takePromiseNoWait = function(_, p)
      log('got promise')
      p:next(function(v) held.seen = v; log('value ' .. v) end)
      return 'noted'
    end,
    lastSeen = function() return held.seen or 'nothing yet' end,

    -- 2. chains and pipelining
    first = function()
      log('first')
      return makeDefaultExo('second', {
        second = function() log('second'); return 'second done' end,
      })
    end,
    pipeline = function()
      log('sending both')
      local r = E(E(peers.bob).first()).second():await()
      log('got ' .. r)
      return r
    end,
    slowFirst = function()
      log('slowFirst')
      local kit = makePromiseKit()
      held.first = kit
      return kit.promise
    end,
    releaseFirst = function()
      log('release')
      held.first.resolve(makeDefaultExo('late', {
        second = function() log('late second'); return 'late second done' end,
      }))
    end,
    sendToResultBeforeResolution = function()
      local p = E(peers.bob).slowFirst()
      local r = E(p).second()
      log('sent to unresolved result')
      E(peers.bob).releaseFirst():await()
      log('got ' .. r:await())
    end,
    resultAsArgument = function()
      local p = E(peers.bob).makeValue(5)
      local r = E(peers.bob).double(p):await()
      log('double ' .. r)
      return r
    end,
    makeValue = function(_, v) log('makeValue'); return v end,
    double = function(_, p) log('double got promise'); return p:await() * 2 end,
    chain = function()
      local p = ocap.Promise.resolve(1)
      for _ = 1, 5 do p = p:next(function(v) log('chain ' .. v); return v + 1 end) end
      return p:await()
    end,

    -- 3. promises resolved to promises
    promiseToPromise = function()
      local a, b = makePromiseKit(), makePromiseKit()
      a.resolve(b.promise)
      log('a resolved to b')
      local r = E(peers.bob).takePromise(a.promise)
      b.resolve('via b')
      log('reply ' .. r:await())
    end,
    holdPromise = function()
      local kit = makePromiseKit()
      heldPromise = kit
      return kit.promise
    end,
    resolveHeld = function(_, v) log('resolving held'); heldPromise.resolve(v) end,
    crosswise = function()
      -- Each vat hands the other a promise it decides, then both resolve.
      local mine = makePromiseKit()
      local theirs = E(peers.bob).exchange(mine.promise)
      mine.resolve('from alice')
      local got = theirs:await()
      log('alice got ' .. got)
      return got
    end,
    exchange = function(_, p)
      log('exchange')
      local v = p:await()
      log('bob got ' .. v)
      return 'from bob'
    end,

    -- promises resolved to each other: across cranks through the kernel
    exportPromise = function()
      local kit = makePromiseKit()
      held.mutual = kit
      return { p = kit.promise }
    end,
    resolveMutual = function(_, other)
      held.mutual.resolve(other.p)
      return 'resolved'
    end,
    mutualAcrossCranks = function()
      local mine = makePromiseKit()
      local theirs = E(peers.bob).exportPromise():await()
      mine.resolve(theirs.p)
      E(peers.bob).resolveMutual({ p = mine.promise }):await()
      -- As in JavaScript, promises resolved to each other never settle;
      -- a message sent to them waits, and nothing else is held up.
      local r = E(theirs.p).anything()
      r:next(function() log('mutual: fulfilled') end, function() log('mutual: rejected') end)
      return 'sent'
    end,
    mutualInOneCrank = function()
      local a, b = makePromiseKit(), makePromiseKit()
      a.resolve(b.promise)
      b.resolve(a.promise)
      -- Both stay pending (as in JavaScript); nothing hangs the vat.
      return 'still here'
    end,

    -- 4. a lazily produced sequence, walked with eventual calls
    countTo = function(_, n)
      local function node(i)
        if i > n then return { done = true } end
        return { done = false, value = i, rest = makeDefaultExo('node', {
          next = function() return node(i + 1) end,
        }) }
      end
      return node(1)
    end,
    walk = function(_, n)
      local out = {}
      local step = E(peers.bob).countTo(n):await()
      while not step.done do
        out[#out + 1] = step.value
        step = E(step.rest).next():await()
      end
      log('walked ' .. table.concat(out, ','))
      return out
    end,

    -- chains of dependent calls: pipelined, or awaited one by one
    node = function()
      local function makeNode(i)
        return makeDefaultExo('node', {
          next = function() return makeNode(i + 1) end,
          value = function() return i end,
        })
      end
      return makeNode(0)
    end,
    pipelineChain = function(_, n)
      local p = E(peers.bob).node()
      for _ = 1, n do p = E(p).next() end
      return E(p).value():await()
    end,
    awaitChain = function(_, n)
      local node = E(peers.bob).node():await()
      for _ = 1, n do node = E(node).next():await() end
      return E(node).value():await()
    end,

    -- 5. no hung callers
    never = function()
      log('never')
      return makePromiseKit().promise
    end,
    askNever = function()
      local ok, err = pcall(ocap.await, E(peers.bob).never())
      log('never settled: ' .. tostring(ok) .. ' ' .. tostring(err and err.code))
      return err
    end,
    pingBob = function(_, n)
      for i = 1, n do E(peers.bob).ping(i):await() end
      return n
    end,
    ping = function(_, i) return i end,
    unhandled = function()
      ocap.Promise.reject(ocap.makeError('nobody cares'))
      return 'done'
    end,
    manyResolvedAll = function(_, n)
      -- Returns n promises, all resolved, inside one result.
      local out = {}
      for i = 1, n do out[i] = ocap.Promise.resolve(i) end
      return out
    end,
    -- a method's turns run before its result settles
    sendFromTurn = function(_, caller)
      ocap.Promise.resolve():next(function() E(caller).note('from a turn') end)
      return 'returned'
    end,
    note = function(_, what) log('noted ' .. what) end,
    awaitTurnSender = function()
      log('got ' .. E(peers.bob).sendFromTurn(root):await())
    end,
    awaitAndNext = function()
      local p = E(peers.bob).ping(1)
      local task = ocap.spawn(function() p:await(); log('await returned') end)
      p:next(function() log('next ran') end)
      task:await()
      p:next(function() log('later next ran') end):await()
    end,
    self = function() return root end,
    peerRoot = function() return peers.bob end,
    -- a result this vat awaits, passed out and back while pending, is the
    -- promise it holds, and settles once
    sendBack = function()
      local p = E(peers.bob).slowFirst()
      local back = E(peers.bob).wrap(p):await()
      log('same ' .. tostring(rawequal(back.p, p)))
      E(peers.bob).releaseFirst():await()
      p:next(function() log('settled') end):await()
      back.p:await()
      log('done')
    end,
    wrap = function(_, p) return { p = p } end,
  })
  return root
end

return M
