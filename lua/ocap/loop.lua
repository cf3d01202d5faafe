--- Running a kernel from a host's own event loop (docs/embedding.md).
---
--- A kernel normally runs when the host calls it (`run`, `await`). A host
--- that already runs an event loop instead runs it in bounded batches from
--- that loop, so that the host's own timers and IO get their turn between
--- batches: `kernel:pump(maxCranks)` runs one batch and `kernel:nextWakeup()`
--- says when the next one is due; any loop with an idle (or zero-delay)
--- callback and a timer can be driven with these two. `kernel:attach(uv)`
--- does it for luv, the libuv binding for Lua; ocap does not need luv, the
--- host passes its own.
local promise = require 'ocap.promise'

local M = {}

M.BATCH = 64
local GROUP_LIMIT = 512

--- Runs promise turns and at most maxCranks cranks; returns true when
--- there may be more to do at once (call it again soon), false when the
--- kernel is idle and has written its cranks to disk.
function M.pump(kernel, maxCranks)
  if kernel.stopped then return false end
  maxCranks = maxCranks or M.BATCH
  if math.type(maxCranks) ~= 'integer' or maxCranks < 1 then
    error('pump: maxCranks must be a positive integer', 3)
  end
  -- Results reach host code only through turns: the cranks that made them
  -- are written first (group commit), as kernel:run does.
  if promise.hasTurns() then kernel:_flushIfNeeded() end
  promise.drain()
  -- Host code in those turns may have stopped the kernel.
  if kernel.stopped then return false end
  -- Remote comms (ocap.remote) handle what their sockets reported, and
  -- write what the cranks and turns queued for peers.
  local remote = kernel.remote
  local moved = remote and remote:pump() or false
  local ran, visible = kernel.K:drive(maxCranks, GROUP_LIMIT)
  if visible then kernel:_afterHostCode() end
  kernel:_settleReaps() -- reapVats() promises whose reaps are done
  if remote and remote:pump() then moved = true end
  if ran == 0 and not moved and not promise.hasTurns() then
    kernel:_flushIfNeeded()
    return false
  end
  return true
end

--- When the kernel next needs a batch: 0 when it has work now (messages
--- queued, promise turns pending); nil when it has nothing pending at all
--- (only a call into the kernel can give it work); otherwise the
--- milliseconds until its next timer (-1: no timer) and the descriptor
--- that becomes readable when its own IO (vat timers, IO channels) is
--- ready, for a loop that can watch descriptors.
function M.nextWakeup(kernel)
  if kernel.stopped then return nil end
  if promise.hasTurns() or kernel.K:queueLength() > 0 then return 0 end
  if kernel.remote and kernel.remote:busy() then return 0 end
  if not kernel.K:loopAlive() then return nil end
  local fd, timeout = kernel.K:loopBackend()
  return timeout, fd
end

local Attachment = {}
Attachment.__index = Attachment

local HANDLE_API = { 'new_idle', 'new_timer', 'new_prepare', 'new_poll' }

--- Runs the kernel from luv's loop (`uv` is the luv module, or any table
--- with luv's new_idle, new_timer, new_prepare and new_poll). Batches run
--- from an idle handle while there is work; while the kernel waits on its
--- own loop, a timer and a poll handle on that loop's descriptor wake it;
--- a prepare handle (which does not keep the loop alive) notices, before
--- each wait, work that luv callbacks gave the kernel. An idle kernel
--- holds no active handle, so `uv.run()` returns once the host's own are
--- done. opts: `batch` (cranks per batch, default 64) and `onError(err)`,
--- called when a batch raises (the kernel is then detached, since luv
--- would end the process on an error raised from its callback); by
--- default the error goes to the kernel's logger.
function M.attach(kernel, uv, opts)
  if kernel.stopped then error('kernel is stopped', 3) end
  if kernel._attachment then error('attach: the kernel is already attached to a loop', 3) end
  if type(uv) ~= 'table' then error('attach: expected the luv module', 3) end
  for _, name in ipairs(HANDLE_API) do
    if type(uv[name]) ~= 'function' then error(('attach: the loop has no %s'):format(name), 3) end
  end
  opts = opts or {}
  local batch = opts.batch or M.BATCH
  if math.type(batch) ~= 'integer' or batch < 1 then error('attach: batch must be a positive integer', 3) end
  local a = setmetatable({ kernel = kernel, uv = uv, batches = 0 }, Attachment)
  a.idle = uv.new_idle()
  a.timer = uv.new_timer()
  a.prepare = uv.new_prepare()
  local run
  --- Arms the handles for the kernel's next batch.
  function a.schedule()
    if a.closed then return end
    local ms, fd = M.nextWakeup(kernel)
    if ms == 0 then
      if not a.idle:is_active() then a.idle:start(run) end
      return
    end
    a.idle:stop()
    a.timer:stop()
    if ms == nil then
      if a.poll then a.poll:stop() end
      return
    end
    if ms > 0 then a.timer:start(ms, 0, run) end
    if fd and fd >= 0 then
      if not a.poll then a.poll = uv.new_poll(fd) end
      a.poll:start('r', run)
    end
  end
  run = function()
    if a.closed then return end
    a.batches = a.batches + 1
    local ok, err = pcall(M.pump, kernel, batch)
    if not ok then
      a:detach()
      if opts.onError then
        opts.onError(err)
      else
        kernel.logger({ level = 'error', tags = { 'kernel' }, vatId = 'kernel',
          message = 'ocap: a batch of the attached kernel failed: ' .. tostring(err) })
      end
      return
    end
    a.schedule()
  end
  -- Only work that luv callbacks gave the kernel needs this check: the
  -- kernel's own sends wake it through Attachment:wake (ocap.kernel).
  a.prepare:start(function()
    if not a.closed and not a.idle:is_active() and M.nextWakeup(kernel) == 0 then a.idle:start(run) end
  end)
  a.prepare:unref()
  kernel._attachment = a
  a.idle:start(run)
  return a
end

--- Starts a batch soon: for work given to the kernel outside the loop's
--- callbacks (the kernel's own sends do this already).
function Attachment:wake()
  if not self.closed and not self.idle:is_active() then self.schedule() end
end

--- Closes the handles: the kernel no longer runs from the loop (it still
--- runs when called, as an unattached kernel does). Stopping the kernel
--- detaches it.
function Attachment:detach()
  if self.closed then return end
  self.closed = true
  for _, h in ipairs({ self.idle, self.timer, self.prepare, self.poll }) do
    if h and not h:is_closing() then h:close() end
  end
  if self.kernel._attachment == self then self.kernel._attachment = nil end
end

return M
