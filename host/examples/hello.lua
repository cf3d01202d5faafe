-- A host script: launch a two-vat subcluster and print what the vats say.
local ocap = require 'ocap'

local kernel = ocap.Kernel.make {
  database = false, -- in memory; give a directory to persist the kernel
  logger = function(entry)
    if entry.level ~= 'debug' then
      print(('[%s%s] %s'):format(entry.vatId or 'kernel',
        entry.tags and #entry.tags > 0 and (' ' .. table.concat(entry.tags, ',')) or '', entry.message))
    end
  end,
}

local here = (arg and arg[0] or 'host/examples/hello.lua'):match('^(.*)/host/examples/') or '.'
local result = kernel:launchSubcluster({
  bootstrap = 'alice',
  vats = {
    alice = { sourceSpec = here .. '/vats/examples/alice.lua', parameters = { name = 'Alice' } },
    bob = { sourceSpec = here .. '/vats/examples/bob.lua', parameters = { greeting = 'Hi' } },
  },
}):await()

print('bootstrap returned: ' .. tostring(result.bootstrapResult))
print('alice echoes: ' .. tostring(kernel:queueMessage(result.rootKref, 'ping', { 42 }):await()))
kernel:stop()
