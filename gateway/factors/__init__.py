"""Second factors: how each one makes and checks its codes. No I/O; stores are passed in."""
