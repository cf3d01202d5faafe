std = 'lua54'
max_line_length = 120
-- spec/vats/bad_syntax.lua does not parse on purpose: it tests launch errors.
exclude_files = { 'build', 'build-*', '.ocap', '.luarocks', 'lua_modules', 'spec/vats/bad_syntax.lua' }
files['spec'] = { std = '+busted' }
files['bench'] = { std = '+busted' }
