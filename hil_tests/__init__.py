"""Hardware-in-the-loop conformance suite: one suite for the simulator and for real pens."""
