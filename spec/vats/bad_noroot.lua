-- Returns a table without buildRootObject.
return { somethingElse = function() end }
