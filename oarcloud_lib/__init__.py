"""oarcloud library: everything the CLIs, the hooks and the lab call."""
