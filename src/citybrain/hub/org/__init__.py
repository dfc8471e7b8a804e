"""The org tree: district → town/street → village/community, plus the district's functional departments."""
