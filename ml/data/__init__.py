"""MovieLens data: download, read and validate (the layout of ml-25m)."""
