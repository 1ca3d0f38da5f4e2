"""``/api/governance/`` (each module has its ``urlpatterns``)."""
