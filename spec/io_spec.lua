-- IO channels (ClusterConfig.io; lua/ocap/io.lua, core/lio.c), each type
-- driven by a real client: Unix sockets in a temporary directory, TCP on
-- the loopback, files, and the console of a real `ocap run`. Clients are
-- blocking sockets of this process (ocap.core's rpc): what they send waits
-- in the socket until the kernel's loop reads it, and they read only what
-- a vat has been seen to write, so no check depends on time.
local testing = require 'ocap.testing'
local promise = require 'ocap.promise'
local support = require 'support'
local rpc = require('ocap.core').rpc
local ioChannels = require 'ocap.io'

local USER = 'spec/vats/io_user.lua'
-- What a vat sees in front of a kernel service's failure.
local DF = '[KERNEL:DELIVERY_FAILED] '
local BIN = support.BIN
local SRC = support.SRC
local q = support.q
local slurp = support.slurp
local spit = support.spit

local function cluster(io, vats)
  return { bootstrap = 'user', io = io, vats = vats or { user = { sourceSpec = USER } } }
end

--- Reads from fd until want bytes came (the vat was seen to write them).
local function recvAll(fd, want)
  local got = ''
  while #got < want do
    local chunk, why = rpc.recv(fd)
    if not chunk then return got, why end
    got = got .. chunk
  end
  return got
end

describe('IO channels', function()
  local kernel, dir
  local fds = {}
  local function connect(path)
    local fd = assert(rpc.connect(path))
    fds[#fds + 1] = fd
    return fd
  end
  local function tcp(address)
    local host, port = address:match('^(.*):(%d+)$')
    local fd = assert(rpc.tcpConnect(host, tonumber(port)))
    fds[#fds + 1] = fd
    return fd
  end
  local function hangUp(fd)
    for i, f in ipairs(fds) do
      if f == fd then table.remove(fds, i) end
    end
    rpc.close(fd)
  end
  local function launch(io, vats)
    return kernel:launchSubcluster(cluster(io, vats)):await()
  end
  local function call(root, method, ...)
    return kernel:queueMessage(root, method, table.pack(...)):await()
  end

  before_each(function()
    dir = testing.tempDir()
    kernel = testing.makeKernel()
  end)

  after_each(function()
    for _, fd in ipairs(fds) do rpc.close(fd) end
    fds = {}
    if kernel then kernel:stop() end
    kernel = nil
  end)

  describe('socket', function()
    it('serves one client at a time, line by line, and ends with nil', function()
      local path = dir .. '/chat.sock'
      local r = launch({ chat = { type = 'socket', path = path } })
      assert.same({ 'chat' }, r.bootstrapResult)
      local root = r.rootKref
      local fd = connect(path)
      rpc.send(fd, 'hello\nworld\n')
      assert.same({ ok = true, value = 'hello' }, call(root, 'read', 'chat'))
      assert.same({ ok = true, value = 'world' }, call(root, 'read', 'chat'))
      -- A second client while the first is there is hung up on.
      local other = connect(path)
      assert.same({ ok = true }, call(root, 'write', 'chat', 'answer'))
      assert.equal('answer\n', recvAll(fd, 7))
      local _, why = rpc.recv(other)
      assert.equal('eof', why)
      -- The first client's last line has no newline: it still counts.
      rpc.send(fd, 'last')
      hangUp(fd)
      assert.same({ ok = true, value = 'last' }, call(root, 'read', 'chat'))
      assert.same({ ok = true }, call(root, 'read', 'chat'))
      -- Its end read, the next client is served.
      local third = connect(path)
      rpc.send(third, 'again\n')
      assert.same({ ok = true, value = 'again' }, call(root, 'read', 'chat'))
      assert.is_true(os.execute('test -S ' .. q(path)))
      assert.equal('600', io.popen('stat -c %a ' .. q(path)):read('l'))
    end)

    it('does not block other vats while a vat waits on read()', function()
      local path = dir .. '/slow.sock'
      local r = launch({ slow = { type = 'socket', path = path } })
      local other = launch(nil)
      local waiting = kernel:queueMessage(r.rootKref, 'read', { 'slow' })
      -- A client that connects and never sends changes nothing.
      local fd = connect(path)
      for i = 1, 3 do assert.equal(i, call(other.rootKref, 'ping', i)) end
      -- Nor does it block the waiting vat itself.
      assert.equal(7, call(r.rootKref, 'ping', 7))
      kernel:run()
      assert.equal('pending', promise.state(waiting))
      rpc.send(fd, 'at last\n')
      assert.same({ ok = true, value = 'at last' }, waiting:await())
    end)

    it('lets a vat answer a line and keeps serving after a client vanishes mid-answer', function()
      local path = dir .. '/echo.sock'
      local r = launch({ echo = { type = 'socket', path = path } })
      local fd = connect(path)
      rpc.send(fd, 'q\n')
      assert.same({ ok = true, value = 'q' }, call(r.rootKref, 'read', 'echo'))
      hangUp(fd)
      -- The peer is gone: the write fails (it must not kill the process
      -- with SIGPIPE), and the kernel goes on.
      local w = call(r.rootKref, 'write', 'echo', 'too late')
      assert.is_false(w.ok)
      assert.matches('^%[KERNEL:DELIVERY_FAILED%] IO channel "echo" write failed: ', w.error)
      assert.same({ ok = true }, call(r.rootKref, 'read', 'echo'))
      local fd2 = connect(path)
      rpc.send(fd2, 'x\ny\n')
      assert.equal(2, call(r.rootKref, 'echoN', 'echo', 2))
      assert.equal('X\nY\n', recvAll(fd2, 4))
      hangUp(fd2)
      assert.equal(0, call(r.rootKref, 'echo', 'echo'))
    end)

    it('drops a line longer than the limit and rejects the read that meets it', function()
      local path = dir .. '/long.sock'
      local r = launch({ long = { type = 'socket', path = path } })
      local fd = connect(path)
      rpc.send(fd, ('x'):rep(ioChannels.MAX_LINE + 100) .. '\nshort\n')
      local got = call(r.rootKref, 'read', 'long')
      assert.is_false(got.ok)
      assert.equal(DF .. ('IO channel "long" line longer than %d bytes (dropped)'):format(ioChannels.MAX_LINE),
        got.error)
      assert.same({ ok = true, value = 'short' }, call(r.rootKref, 'read', 'long'))
      -- A line without end that grows past the limit is dropped too.
      rpc.send(fd, ('y'):rep(ioChannels.MAX_LINE + 10))
      assert.is_false(call(r.rootKref, 'read', 'long').ok)
      rpc.send(fd, 'tail of it\nnext\n')
      assert.same({ ok = true, value = 'next' }, call(r.rootKref, 'read', 'long'))
    end)

    it('enforces the direction', function()
      local r = launch({ inbox = { type = 'socket', path = dir .. '/in.sock', direction = 'in' },
        outbox = { type = 'socket', path = dir .. '/out.sock', direction = 'out' } })
      assert.same({ ok = false, error = DF .. 'IO channel "inbox" is read-only' },
        call(r.rootKref, 'write', 'inbox', 'x'))
      assert.same({ ok = false, error = DF .. 'IO channel "outbox" is write-only' }, call(r.rootKref, 'read', 'outbox'))
      assert.same({ ok = false, error = DF .. 'IO channel "outbox" cannot write: no client is connected' },
        call(r.rootKref, 'write', 'outbox', 'x'))
    end)

    it('fails the launch naming the channel when its path is bad', function()
      local e = support.rejection(kernel:launchSubcluster(cluster({
        s = { type = 'socket', path = dir .. '/no/such/dir/x.sock' } })))
      assert.equal(('ClusterConfig.io.s.path: cannot listen on "%s": no such file or directory')
        :format(dir .. '/no/such/dir/x.sock'), e.message)
      spit(dir .. '/plain', 'not a socket')
      e = support.rejection(kernel:launchSubcluster(cluster({ s = { type = 'socket', path = dir .. '/plain' } })))
      assert.matches('^ClusterConfig%.io%.s%.path: cannot listen on ".*": address already in use$', e.message)
      assert.equal('not a socket', slurp(dir .. '/plain'))
      assert.equal(0, #kernel:getStatus().vats)
    end)

    it('rolls the channels back when the launch fails', function()
      local path = dir .. '/rb.sock'
      -- The vat cannot be loaded: the socket made for it must be closed.
      local e = support.rejection(kernel:launchSubcluster(cluster({ s = { type = 'socket', path = path } },
        { user = { sourceSpec = dir .. '/missing.lua' } })))
      assert.matches('sourceSpec', e.message)
      assert.is_nil(rpc.connect(path))
      -- The second channel is bad: the first is closed again.
      e = support.rejection(kernel:launchSubcluster(cluster({ a = { type = 'socket', path = path },
        b = { type = 'file', path = dir .. '/none/f', direction = 'in' } })))
      assert.matches('^ClusterConfig%.io%.b%.path: cannot open', e.message)
      assert.is_nil(rpc.connect(path))
      -- And the path is free for a launch that works.
      local r = launch({ s = { type = 'socket', path = path } })
      local fd = connect(path)
      rpc.send(fd, 'ok\n')
      assert.same({ ok = true, value = 'ok' }, call(r.rootKref, 'read', 's'))
    end)

    it('is closed when its subcluster is terminated', function()
      local path = dir .. '/t.sock'
      local r = launch({ t = { type = 'socket', path = path } })
      local fd = connect(path)
      hangUp(fd)
      local svc = kernel.services['io:' .. r.subclusterId .. ':t']
      assert.truthy(svc)
      kernel:terminateSubcluster(r.subclusterId):await()
      assert.is_nil(rpc.connect(path))
      assert.is_nil(kernel.services['io:' .. r.subclusterId .. ':t'])
      assert.is_nil(kernel.K:kvGet('kernelService.io:' .. r.subclusterId .. ':t'))
    end)

    it('stays as launched across an upgrade, which cannot change it', function()
      local io = { u = { type = 'socket', path = dir .. '/u.sock' } }
      local r = launch(io)
      local e = support.rejection(kernel:upgradeSubcluster(r.subclusterId, cluster({
        u = { type = 'socket', path = dir .. '/other.sock' } })))
      assert.equal(('upgradeSubcluster(%s): ClusterConfig.io: an upgrade cannot change the IO channels '
        .. '(bootstrap, which receives them, does not run again)'):format(r.subclusterId), e.message)
      kernel:upgradeSubcluster(r.subclusterId, cluster(io)):await()
      local fd = connect(dir .. '/u.sock')
      rpc.send(fd, 'upgraded\n')
      assert.same({ ok = true, value = 'upgraded' }, call(r.rootKref, 'read', 'u'))
    end)

    it('is reopened after a restart, under the same kref', function()
      local db = testing.tempDir()
      local path = dir .. '/r.sock'
      kernel:stop()
      kernel = testing.makeKernel({ database = db })
      local r = launch({ r = { type = 'socket', path = path } })
      local name = 'io:' .. r.subclusterId .. ':r'
      local kref = kernel.services[name].info.kref
      kernel = testing.restart(kernel)
      assert.equal(kref, kernel.services[name].info.kref)
      local fd = connect(path)
      rpc.send(fd, 'after restart\n')
      assert.same({ ok = true, value = 'after restart' }, call(r.rootKref, 'read', 'r'))
      assert.same({ ok = true }, call(r.rootKref, 'write', 'r', 'still here'))
      assert.equal('still here\n', recvAll(fd, 11))
      -- A channel that cannot be reopened says so to the vat that uses it.
      hangUp(fd)
      kernel:stop()
      os.execute('rm -rf ' .. q(dir))
      kernel = testing.makeKernel({ database = db })
      local got = call(r.rootKref, 'read', 'r')
      assert.is_false(got.ok)
      assert.matches('^%[KERNEL:DELIVERY_FAILED%] IO channel "r" of subcluster ' .. r.subclusterId
        .. ' could not be reopened: ', got.error)
      local logged = false
      for _, m in ipairs(testing.messages(kernel, 'error')) do
        if m:match('could not be reopened') then logged = true end
      end
      assert.is_true(logged)
    end)
  end)

  describe('file', function()
    it('reads lines to the end, then nil', function()
      spit(dir .. '/in.txt', 'one\ntwo\nthree')
      local r = launch({ f = { type = 'file', path = dir .. '/in.txt', direction = 'in' } })
      for _, want in ipairs({ 'one', 'two', 'three' }) do
        assert.same({ ok = true, value = want }, call(r.rootKref, 'read', 'f'))
      end
      assert.same({ ok = true }, call(r.rootKref, 'read', 'f'))
      assert.same({ ok = true }, call(r.rootKref, 'read', 'f'))
      assert.same({ ok = false, error = DF .. 'IO channel "f" is read-only' }, call(r.rootKref, 'write', 'f', 'x'))
    end)

    it('appends lines, in order', function()
      local path = dir .. '/out.txt'
      spit(path, 'kept\n')
      local r = launch({ f = { type = 'file', path = path, direction = 'out' } })
      local ps = {}
      for i = 1, 20 do ps[i] = kernel:queueMessage(r.rootKref, 'write', { 'f', 'line ' .. i }) end
      for i = 1, 20 do assert.same({ ok = true }, ps[i]:await()) end
      local want = { 'kept' }
      for i = 1, 20 do want[#want + 1] = 'line ' .. i end
      assert.equal(table.concat(want, '\n') .. '\n', slurp(path))
      assert.same({ ok = false, error = DF .. 'IO channel "f" is write-only' }, call(r.rootKref, 'read', 'f'))
    end)

    it('fails the launch naming the channel when its path is bad', function()
      local e = support.rejection(kernel:launchSubcluster(cluster({
        f = { type = 'file', path = dir .. '/missing.txt', direction = 'in' } })))
      assert.equal(('ClusterConfig.io.f.path: cannot open "%s": no such file or directory'):format(
        dir .. '/missing.txt'), e.message)
      e = support.rejection(kernel:launchSubcluster(cluster({ f = { type = 'file', path = dir } })))
      assert.matches('^ClusterConfig%.io%.f%.path: cannot open ".*": illegal operation on a directory$', e.message)
    end)
  end)

  describe('listen and network', function()
    it('serves a TCP client on the loopback', function()
      local r = launch({ tcp = { type = 'listen', hostport = ':0' } })
      local address = call(r.rootKref, 'address', 'tcp')
      assert.matches('^127%.0%.0%.1:%d+$', address)
      assert.is_not.equal('127.0.0.1:0', address)
      local fd = tcp(address)
      rpc.send(fd, 'ping\npong\n')
      assert.equal(2, call(r.rootKref, 'echoN', 'tcp', 2))
      assert.equal('PING\nPONG\n', recvAll(fd, 10))
      hangUp(fd)
      assert.equal(0, call(r.rootKref, 'echo', 'tcp'))
    end)

    it('connects a TCP client to a server, both ways', function()
      local server = launch({ srv = { type = 'listen', hostport = '127.0.0.1:0' } })
      local address = call(server.rootKref, 'address', 'srv')
      local client = launch({ net = { type = 'network', hostport = address } })
      -- Written before the connection is made: it waits for it.
      assert.same({ ok = true }, call(client.rootKref, 'write', 'net', 'hi server'))
      assert.same({ ok = true, value = 'hi server' }, call(server.rootKref, 'read', 'srv'))
      assert.same({ ok = true }, call(server.rootKref, 'write', 'srv', 'hi client'))
      assert.same({ ok = true, value = 'hi client' }, call(client.rootKref, 'read', 'net'))
      kernel:terminateSubcluster(server.subclusterId):await()
      assert.same({ ok = true }, call(client.rootKref, 'read', 'net'))
    end)

    it('rejects reads and writes of a connection that was refused', function()
      local gone = launch({ srv = { type = 'listen', hostport = ':0' } })
      local address = call(gone.rootKref, 'address', 'srv')
      kernel:terminateSubcluster(gone.subclusterId):await()
      local r = launch({ net = { type = 'network', hostport = address } })
      local got = call(r.rootKref, 'read', 'net')
      assert.same({ ok = false,
        error = DF .. ('IO channel "net" cannot connect to %s: connection refused'):format(address) }, got)
      assert.is_false(call(r.rootKref, 'write', 'net', 'x').ok)
    end)

    it('fails the launch on a bad hostport', function()
      local e = support.rejection(kernel:launchSubcluster(cluster({ t = { type = 'listen', hostport = 'nowhere' } })))
      assert.equal('ClusterConfig.io.t.hostport: must be "host:port" with a port from 0 to 65535, got "nowhere"',
        e.message)
      e = support.rejection(kernel:launchSubcluster(cluster({ t = { type = 'network', hostport = 'example:80' } })))
      assert.equal('ClusterConfig.io.t.hostport: cannot connect to "example:80": not a numeric IP address', e.message)
    end)
  end)

  describe('config', function()
    it('names the channel of an unknown type or a missing path', function()
      local e = support.rejection(kernel:launchSubcluster(cluster({ x = { type = 'pigeon' } })))
      assert.equal('ClusterConfig.io.x.type: must be one of "socket", "file", "console", "listen", "network", '
        .. 'got "pigeon"', e.message)
      e = support.rejection(kernel:launchSubcluster(cluster({ x = { type = 'socket' } })))
      assert.equal('ClusterConfig.io.x.path: required for type "socket"', e.message)
      e = support.rejection(kernel:launchSubcluster(cluster({ x = { type = 'network' } })))
      assert.equal('ClusterConfig.io.x.hostport: required for type "network"', e.message)
    end)
  end)

  describe('console', function()
    it("reads the host's stdin and writes its stdout, from a pipe and from a file", function()
      local script = dir .. '/host.lua'
      spit(script, ([[
local ocap = require 'ocap'
local kernel = ocap.Kernel.make {}
local r = kernel:launchSubcluster({ bootstrap = 'user', io = { console = { type = 'console' } },
  vats = { user = { sourceSpec = %q } } }):await()
local n = kernel:queueMessage(r.rootKref, 'echo', { 'console' }):await()
io.stderr:write('echoed ', n, '\n')
kernel:stop()
]]):format(SRC .. '/' .. USER))
      local out, err = dir .. '/out', dir .. '/err'
      local ok = os.execute(("printf 'abc\\ndef\\n' | %s run %s >%s 2>%s"):format(q(BIN), q(script), q(out), q(err)))
      assert.is_true(ok, slurp(err))
      assert.equal('ABC\nDEF\n', slurp(out))
      assert.equal('echoed 2\n', slurp(err))
      spit(dir .. '/in', 'from a file\n')
      ok = os.execute(('%s run %s <%s >%s 2>%s'):format(q(BIN), q(script), q(dir .. '/in'), q(out), q(err)))
      assert.is_true(ok, slurp(err))
      assert.equal('FROM A FILE\n', slurp(out))
    end)
  end)
end)
