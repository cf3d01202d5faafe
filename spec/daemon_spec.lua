-- `ocap daemon` (lua/ocap/daemon.lua, core/lrpc.c), driven as a user
-- would: the real binary, a temporary home, JSON-RPC over its Unix socket.
-- Readiness is polled a bounded number of times; no check depends on time.
local cjson = require 'cjson'
local rpc = require('ocap.core').rpc

local support = require 'support'
local BIN = support.BIN
local SRC_ABS = support.SRC_ABS
local q = support.q
local slurp = support.slurp
local exists = support.exists

local function isSocket(path) return os.execute('test -S ' .. q(path)) == true end

local scratch = {}

local function tempHome()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute('mkdir -m 700 ' .. q(dir)))
  scratch[#scratch + 1] = dir
  return dir .. '/home'
end

--- Runs `ocap daemon --home HOME <args>`; returns stdout, stderr, exit code.
local function daemon(home, args, env)
  local base = home:match('^(.*)/[^/]*$')
  local out, err = base .. '/.stdout', base .. '/.stderr'
  local _, _, code = os.execute(('%s %s daemon --home %s %s >%s 2>%s </dev/null'):format(
    env or '', q(BIN), q(home), args, q(out), q(err)))
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  return o, e, code
end

local function pidOf(home) return tonumber(slurp(home .. '/daemon.pid'):match('%d+')) end

local function call(home, line)
  local reply = assert(rpc.call(home .. '/daemon.sock', line))
  return cjson.decode(reply)
end

local function counterConfig()
  return cjson.encode({ { bootstrap = 'c', vats = { c = { sourceSpec = SRC_ABS .. '/spec/vats/counter.lua' } } } })
end

describe('ocap daemon', function()
  local homes = {}
  local function newHome()
    local h = tempHome()
    homes[#homes + 1] = h
    return h
  end

  after_each(function()
    for _, h in ipairs(homes) do
      local pid = pidOf(h)
      if pid then rpc.kill(pid, 9) end
    end
    homes = {}
    for _, d in ipairs(scratch) do os.execute('rm -rf ' .. q(d)) end
    scratch = {}
  end)

  it('starts, answers, keeps committed state across kill -9 and a restart, and stops', function()
    local home = newHome()
    local _
    local out, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    local pid = tonumber(out:match('^started pid (%d+)'))
    assert.is_number(pid, out)
    assert.are.equal(pid, pidOf(home))
    -- The socket is the owner's only; the home is created private.
    local mode = io.popen('stat -c %a ' .. q(home .. '/daemon.sock')):read('l')
    assert.are.equal('600', mode)
    assert.are.equal('700', io.popen('stat -c %a ' .. q(home)):read('l'))

    out, err, code = daemon(home, 'status')
    assert.are.equal(0, code, err)
    assert.matches('^running pid ' .. pid, out)

    out, err, code = daemon(home, 'exec launchSubcluster ' .. q(counterConfig()))
    assert.are.equal(0, code, err)
    local launched = cjson.decode(out)
    assert.are.equal('bootstrapped', launched.bootstrapResult)
    local kref = launched.rootKref
    assert.matches('^ko%d+$', kref)

    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' increment ' .. q('[5]'))
    assert.are.equal(0, code, err)
    assert.are.equal('5', out:match('^(.-)\n'))

    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' get --raw')
    assert.are.equal(0, code, err)
    local capdata = cjson.decode(out)
    assert.are.equal('#5', capdata.body, out)
    assert.are.same({}, capdata.slots)

    -- kill -9: what was committed survives; the stale pid file and socket
    -- are recovered by the next start.
    rpc.kill(pid, 9)
    local tries = 0
    while rpc.kill(pid, 0) and tries < 400 do
      os.execute('sleep 0.05')
      tries = tries + 1
    end
    out, _, code = daemon(home, 'status')
    assert.are.equal(1, code)
    assert.matches('not running %(stale pid file: ' .. pid .. '%)', out)
    assert.is_true(isSocket(home .. '/daemon.sock'))

    out, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    local pid2 = tonumber(out:match('^started pid (%d+)'))
    assert.is_number(pid2, out)
    assert.are_not.equal(pid, pid2)
    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' increment')
    assert.are.equal(0, code, err)
    assert.are.equal('6', out:match('^(.-)\n'))

    -- A second start reports the running daemon.
    out, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    assert.matches('^running pid ' .. pid2, out)

    -- stop commits; the next daemon sees the last increment.
    out, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
    assert.matches('^stopped pid ' .. pid2, out)
    assert.is_false(exists(home .. '/daemon.pid'))
    assert.is_false(isSocket(home .. '/daemon.sock'))
    _, _, code = daemon(home, 'status')
    assert.are.equal(1, code)
    _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' get')
    assert.are.equal(0, code, err)
    assert.are.equal('6', out:match('^(.-)\n'))

    _, err, code = daemon(home, 'exec terminateSubcluster ' .. q(cjson.encode({ launched.subclusterId })))
    assert.are.equal(0, code, err)
    _, err, code = daemon(home, 'queueMessage ' .. kref .. ' get')
    assert.are.equal(1, code)
    assert.matches('ocap daemon: ', err)

    -- The log is one JSON object per line.
    local n = 0
    for line in io.lines(home .. '/daemon.log') do
      assert.is_table(cjson.decode(line), line)
      n = n + 1
    end
    assert.is_true(n > 3)

    _, err, code = daemon(home, 'purge --force')
    assert.are.equal(0, code, err)
    assert.is_false(exists(home .. '/db'))
    assert.is_false(exists(home .. '/daemon.pid'))
  end)

  it('answers bad requests with JSON-RPC errors and keeps serving; bad clients do no harm', function()
    local home = newHome()
    local _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    -- A client that connects and never sends, one that sends a line
    -- without its end, both kept open for the whole test.
    local silent = assert(rpc.connect(home .. '/daemon.sock'))
    local partial = assert(rpc.connect(home .. '/daemon.sock'))
    assert.is_true(rpc.send(partial, '{"jsonrpc":"2.0","id":1,"meth'))
    -- One that asks and hangs up before the answer.
    local rude = assert(rpc.connect(home .. '/daemon.sock'))
    assert.is_true(rpc.send(rude, '{"jsonrpc":"2.0","id":1,"method":"getStatus"}\n'))
    rpc.close(rude)

    assert.are.equal(-32700, call(home, 'this is not json').error.code)
    assert.are.equal(-32600, call(home, '[1,2]').error.code)
    assert.are.equal(-32600, call(home, '{"jsonrpc":"2.0","id":2}').error.code)
    local a = call(home, '{"jsonrpc":"2.0","id":3,"method":"noSuchMethod"}')
    assert.are.equal(-32601, a.error.code)
    assert.are.equal(3, a.id)
    assert.are.equal(-32602, call(home, '{"jsonrpc":"2.0","id":4,"method":"getStatus","params":7}').error.code)
    a = call(home, '{"jsonrpc":"2.0","id":5,"method":"queueMessage","params":["ko999999","x",[]]}')
    assert.are.equal(-32000, a.error.code)
    a = call(home, '{"jsonrpc":"2.0","id":6,"method":"launchSubcluster","params":[{"bootstrap":"zz"}]}')
    assert.are.equal(-32000, a.error.code)
    -- Over 1 MiB: refused, the rest of the line discarded.
    a = call(home, '{"jsonrpc":"2.0","id":7,"method":"getStatus","pad":"' .. string.rep('x', rpc.MAX_LINE) .. '"}')
    assert.are.equal(-32600, a.error.code)
    assert.matches('too large', a.error.message)

    a = call(home, '{"jsonrpc":"2.0","id":8,"method":"getStatus"}')
    assert.are.equal(8, a.id)
    assert.is_table(a.result.vats)
    rpc.close(silent)
    rpc.close(partial)
    local out
    out, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
    assert.matches('^stopped', out)
  end)

  it('serves at most MAX_CLIENTS clients at once, telling the next one so', function()
    local home = newHome()
    local _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    -- Clients that connect and never send, five more than the daemon
    -- serves (the connections `start` made may not all be gone yet, so
    -- how many are turned away is counted, not assumed).
    local idle = {}
    for i = 1, rpc.MAX_CLIENTS + 5 do idle[i] = assert(rpc.connect(home .. '/daemon.sock')) end
    -- The last one asks something: served or turned away, it gets a line,
    -- and by then the daemon has dealt with every earlier connection (it
    -- accepts them in order, and tells the ones it turns away at once).
    -- (One turned away may already be hung up on, so the send may fail.)
    local last = idle[#idle]
    rpc.send(last, '{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
    assert.truthy(rpc.recv(last))
    local busy = ('too many clients (limit %d)'):format(rpc.MAX_CLIENTS)
    local served, refused = 0, 0
    for i = 1, #idle - 1 do
      local reply = rpc.recv(idle[i], 0)
      if reply then
        local answer = cjson.decode(reply:match('^(.-)\n'))
        assert.are.equal(-32000, answer.error.code)
        assert.are.equal(busy, answer.error.message)
        refused = refused + 1
      else
        served = served + 1
      end
    end
    assert.is_true(served <= rpc.MAX_CLIENTS, tostring(served))
    assert.is_true(refused >= 4, tostring(refused))
    -- Once they hang up the daemon serves again (it notices their going in
    -- its own time: asked a bounded number of times).
    for _, fd in ipairs(idle) do rpc.close(fd) end
    local pong
    for _ = 1, 200 do
      local line = rpc.call(home .. '/daemon.sock', '{"jsonrpc":"2.0","id":1,"method":"ping"}')
      pong = line and cjson.decode(line).result
      if pong then break end
    end
    assert.is_table(pong)
  end)

  it('reports progress on stderr when asked (or to a terminal), else stays quiet', function()
    local home = newHome()
    local out, err, code = daemon(home, 'start', 'OCAP_PROGRESS=1')
    assert.are.equal(0, code, err)
    local pid = tonumber(out:match('^started pid (%d+)'))
    assert.matches('^ocap daemon: starting the daemon of home ' .. home:gsub('%p', '%%%0') .. ' %(log ', err)
    out, err, code = daemon(home, 'stop', 'OCAP_PROGRESS=1')
    assert.are.equal(0, code, err)
    assert.are.equal('stopped pid ' .. pid .. '\n', out)
    assert.matches('^ocap daemon: asked the daemon %(pid ' .. pid .. '%) to stop\n', err)
    -- Not a terminal, not asked: nothing but the result.
    out, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    assert.are.equal('', err)
    assert.matches('^started pid', out)
    out, err, code = daemon(home, 'purge --force', 'OCAP_PROGRESS=1')
    assert.are.equal(0, code, err)
    assert.matches("ocap daemon: deleting the database " .. (home .. '/db'):gsub('%p', '%%%0'), err)
    assert.matches('^purged', out)
  end)

  it("runs IO channels on its loop: a vat waiting on read() wakes when a client sends", function()
    local home = newHome()
    local _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    local sock = home:match('^(.*)/[^/]*$') .. '/chan.sock'
    local out
    out, err, code = daemon(home, 'exec launchSubcluster ' .. q(cjson.encode({ { bootstrap = 'u',
      io = { chan = { type = 'socket', path = sock } },
      vats = { u = { sourceSpec = SRC_ABS .. '/spec/vats/io_user.lua' } } } })))
    assert.are.equal(0, code, err)
    local root = cjson.decode(out).rootKref
    -- The read is asked for first: the daemon must wake for the client.
    local fd = assert(rpc.connect(home .. '/daemon.sock'))
    assert.is_true(rpc.send(fd, cjson.encode({ jsonrpc = '2.0', id = 9, method = 'queueMessage',
      params = { root, 'read', { 'chan' } } }) .. '\n'))
    -- Meanwhile the daemon answers others.
    assert.are.equal(0, select(3, daemon(home, 'status')))
    local client = assert(rpc.connect(sock))
    assert.is_true(rpc.send(client, 'hello daemon\n'))
    local got, why = rpc.recv(fd)
    assert(got, tostring(why) .. slurp(home .. "/daemon.log"))
    local answer = cjson.decode(got:match('^(.-)\n'))
    assert.are.same({ ok = true, value = 'hello daemon' }, answer.result)
    rpc.close(fd)
    rpc.close(client)
    _, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
  end)

  it('keeps serving while a request waits for its promise', function()
    local home = newHome()
    local base = home:match('^(.*)/[^/]*$')
    local _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    local gate = SRC_ABS .. '/spec/vats/gate.lua'
    local config = cjson.encode({ { bootstrap = 'g', vats = { g = { sourceSpec = gate } } } })
    local out
    out, err, code = daemon(home, 'exec launchSubcluster ' .. q(config))
    assert.are.equal(0, code, err)
    local kref = cjson.decode(out).rootKref
    -- A client waits in the background for gate.wait().
    assert(os.execute(('%s daemon --home %s queueMessage %s wait >%s/w.out 2>&1 &'):format(q(BIN), q(home), kref,
      q(base))))
    local tries = 0
    while not slurp(home .. '/daemon.log'):find('"method":"queueMessage"') and tries < 400 do
      os.execute('sleep 0.05')
      tries = tries + 1
    end
    assert.is_truthy(slurp(home .. '/daemon.log'):find('"method":"queueMessage"'))
    -- Meanwhile others are served and cranks run.
    _, err, code = daemon(home, 'status')
    assert.are.equal(0, code, err)
    assert.are.equal('', slurp(base .. '/w.out'))
    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' open ' .. q('[7]'))
    assert.are.equal(0, code, err)
    assert.are.equal('1', out:match('^(.-)\n'))
    tries = 0
    while slurp(base .. '/w.out') == '' and tries < 400 do
      os.execute('sleep 0.05')
      tries = tries + 1
    end
    assert.are.equal('7\n', slurp(base .. '/w.out'))
    _, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
  end)

  it('stops as `stop` does on SIGTERM', function()
    local home = newHome()
    local out, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    local pid = tonumber(out:match('pid (%d+)'))
    out, err, code = daemon(home, 'exec launchSubcluster ' .. q(counterConfig()))
    assert.are.equal(0, code, err)
    local kref = cjson.decode(out).rootKref
    assert.are.equal(0, select(3, daemon(home, 'queueMessage ' .. kref .. ' increment ' .. q('[3]'))))
    rpc.kill(pid, 15)
    -- Only a graceful stop removes the pid file (kill -9 leaves it).
    local tries = 0
    while exists(home .. '/daemon.pid') and tries < 400 do
      os.execute('sleep 0.05')
      tries = tries + 1
    end
    assert.is_false(exists(home .. '/daemon.pid'))
    assert.matches('"stopping on SIGTERM"', slurp(home .. '/daemon.log'))
    assert.matches('"daemon stopped"', slurp(home .. '/daemon.log'))
    assert.are.equal(0, select(3, daemon(home, 'start')))
    out, err, code = daemon(home, 'queueMessage ' .. kref .. ' get')
    assert.are.equal(0, code, err)
    assert.are.equal('3', out:match('^(.-)\n'))
  end)

  it('rotates its log at the size limit, keeping one JSON object per line', function()
    local home = newHome()
    local _, err, code = daemon(home, 'start', 'OCAP_DAEMON_LOG_LIMIT=2000')
    assert.are.equal(0, code, err)
    for i = 1, 40 do
      assert.are.equal(i, call(home, '{"jsonrpc":"2.0","id":' .. i .. ',"method":"getSubclusters"}').id)
    end
    local old = slurp(home .. '/daemon.log.1')
    assert.is_true(#old >= 2000, old)
    assert.is_true(#old < 2200, #old)
    assert.is_true(#slurp(home .. '/daemon.log') < 2200)
    for _, f in ipairs({ home .. '/daemon.log', home .. '/daemon.log.1' }) do
      for line in io.lines(f) do assert.is_table(cjson.decode(line), line) end
    end
    _, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
  end)

  it('is what `ocap caplet` goes through while it runs', function()
    local home = newHome()
    local base = home:match('^(.*)/[^/]*$')
    local _, err, code = daemon(home, 'start')
    assert.are.equal(0, code, err)
    assert(os.execute(('mkdir %s/echo && %s bundle -o %s/echo %s/vats/caplets/echo/echo.lua >/dev/null'
      .. ' && cp %s %s/echo/'):format(q(base), q(BIN), q(base), q(SRC_ABS),
      q(SRC_ABS .. '/vats/caplets/echo/manifest.json'), q(base))))
    local function caplet(args)
      local _, _, c = os.execute(('cd %s && %s caplet --home %s %s >%s/.o 2>%s/.e'):format(q(base), q(BIN), q(home),
        args, q(base), q(base)))
      return c, slurp(base .. '/.o'), slurp(base .. '/.e')
    end
    -- The daemon holds the database: these succeed only through it. A
    -- relative path is the caller's, not the daemon's.
    assert.are.same({ 0, 'com.example.echo s2\n', '' }, { caplet('install echo') })
    assert.are.same({ 0, 'com.example.echo 1.0.0 s2\n', '' }, { caplet('list') })
    assert.are.same({ 0, '"Echo: hi"\n', '' }, { caplet("call com.example.echo echo '[\"hi\"]'") })
    local out
    out, err, code = daemon(home, 'exec caplet.list')
    assert.are.equal(0, code, err)
    assert.are.same({ 'com.example.echo' }, cjson.decode(out))
    assert.are.same({ 1, '', 'ocap caplet: caplet "com.example.echo" is already installed\n' },
      { caplet('install echo') })
    assert.are.same({ 0, '', '' }, { caplet('uninstall com.example.echo') })
    assert.are.same({ 0, '', '' }, { caplet('list') })
    _, err, code = daemon(home, 'stop')
    assert.are.equal(0, code, err)
  end)

  it('lets one of two concurrent starts win', function()
    local home = newHome()
    local base = home:match('^(.*)/[^/]*$')
    local cmd = ('%s daemon --home %s start'):format(q(BIN), q(home))
    assert(os.execute(('(%s >%s/a 2>&1 & %s >%s/b 2>&1 & wait)'):format(cmd, q(base), cmd, q(base))))
    local a, b = slurp(base .. '/a'), slurp(base .. '/b')
    local pa, pb = a:match('pid (%d+)'), b:match('pid (%d+)')
    assert.is_string(pa, a)
    assert.are.equal(pa, pb, a .. b)
    local started = select(2, (a .. b):gsub('started pid', ''))
    assert.are.equal(1, started, a .. b)
    assert.are.equal(tonumber(pa), pidOf(home))
  end)

  it('refuses a home writable by others or owned by someone else', function()
    local home = newHome()
    assert(os.execute('mkdir -p ' .. q(home) .. ' && chmod 777 ' .. q(home)))
    local _, err, code = daemon(home, 'start')
    assert.are.equal(1, code)
    assert.matches('writable by other users', err)
    assert.is_false(isSocket(home .. '/daemon.sock'))
    if io.popen('id -u'):read('l') == '0' then
      assert(os.execute('chmod 700 ' .. q(home) .. ' && chown 65534 ' .. q(home)))
      _, err, code = daemon(home, 'start')
      assert.are.equal(1, code)
      assert.matches('owned by another user', err)
    end
  end)

  it('reports usage errors with status 2 and one line', function()
    local home = newHome()
    for _, args in ipairs({ '', 'frob', 'purge', 'exec', 'status extra', 'exec getStatus notjson',
      'queueMessage ko1', 'start --bogus', 'stop --raw' }) do
      local out, err, code = daemon(home, args)
      assert.are.equal(2, code, args)
      assert.are.equal('', out)
      assert.matches("^ocap daemon: [^\n]+ %(see 'ocap daemon %-%-help'%)\n$", err)
    end
    local out, _, code = daemon(home, '--help')
    assert.are.equal(0, code)
    assert.matches('usage: ocap daemon', out)
  end)
end)
