-- A vat that never finishes loading: its top level loops forever.
while true do end
