-- The caplets demo (a host script: `make demo` runs it after bundling the
-- two caplets): Omnium installs the echo provider, then the consumer,
-- whose requested "echo" service it wires to the provider's root.
local ocap = require 'ocap'
local omnium = require 'ocap.omnium'

local kernel = ocap.Kernel.make { database = false, systemSubclusters = { omnium.subcluster() },
  logger = function() end }
local o = omnium.attach(kernel)
for _, dir in ipairs({ 'vats/caplets/echo', 'vats/caplets/consumer' }) do
  local r = o.caplet.install(o.caplet.load(dir)):await()
  print(('installed %s as %s'):format(r.capletId, r.subclusterId))
end
print(o.caplet.callCapletMethod('com.example.consumer', 'useService', { 'hello caplets' }):await())
kernel:stop()
