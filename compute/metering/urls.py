from django.urls import include, path
from rest_framework.routers import SimpleRouter

from compute.metering import api

router = SimpleRouter()
router.register("hourly", api.UsageHourlyViewSet, basename="usage-hourly")
router.register("", api.UsageRecordViewSet, basename="usage")

urlpatterns = [path("", include(router.urls))]
