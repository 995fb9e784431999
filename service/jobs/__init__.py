"""Robustness-check jobs: the admin endpoint's queue, worker processes and persistence.

``store`` is the job store's interface (the queue, leases, progress, stop requests,
finished reports) over two engines, ``store_sqlite`` (embedded, the default) and
``store_postgres`` (shared by replicas and workers), each with its ``migrations``;
``checks`` turns a request into a validated ``robustness.request.SuiteRequest``;
``spec`` holds what a job runs and its process's configuration (plain JSON values);
``samples`` validates uploaded sample sets; ``manager`` runs one job at a time in a
``worker`` process off the request path and keeps the shared queue (expired leases,
``gauges``); ``worker`` is also the standalone ``qusec-worker``; ``lease`` renews a
running job's lease; ``split`` splits a check into parts and assembles their report;
``views`` shapes a job for the API; ``form`` reads the multipart upload.
"""
