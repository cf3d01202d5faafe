-- luacheck: read globals setTimeout clearTimeout
-- A vat that sends messages to the results of other messages without
-- waiting for them (promise pipelining; spec/pipelining_spec.lua and
-- spec/remote_spec.lua). What it awaits it bounds with a timer: an answer
-- that never comes fails the spec with a reason instead of hanging it.
local ocap = require 'ocap'
local E = ocap.E

local M = {}

--- p, or a rejection saying that `what` got no answer within ms.
local function bounded(p, ms, what)
  local kit = ocap.makePromiseKit()
  local id = setTimeout(function()
    kit.reject(('%s: no answer within %d ms'):format(what, ms))
  end, ms)
  p:next(function(v)
    clearTimeout(id)
    kit.resolve(v)
  end, function(e)
    clearTimeout(id)
    kit.reject(e)
  end)
  return kit.promise
end

--- How each of the named promises settled: { ok = bool, value = v }.
local function outcomes(ps, ms)
  local bs = {}
  for name, p in pairs(ps) do bs[name] = bounded(p, ms, name) end
  local out = {}
  for name, b in pairs(bs) do
    local ok, v = pcall(ocap.await, b)
    out[name] = { ok = ok, value = v }
  end
  return out
end

--- E(E(E(target)[first](n)).b()).c(): the three outcomes.
local function chain(target, first, n, ms)
  local pa = E(target)[first](n)
  local pb = E(pa).b()
  local pc = E(pb).c()
  return outcomes({ a = pa, b = pb, c = pc }, ms)
end

function M.buildRootObject()
  local held, services
  local results = {}
  return ocap.makeDefaultExo('pipeliner', {
    bootstrap = function(_, _, svcs) services = svcs end,
    chain = function(_, target, first, n, ms) return chain(target, first, n, ms) end,
    -- The same chain on the object of a sturdyref, redeemed and not awaited.
    redeemChain = function(_, url, first, n, ms)
      return chain(E(services.ocapURLRedemptionService).redeem(url), first, n, ms)
    end,
    -- n messages step(i) to the result of a(n), then the target's log.
    steps = function(_, target, n, ms)
      local pa = E(target).a(n)
      local ps = {}
      for i = 1, n do ps['step' .. i] = E(pa).step(i) end
      local out = outcomes(ps, ms)
      out.log = outcomes({ log = E(pa).log() }, ms).log
      return out
    end,
    -- E(E(target).a()).m(tag), not awaited.
    direct = function(_, target, tag)
      results[#results + 1] = E(E(target).a()).m(tag)
      return true
    end,
    -- E(x).a(), kept, and E(that).m(tag), not awaited.
    hold = function(_, x, tag)
      held = E(x).a()
      results[#results + 1] = E(held).m(tag)
      return true
    end,
    -- E(x).m(tag), not awaited.
    sendTo = function(_, x, tag)
      results[#results + 1] = E(x).m(tag)
      return true
    end,
    -- E(held).m(tag), not awaited.
    more = function(_, tag)
      results[#results + 1] = E(held).m(tag)
      return true
    end,
    -- n calls of target's itself() in a chain, each sent to the previous
    -- result at once (pipelined) or once it settled (bench/run.lua).
    itselfChain = function(_, target, n, pipelined)
      local p = target
      for _ = 1, n do
        p = E(p).itself()
        if not pipelined then p = p:await() end
      end
      if pipelined then p:await() end
      return true
    end,
    -- The results of the messages sent so far, in the order sent.
    collect = function(_, ms)
      local out = {}
      for i, p in ipairs(results) do out[i] = bounded(p, ms, 'result ' .. i):await() end
      return out
    end,
  })
end

return M
