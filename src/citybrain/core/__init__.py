"""The kernel: context, events, bus, clock, registry and errors. Imports no web or database framework."""
