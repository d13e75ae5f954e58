"""Built-in tasks: procedurally generated problems with demonstrations, deterministic from a seed."""
