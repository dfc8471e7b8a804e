"""The hub (中枢): one city data model, one API, subscriptions and feedback execution."""
