"""接诉即办 (the citizen hotline): complaint intake, classification, location, de-duplication, personal-data
masking and the Open311 GeoReport v2 API."""
