"""anna-run: run the jobs of an askanna.yml project in a container sandbox."""

__version__ = "0.1.0"
