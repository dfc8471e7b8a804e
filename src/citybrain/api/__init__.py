"""The HTTP edge: app assembly, problem details, dependencies. No business logic lives here."""
