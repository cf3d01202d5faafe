error('top-level failure')
