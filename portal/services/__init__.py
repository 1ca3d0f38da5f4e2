"""Business operations of the hub core, named as verbs."""
