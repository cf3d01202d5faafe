--- The parts of ocap.promise loaded on their first use: `finally` and the
--- combinators (all, allSettled, race, any). Turn for turn they are what
--- promise.lua's header says: each element is subscribed to in list order,
--- and a non-promise element is an already-fulfilled one.
local M = {}

local pcall = pcall

-- The "already resolved" slot of a promise record (core/lpromise.c),
-- which a promise's __newindex writes.
local L <const> = 4

--- Makes finally and the combinators over ocap.promise and its internals.
---@param P table the ocap.promise module
---@param fulfill fun(p: ocap.Promise, v: any) settles p unless it is settled
---@param rejectNow fun(p: ocap.Promise, e: any) rejects p unless it is settled
---@param makeError fun(message: string, name: string): any
---@return table cold finally, all, allSettled, race, any
function M.make(P, fulfill, rejectNow, makeError)
  local C = {}
  local newPromise, onSettle, resolve, pstate = P.makePromise, P.onSettle, P.resolve, P.state

  ---`p:finally(onFinally)`, as in JS: `next(v -> resolve(f()):next(-> v))`.
  ---A rejection passes through as it is: it is not thrown again from a
  ---callback, which would make a string reason an error value (the turn
  ---that settles it is the one that callback's would be).
  ---@param p ocap.Promise
  ---@param onFinally? fun(): any
  ---@return ocap.Promise
  function C.finally(p, onFinally)
    if not onFinally then return p:next() end
    return p:next(function(v)
      return resolve(onFinally()):next(function() return v end)
    end, function(e)
      local d = newPromise()
      onSettle(resolve(onFinally()), function(ok, r)
        if ok then r = e end
        rejectNow(d, r)
      end)
      return d
    end)
  end

  -- Subscribes fn(i, ok, v) to each element of list; returns the element count.
  local function each(list, fn)
    local n = list.n or #list
    for i = 1, n do
      onSettle(list[i], function(ok, value) return fn(i, ok, value) end)
    end
    return n
  end

  ---A promise of the list of the elements' values, in list order; rejected by
  ---the first element to reject. `n` is set on the result when the list had
  ---one or when a value is nil.
  ---@param list any[] a sequence, or packed with `n`
  ---@return ocap.Promise
  function C.all(list)
    local p = newPromise()
    p[L] = true
    local values = { n = list.n }
    local total, remaining = 0, 0
    total = each(list, function(i, ok, v)
      if pstate(p) ~= 'pending' then return end
      if not ok then return rejectNow(p, v) end
      values[i] = v
      if v == nil then values.n = total end
      remaining = remaining - 1
      if remaining == 0 then fulfill(p, values) end
    end)
    local n = total
    remaining = n
    if n == 0 then fulfill(p, values) end
    return p
  end

  ---A promise of `{ status = 'fulfilled', value = v }` or
  ---`{ status = 'rejected', reason = e }` for each element, in list order.
  ---@param list any[]
  ---@return ocap.Promise
  function C.allSettled(list)
    local p = newPromise()
    p[L] = true
    local results = { n = list.n }
    local remaining = 0
    local n = each(list, function(i, ok, v)
      if ok then
        results[i] = { status = 'fulfilled', value = v }
      else
        results[i] = { status = 'rejected', reason = v }
      end
      remaining = remaining - 1
      if remaining == 0 then fulfill(p, results) end
    end)
    remaining = n
    if n == 0 then fulfill(p, results) end
    return p
  end

  ---A promise settled like the first element to settle; pending forever for
  ---an empty list.
  ---@param list any[]
  ---@return ocap.Promise
  function C.race(list)
    local p = newPromise()
    p[L] = true
    each(list, function(_, ok, v)
      if ok then fulfill(p, v) else rejectNow(p, v) end
    end)
    return p
  end

  ---A promise fulfilled like the first element to fulfill; rejected with an
  ---`AggregateError` whose `errors` lists every reason if all reject.
  ---@param list any[]
  ---@return ocap.Promise
  function C.any(list)
    local p = newPromise()
    p[L] = true
    local reasons = { n = list.n }
    local remaining = 0
    local function allRejected()
      local e = makeError('All promises were rejected', 'AggregateError')
      pcall(function() e.errors = reasons end)  -- the error may be hardened
      rejectNow(p, e)
    end
    local n = each(list, function(i, ok, v)
      if pstate(p) ~= 'pending' then return end
      if ok then return fulfill(p, v) end
      reasons[i] = v
      remaining = remaining - 1
      if remaining == 0 then allRejected() end
    end)
    remaining = n
    if n == 0 then allRejected() end
    return p
  end

  return C
end

return M
