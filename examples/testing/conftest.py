# Celery's fixtures (celery_app, celery_worker, ...) come from its own pytest plugin; syncmq's
# fixtures (syncmq_*) are there as soon as syncmq is installed (pytest11 entry point).
pytest_plugins = ("celery.contrib.pytest",)
