-- The cluster the embedding example launches (ocap_host_launch_file): a
-- chunk that returns a cluster config; relative sourceSpec resolve
-- against the host's base_dir.
return {
  bootstrap = 'adder',
  services = { 'calc' },
  vats = { adder = { sourceSpec = 'adder-vat.lua' } },
}
