"""The pages the tests and the benchmark drive.

/            the latest 10 notes and how many there are (two queries; no form,
             so for a fixed set of rows the page is the same bytes every time:
             the benchmark's django-pg scenario)
/notes/new/  a form (GET) that writes one note (POST with the CSRF token),
             then redirects to it
/notes/N/    one note
/wsgi/       what the server says in the environ: wsgi.multithread tells
             whether it runs requests of one process on several threads
"""
import json
import os
import threading

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .forms import NoteForm
from .models import Note


def index(request):
    notes = list(Note.objects.only("id", "title")[:10])
    return render(request, "notes/index.html", {"notes": notes, "total": Note.objects.count()})


def new_note(request):
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            note = form.save()
            return redirect("note", pk=note.pk)
    else:
        form = NoteForm()
    return render(request, "notes/new.html", {"form": form})


def note(request, pk):
    return render(request, "notes/note.html", {"note": get_object_or_404(Note, pk=pk)})


def wsgi_info(request):
    info = {
        "multithread": request.META.get("wsgi.multithread"),
        "multiprocess": request.META.get("wsgi.multiprocess"),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
    }
    return HttpResponse(json.dumps(info), content_type="application/json")
