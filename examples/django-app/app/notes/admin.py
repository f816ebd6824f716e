from django.contrib import admin  # noqa: F401 - as startapp writes it

# Register your models here.
