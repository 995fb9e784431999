"""The HTTP edge: what arrives before a request is anything more than bytes.

``connection`` guards each HTTP/1.1 connection (head size and count, head timeout,
open connections, the cheapest overload answer), and answers a request that arrived whole
through the app's ``express`` handler without an ASGI cycle; ``body`` reads bodies within their
size, pace and shared budget; ``multipart`` finds the ``file`` part of a form;
``content_coding`` inflates gzip or deflate bodies within the limit; ``middleware``
gives each request its id, access log line and metrics; ``handoff`` shares a
supervisor's connections out over its workers, to the one holding the fewest.
"""
