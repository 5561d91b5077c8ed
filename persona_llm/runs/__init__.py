"""The run store: `RunDir` (one run directory, every file name, typed load/save) and `Workspace`
(versioned runs, atomic publish, rollback, gc, one writer at a time)."""
