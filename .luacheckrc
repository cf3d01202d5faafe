std = 'lua54'
max_line_length = 120
exclude_files = { 'build', 'build-*', '.ocap', '.luarocks', 'lua_modules' }
files['spec'] = { std = '+busted' }
files['bench'] = { std = '+busted' }
