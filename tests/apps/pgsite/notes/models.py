from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100, unique=True)
    body = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return self.title
