"""The QuSec inference service: sanitize -> quantize -> batch -> infer, over HTTP.

Import ``service.app.create_app`` to build the ASGI app; run ``python -m service``
to serve it. Importing this package does no work and never imports ``training``.
"""
