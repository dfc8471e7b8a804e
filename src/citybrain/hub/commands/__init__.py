"""Feedback execution: connected systems (with their health) and the commands the hub sends them."""
