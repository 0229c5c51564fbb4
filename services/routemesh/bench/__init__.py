"""`routemesh bench`: the same streaming workload sent directly to the sim and through routemesh, compared."""
