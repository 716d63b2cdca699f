"""The job queue (procrastinate on the service's PostgreSQL) and its worker processes.

``queue.make_app`` builds the procrastinate App the API defers jobs with and the
workers run; ``tasks`` holds what the jobs do; ``run.run_worker`` is
``observatory worker``: it takes jobs, recovers the jobs of dead workers and defers the
schedules of ``worker.schedules``.
"""
