"""Precompute engines: where a process's missing parts run (:mod:`.local` here, :mod:`.ray` on Ray actors)."""
