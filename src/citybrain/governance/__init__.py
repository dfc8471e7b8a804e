"""Governance and security: the tamper-evident audit log (more — authentication, org-scoped access,
catalog, quality, sharing — lands here)."""
