"""The pen's firmware as software: protocol core, physics, injected clock, faults, bench."""
