"""The API: routes (one module per area, in ``routes``), the dependencies they inject
(``deps``), the documented schemas (``schemas``), the handlers that turn exceptions into
responses (``error_handlers``), admission of inference requests (``admission``), the
Open Inference Protocol codec (``open_inference``), the admin token (``auth``) and the
job submission's upload and public shape (``job_upload``, ``job_responses``), and the
routes answered as express requests straight from the connection layer (``express``). The web
console's static files sit beside the router that serves them (``routes/console_files``).
"""
