"""Robustness-check jobs: the admin endpoint's queue, job processes and persistence.

``store`` is the job store (one interface, a SQLite and a PostgreSQL engine, each with
its migrations); ``planning`` turns a request into a validated job; ``cost`` estimates
it; ``spec`` is what a job runs; ``samples`` validates uploaded sample sets;
``manager`` keeps the queue and runs jobs in ``worker`` processes (also the standalone
``qusec-worker``), each watched by ``supervision``; ``scheduling`` is the one loop that
claims them; ``lease`` renews a running job's lease and gives up a run whose store failed;
``split`` splits a check into parts and assembles their report; ``gauges`` publishes the
queue's size and each model's qualifying check; ``published`` finds the report published
with each served model's weights, which shows until then; ``targets`` describes what a check
may target.
"""
