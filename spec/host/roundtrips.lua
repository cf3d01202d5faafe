-- Host round trips as the ocap binary drives them (spec/hostdriver_spec.lua):
-- there the host's promise core and C codec are the ones built into the
-- kernel, so queueMessage, the resolution of its result and the main
-- thread's await take their C paths (core/lkernel.c), which a Lua that
-- loads the modules one by one (busted) does not. Prints one line per
-- check. Arguments: the source directory, and a database directory or
-- nothing for memory.
local testing = require 'ocap.testing'

local src, db = arg[1], arg[2]
local kernel = testing.makeKernel({ database = db })
local r = kernel:launchSubcluster({ bootstrap = 'alice', vats = {
  alice = { sourceSpec = src .. '/spec/vats/echo.lua' } } }):await()
local root = r.rootKref
local K = kernel.K

local function say(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  print(table.concat(parts, ' '))
end

-- Every result reaches the host after the cranks that made it are written.
local function await(p)
  local v = p:await()
  if K:pending() ~= 0 then say('unwritten cranks', K:pending()) end
  return v
end

say('integer', await(kernel:queueMessage(root, 'ping', { 41 })))
say('strings', await(kernel:queueMessage(root, 'echo', { 'hi', true, -7 })))
local all = await(kernel:queueMessage(root, 'echoAll', { 'a', false, 3 }))
say('record', all.n, all[1], all[2], all[3])
say('long', #await(kernel:queueMessage(root, 'echo', { ('x'):rep(2000) })))
say('counted', await(kernel:queueMessage(root, 'echo', { n = 2, 'c', nil })))
local ok, err = pcall(await, kernel:queueMessage(root, 'boom', {}))
say('rejected', ok, tostring(err):match('boom') ~= nil)
local ok2, err2 = pcall(await, kernel:queueMessage(root, 'rejectData', {}))
say('rejected data', ok2, type(err2) == 'table' and err2.code)

-- Misuse is refused with the same errors, in the same order, whichever
-- way the call would have gone.
local function refused(f)
  local done, e = pcall(f)
  return done, (tostring(e):gsub('^[^\n]-:%d+: ', ''))
end
say('bad method', refused(function() return kernel:queueMessage(root, 42, { 1 }) end))
say('bad args', refused(function() return kernel:queueMessage(root, 'ping', 7) end))
say('bad both', refused(function() return kernel:queueMessage(root, 42, 7) end))
say('bad kref', refused(function() return kernel:queueMessage('ko999999', 42, 7) end))
say('no args', await(kernel:queueMessage(root, 'echo')))

-- A result with a slot goes the general way, and its presence works.
local thing = await(kernel:queueMessage(root, 'makeThing', { 'label1' }))
say('presence', await(kernel:queueMessage(thing, 'label', {})))

-- A result promise is the kernel's promise: it has its kpid, and passed
-- back in a message it is that promise, which the vat's answer follows.
local p = kernel:queueMessage(root, 'ping', { 5 })
say('kpid', kernel:krefOf(p):match('^kp%d+$') ~= nil)
local order = {}
p:next(function(v) order[#order + 1] = 'next ' .. v end)
say('echoed promise', await(kernel:queueMessage(root, 'echo', { p })))
say('turns', table.concat(order, ','))

-- Many in flight at once, awaited in reverse.
local ps = {}
for i = 1, 5 do ps[i] = kernel:queueMessage(root, 'ping', { i * 10 }) end
local sum = 0
for i = 5, 1, -1 do sum = sum + await(ps[i]) end
say('sum', sum)

-- Which way the round trips went: on the C paths through the binary,
-- the Lua way under plain Lua (spec/hostdriver_spec.lua).
local sends, notifies = K:hostPaths()
say('c paths', sends > 0, notifies > 0)

-- A turn that stops the kernel while await drives it: await reports
-- that nothing can settle the promise any more.
local promise = require 'ocap.promise'
local kit = promise.makePromiseKit()
promise.resolve(nil):next(function() kernel:stop() end)
local ok3, err3 = pcall(function() return kit.promise:await() end)
say('stopped', kernel.stopped, ok3, tostring(err3):match('never settle') ~= nil)
