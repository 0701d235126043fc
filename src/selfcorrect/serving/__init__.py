"""`selfcorrect serve`: a selfcorrect backend behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

`wire` translates the OpenAI format, `batcher` turns concurrent requests into one backend call, `app` holds the
routes and the server. FastAPI and uvicorn are imported only when a server is built.
"""
