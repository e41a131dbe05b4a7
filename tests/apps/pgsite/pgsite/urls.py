from django.contrib import admin
from django.urls import path

from notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("notes/new/", views.new_note, name="new_note"),
    path("notes/<int:pk>/", views.note, name="note"),
    path("wsgi/", views.wsgi_info),
    path("admin/", admin.site.urls),
]
