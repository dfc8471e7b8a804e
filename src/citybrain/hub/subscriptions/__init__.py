"""Subscriptions: a filter over entity changes + a webhook, delivered at least once through an outbox."""
