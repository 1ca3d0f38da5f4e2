from django.urls import include, path
from rest_framework.routers import SimpleRouter

from compute.api import agent, views

router = SimpleRouter()
router.register("nodes", views.NodeViewSet, basename="node")
router.register("deployments", views.DeploymentViewSet, basename="deployment")

urlpatterns = [
    path("agent/register", agent.register, name="agent-register"),
    path("agent/heartbeat", agent.heartbeat, name="agent-heartbeat"),
    path("engines/", views.engines, name="engines"),
    path("", include(router.urls)),
]
