"""HTTP routes, thin: they check permissions and hand over to service modules."""
