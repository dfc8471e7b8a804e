"""接诉即办: citizen requests in, understood (classified, located, de-duplicated, masked), routed to cases."""
