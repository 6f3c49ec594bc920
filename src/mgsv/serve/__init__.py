"""`mgsv serve`: an HTTP API and a web page for grounding videos in a music library, and the A/B study mode.

Entry point: `mgsv.serve.app.create_app(settings)`; the CLI (`mgsv/cli/serve.py`) runs it with Uvicorn.
"""
