-- Promise pipelining to a decider (docs/promises.md §3), in one kernel
-- without a network: the host stands for a remote peer. A host object's
-- method returns a promise that sends its messages itself (what the
-- answer of a remote peer does, liveslots.setPipeline); the kernel hands
-- the messages vats send to that result to the host at once, in the order
-- they were sent, parked ones first.
local testing = require 'ocap.testing'
local ocap = require 'ocap'
local liveslots = require 'ocap.liveslots'

local E = ocap.E

describe('pipelining to a decider', function()
  local kernel, root, log, answers, sink, pipe

  before_each(function()
    kernel = testing.makeKernel()
    root = kernel:launchSubcluster({
      bootstrap = 'p',
      vats = { p = { sourceSpec = 'spec/vats/pipeliner.lua', globals = { 'setTimeout', 'clearTimeout' } } },
    }):await().rootKref
    log, answers = {}, {}
    sink = ocap.makeDefaultExo('sink', {
      m = function(_, tag)
        log[#log + 1] = 'sink ' .. tag
        return 'done ' .. tag
      end,
    })
    -- a() answers with a promise whose messages go to the sink at once,
    -- as a remote answer's go to its answer position.
    pipe = ocap.makeDefaultExo('pipe', {
      a = function()
        local kit = ocap.makePromiseKit()
        liveslots.setPipeline(kit.promise, function(method, args)
          log[#log + 1] = 'pipelined ' .. args[1]
          return E(sink)[method](table.unpack(args, 1, args.n or #args))
        end)
        answers[#answers + 1] = kit
        return kit.promise
      end,
    })
  end)
  after_each(function() kernel:stop() end)

  local function run(method, ...)
    return kernel:queueMessage(root, method, table.pack(...)):await()
  end

  local function settle(kit)
    liveslots.setPipeline(kit.promise, nil)
    kit.resolve(sink)
  end

  it('hands the decider the messages sent to its unsettled result', function()
    run('direct', pipe, 'direct')
    kernel:run()
    assert.equal(1, #answers)
    assert.same({ 'pipelined direct', 'sink direct' }, log)
    settle(answers[1])
    assert.same({ 'done direct' }, run('collect', 2000))
  end)

  it('hands the host the messages sent to a promise it passed, when it pipelines', function()
    local kit = ocap.makePromiseKit()
    liveslots.setPipeline(kit.promise, function(method, args)
      log[#log + 1] = 'pipelined ' .. args[1]
      return E(sink)[method](args[1])
    end)
    run('sendTo', kit.promise, 'passed')
    kernel:run()
    assert.same({ 'pipelined passed', 'sink passed' }, log)
    settle(kit)
    assert.same({ 'done passed' }, run('collect', 2000))
  end)

  it('lets a host method answer with an object that sends its own messages', function()
    -- As an import of a remote peer does: it is no promise to pipeline on.
    local obj = ocap.makeDefaultExo('obj', { m = function(_, tag) return 'obj ' .. tag end })
    liveslots.setPipeline(obj, function() error('not used: the kernel delivers to the object') end)
    local maker = ocap.makeDefaultExo('maker', { a = function() return obj end })
    run('direct', maker, 'x')
    assert.same({ 'obj x' }, run('collect', 2000))
  end)

  it('hands the decider the messages parked before it took the promise, first and in order', function()
    -- a waits on x, and 'first' and 'second' on a's result, which nobody
    -- decides yet: they are parked.
    local x = ocap.makePromiseKit()
    run('hold', x.promise, 'first')
    run('more', 'second')
    kernel:run()
    assert.same({}, log)
    -- Once x settles, a reaches the host, which decides a's result and
    -- takes its messages: the parked ones come at once, in order, before
    -- the answer settles and before any sent later.
    x.resolve(pipe)
    kernel:run()
    run('more', 'third')
    kernel:run()
    assert.equal(1, #answers)
    assert.same({ 'pipelined first', 'sink first', 'pipelined second', 'sink second', 'pipelined third',
      'sink third' }, log)
    settle(answers[1])
    assert.same({ 'done first', 'done second', 'done third' }, run('collect', 2000))
  end)
end)
