"""Robustness-check jobs: the admin endpoint's queue, worker process and persistence.

``store`` keeps jobs in SQLite (the queue, progress, stop requests, finished reports);
``checks`` turns a request into a validated ``robustness.request.SuiteRequest``;
``spec`` holds what a job runs and its process's configuration (plain JSON values);
``samples`` validates uploaded sample sets; ``manager`` runs one job at a time in a
``worker`` process off the request path; ``form`` reads the multipart upload.
"""
