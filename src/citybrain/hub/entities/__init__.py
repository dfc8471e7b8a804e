"""City entities in NGSI-LD normalized form, their types, queries and attribute history."""
