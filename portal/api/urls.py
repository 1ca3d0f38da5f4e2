from django.urls import include, path
from rest_framework.routers import SimpleRouter

from portal.api import views

router = SimpleRouter()
router.register("keys", views.APIKeyViewSet, basename="apikey")
router.register("orgs", views.OrganizationViewSet, basename="org")
router.register("models", views.ModelRepoViewSet, basename="model")

urlpatterns = [
    path("auth/signup/", views.sign_up, name="signup"),
    path("auth/login/", views.log_in, name="login"),
    path("auth/logout/", views.log_out, name="logout"),
    path("auth/me/", views.me, name="me"),
    path("compute/", include("compute.api.urls")),
    path("usage/", include("compute.metering.urls")),
    path("datasets/", include("datasets.api.urls")),
    path("", include(router.urls)),
]
