"""Plant side of plantfed: the Celery worker that trains next to a plant's data."""
