--- The parts of ocap.liveslots that most vats never run, loaded on their
--- first use: E's rarer forms (E.sendOnly, E.when, E.get) and a notify
--- that settles several promises at once. An idle vat, or one whose
--- deliveries each settle one promise, never loads this module.
local M = {}

local setmetatable = setmetatable

--- E.sendOnly, E.when and E.get, over liveslots' proxy maker.
---@param makeProxy fun(target: any, wantResult: boolean): table
---@param promise table ocap.promise
---@return table forms sendOnly, when, get
function M.eForms(makeProxy, promise)
  local forms = {}
  --- E.sendOnly(target).method(...): a send whose result nobody awaits.
  function forms.sendOnly(target) return makeProxy(target, false) end
  --- E.when(v, onFulfilled, onRejected): reacts to v once it settles.
  function forms.when(v, onFulfilled, onRejected)
    return promise.resolve(v):next(onFulfilled, onRejected)
  end
  --- E.get(target).field: a promise of the field of what target settles to.
  function forms.get(target)
    return setmetatable({}, { __index = function(_, k)
      return promise.resolve(target):next(function(t) return t[k] end)
    end })
  end
  return forms
end

--- A notify of several resolutions (each { vpid, rejected, body, slots }),
--- over one liveslots instance's internals. Every promise is known before
--- any value is decoded: a value may name another promise of the same
--- notify.
---@return fun(resolutions: table[])
function M.notifyMany(pending, trackPromise, decodeCapdata, normalizeError, resolvePromise, rejectPromise,
                      settleAndResume)
  return function(resolutions)
    local n = #resolutions
    for i = 1, n do trackPromise(resolutions[i][1]) end
    for i = 1, n do
      local r = resolutions[i]
      local p = pending[r[1]]
      local ok, v = decodeCapdata(r[3], r[4])
      if not ok then v = normalizeError(v) end
      ok = ok and not r[2]
      if i < n then
        if ok then resolvePromise(p, v) else rejectPromise(p, v) end
      else
        for j = 1, n do pending[resolutions[j][1]] = nil end
        -- Usually one coroutine awaits the last, and resumes at once.
        settleAndResume(p, ok, v)
      end
    end
  end
end

return M
