"""Shared core of plantfed: settings, the Celery app, Redis key names, blobs and messages.

Both roles import this package: the plant worker (``worker``) and the coordinator
at headquarters (``coordinator``). It stays small on purpose.
"""

__version__ = "0.1.0"
